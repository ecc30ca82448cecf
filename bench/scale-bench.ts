// Scale-out figures, printed (not asserted), with real processes on the tiny SD1 model:
// - throughput of one API node with 1 worker vs 2 workers (Redis queue), as jobs/s and the ratio;
// - the queue's own cost per job: the same jobs on one `kiln serve` with the embedded SQLite queue vs an API node +
//   1 worker on Redis (each with one engine thread), as ms per job;
// - recovery after `kill -9` of a worker mid-job: ms from the kill until the job runs again on the other worker.
// Usage: node --import tsx bench/scale-bench.ts [jobs=20] [steps=4]
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startRedis } from '../test/queue/redis-server.ts';
import { json, spawnServer, waitUntil } from '../test/server/process.ts';

const BIN = fileURLToPath(new URL('../bin/kiln.js', import.meta.url));
const TINY = fileURLToPath(new URL('../test/fixtures/tiny-sd1', import.meta.url));
const jobs = Number(process.argv[2] ?? 20);
const steps = Number(process.argv[3] ?? 4);
const root = mkdtempSync(join(tmpdir(), 'kiln-scale-bench-'));
const children: ChildProcess[] = [];

async function worker(redisUrl: string, name: string): Promise<ChildProcess> {
  const dir = join(root, name);
  mkdirSync(dir, { recursive: true });
  const child = spawn(
    process.execPath,
    [BIN, 'worker', '--queue', redisUrl, '--model', TINY, '--data-dir', dir, '--storage', join(root, 'shared'), '--threads', '1', '--worker-lock', '2'],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  children.push(child);
  let out = '';
  child.stderr!.on('data', (d) => (out += d));
  await waitUntil(async () => (out.includes('taking jobs') ? true : undefined), 60_000, `${name} to start`);
  return child;
}

async function runBatch(url: string, n: number, seed0: number): Promise<number> {
  const t0 = performance.now();
  const ids: string[] = [];
  for (let i = 0; i < n; i++) {
    const r = await json(`${url}/v1/jobs`, { method: 'POST', body: JSON.stringify({ prompt: 'a lighthouse', width: 64, height: 64, steps, seed: seed0 + i }) });
    ids.push(r.body.id);
  }
  // Jobs run in submission order: wait on the last one, polling gently so the poller does not steal the CPU it measures.
  const last = ids[ids.length - 1]!;
  const end = Date.now() + 600_000;
  while ((await json(`${url}/v1/jobs/${last}`)).body.state !== 'succeeded') {
    if (Date.now() > end) throw new Error('the batch did not finish');
    await new Promise((r) => setTimeout(r, 100));
  }
  // With several workers the last job can finish before an earlier one.
  for (;;) {
    const states = await Promise.all(ids.map(async (id) => (await json(`${url}/v1/jobs/${id}`)).body.state));
    if (states.every((s) => s === 'succeeded')) break;
    if (states.some((s) => s === 'failed' || s === 'cancelled') || Date.now() > end) throw new Error(`not every job succeeded: ${states.join(' ')}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  return performance.now() - t0;
}

try {
  // Embedded queue, one process.
  const single = await spawnServer(['--model', TINY, '--data-dir', join(root, 'single'), '--threads', '1']);
  children.push(single.child);
  await runBatch(single.url, 2, 1); // warm-up
  const sqliteMs = await runBatch(single.url, jobs, 100);
  console.log(`jobs: ${jobs} x (64x64, ${steps} steps, tiny-sd1), 1 engine thread per worker, ${process.env.BENCH_NOTE ?? 'this machine'}`);
  console.log(`embedded SQLite, one process: ${(sqliteMs / jobs).toFixed(0)} ms/job`);
  single.child.kill('SIGTERM');
  await single.exited;

  const redis = await startRedis({ aof: true });
  try {
    const api = await spawnServer([
      '--queue',
      redis.url,
      '--worker',
      'false',
      '--model',
      TINY,
      '--data-dir',
      join(root, 'api'),
      '--storage',
      join(root, 'shared'),
    ]);
    children.push(api.child);
    const w1 = await worker(redis.url, 'w1');
    await runBatch(api.url, 2, 1);
    const oneMs = await runBatch(api.url, jobs, 100);
    console.log(
      `Redis, API node + 1 worker:   ${(oneMs / jobs).toFixed(0)} ms/job (queue overhead vs SQLite: ${((oneMs - sqliteMs) / jobs).toFixed(0)} ms/job)`,
    );
    const w2 = await worker(redis.url, 'w2');
    await runBatch(api.url, 2, 1);
    const twoMs = await runBatch(api.url, jobs, 100);
    console.log(`Redis, API node + 2 workers:  ${(twoMs / jobs).toFixed(0)} ms/job; throughput 2 vs 1 worker: ${(oneMs / twoMs).toFixed(2)}x`);

    // Recovery: long jobs, kill a worker holding one, time until that job runs again elsewhere.
    const ids: string[] = [];
    for (let i = 0; i < 2; i++) {
      const r = await json(`${api.url}/v1/jobs`, { method: 'POST', body: JSON.stringify({ prompt: 'x', width: 64, height: 64, steps: 60, seed: i }) });
      ids.push(r.body.id);
    }
    await waitUntil(async () => ((await json(`${api.url}/v1/jobs?state=running`)).body.jobs?.length >= 2 ? true : undefined), 60_000, 'two running');
    const killedAt = performance.now();
    w1.kill('SIGKILL');
    const rerunMs = await waitUntil(
      async () => {
        const js = await Promise.all(ids.map(async (id) => (await json(`${api.url}/v1/jobs/${id}`)).body));
        return js.some((j) => j.attempts === 2 && j.state === 'running') ? performance.now() - killedAt : undefined;
      },
      120_000,
      'the re-run',
    );
    console.log(`recovery after kill -9 (worker lock 2 s): the job ran again after ${(rerunMs / 1000).toFixed(1)} s`);
    void w2;
  } finally {
    for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
    await redis.close();
  }
} finally {
  for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
  rmSync(root, { recursive: true, force: true });
}
