// What the job database's safety costs, printed (not asserted): the start-up quick_check (and the fuller
// integrity_check, for comparison) on a database of N finished jobs, and submits per second with
// synchronous = FULL (what SqliteJobBackend uses) versus NORMAL.
// Usage: node --import tsx bench/storage-bench.ts [jobs=10000] [inserts=300] [dir=os tmpdir]
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { SqliteJobBackend } from '../src/queue/sqlite-backend.ts';
import { specFromNative } from '../src/server/native/request.ts';
import { testConfig } from '../src/server/config.ts';

const jobs = Number(process.argv[2] ?? 10_000);
const inserts = Number(process.argv[3] ?? 300);
const root = mkdtempSync(join(process.argv[4] ?? tmpdir(), 'kiln-storage-bench-'));
const spec = specFromNative(
  { prompt: 'a lighthouse on a cliff at dusk, oil painting, dramatic light', width: 512, height: 512, steps: 20 },
  testConfig(root).limits,
);
const ms = (t0: bigint) => Number(process.hrtime.bigint() - t0) / 1e6;

try {
  const file = join(root, 'jobs.sqlite');
  new SqliteJobBackend(file).close();
  const db = new Database(file);
  const insert = db.prepare(
    "INSERT INTO jobs (id, state, owner, spec, created_at, finished_at, result, extra) VALUES (?, 'succeeded', 'anonymous', ?, ?, ?, ?, '{}')",
  );
  const result = JSON.stringify({
    images: [{ name: 'x-0.png', format: 'png', width: 512, height: 512, seed: 1, subseed: 1, prompt: 'p', negativePrompt: '', infotext: 'i'.repeat(300) }],
    timings: {},
  });
  db.transaction(() => {
    for (let i = 0; i < jobs; i++) insert.run(`job-${i}`, JSON.stringify(spec), Date.now(), Date.now(), result);
  })();
  db.pragma('wal_checkpoint(TRUNCATE)');
  db.close();
  const size = statSync(file).size;

  for (const check of ['quick_check', 'integrity_check']) {
    const times: number[] = [];
    for (let i = 0; i < 3; i++) {
      const c = new Database(file, { readonly: true });
      const t0 = process.hrtime.bigint();
      c.pragma(check);
      times.push(ms(t0));
      c.close();
    }
    console.log(
      `${check} on ${jobs} jobs (${(size / 1e6).toFixed(1)} MB): ${Math.min(...times).toFixed(1)} ms (best of 3), ${Math.max(...times).toFixed(1)} ms worst`,
    );
  }
  const t0 = process.hrtime.bigint();
  await new SqliteJobBackend(file).close();
  console.log(`SqliteJobBackend open (quick_check, schema, unreadable-row sweep): ${ms(t0).toFixed(1)} ms`);

  for (const mode of ['FULL', 'NORMAL']) {
    const f = join(root, `sync-${mode}.sqlite`);
    new SqliteJobBackend(f).close();
    const d = new Database(f);
    d.pragma('journal_mode = WAL');
    d.pragma(`synchronous = ${mode}`);
    const ins = d.prepare("INSERT INTO jobs (id, state, owner, spec, created_at) VALUES (?, 'queued', 'anonymous', ?, ?)");
    const t1 = process.hrtime.bigint();
    for (let i = 0; i < inserts; i++) ins.run(`s-${i}`, JSON.stringify(spec), Date.now());
    const took = ms(t1);
    console.log(
      `synchronous=${mode}: ${inserts} submits (one commit each) in ${took.toFixed(0)} ms = ${((inserts / took) * 1000).toFixed(0)}/s, ${(took / inserts).toFixed(2)} ms each`,
    );
    d.close();
  }
} finally {
  rmSync(root, { recursive: true, force: true });
}
