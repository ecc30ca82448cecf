// The SQLite backend facing damaged data: rows whose JSON cannot be read never crash a read or a claim (a
// queued one is failed with the reason), and a damaged file is refused at open with CorruptDatabaseError.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { CorruptDatabaseError, SqliteJobBackend } from '../../src/queue/sqlite-backend.ts';
import { LocalImageStore } from '../../src/storage/local.ts';
import { spec, tempDir } from './helpers.ts';

test('a row damaged after start is failed with the reason when claimed, and the next queued job is claimed instead', async () => {
  const t = tempDir();
  const file = join(t.dir, 'jobs.sqlite');
  const b = new SqliteJobBackend(file);
  try {
    await b.insert({ id: 'first', owner: 'o', spec: spec(), createdAt: 1 });
    await b.insert({ id: 'second', owner: 'o', spec: spec(), createdAt: 2 });
    await b.insert({ id: 'done', owner: 'o', spec: spec(), createdAt: 3 });
    await b.finish('done', ['queued'], 'succeeded', 4, { result: { images: [], timings: { totalMs: 1 } as never } });
    // Damage behind the backend's back, as a disk fault or a hand edit would.
    const raw = new Database(file);
    raw.prepare("UPDATE jobs SET spec = '{\"prompts\": [' WHERE id = 'first'").run();
    raw.prepare("UPDATE jobs SET result = 'not json', extra = '[' WHERE id = 'done'").run();
    raw.close();

    const claimed = await b.claimNext(() => 10);
    assert.equal(claimed?.id, 'second');
    const first = (await b.get('first'))!;
    assert.equal(first.state, 'failed');
    assert.equal(first.error?.code, 'storage');
    assert.match(first.error!.message, /could not be read/);
    // Listing reads every row, damaged ones included, without throwing.
    const all = await b.list({ limit: 10 });
    assert.deepEqual(all.map((j) => j.id).sort(), ['done', 'first', 'second']);
    const done = all.find((j) => j.id === 'done')!;
    assert.equal(done.result, undefined);
    assert.deepEqual(done.extra, {});
  } finally {
    await b.close();
    t.remove();
  }
});

test('opening a file that is not a database throws CorruptDatabaseError naming the file', () => {
  const t = tempDir();
  const file = join(t.dir, 'jobs.sqlite');
  writeFileSync(file, 'this is not a database, just text that happens to be long enough to have a header '.repeat(100));
  try {
    assert.throws(
      () => new SqliteJobBackend(file),
      (e: unknown) => e instanceof CorruptDatabaseError && e.file === file && e.message.includes(file),
    );
  } finally {
    t.remove();
  }
});

test('LocalImageStore writes leave only the final file (the temp file is renamed after its fsync)', async () => {
  const t = tempDir();
  const store = new LocalImageStore(join(t.dir, 'images'));
  try {
    await store.write('a.png', new Uint8Array([1, 2, 3]));
    await store.write('a.png', new Uint8Array([4, 5]));
    assert.deepEqual([...((await store.read('a.png')) ?? [])], [4, 5]);
    assert.deepEqual(readdirSync(join(t.dir, 'images')), ['a.png']);
  } finally {
    t.remove();
  }
});
