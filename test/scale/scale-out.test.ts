// Scale-out through real processes: Debian's redis-server (AOF on), one `kiln serve --queue redis:// --worker
// false` API node and two `kiln worker` processes on the tiny SD1 model, sharing one result folder (--storage).
// Every job completes; a worker killed with SIGKILL mid-job loses nothing (its job completes on the other
// worker, and no job is recorded as completed twice); Redis restarted mid-run loses nothing.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import sharp from 'sharp';
import { tempDir } from '../queue/helpers.ts';
import { startRedis, type TestRedis } from '../queue/redis-server.ts';
import { json, spawnServer, waitUntil, type ServerProcess } from '../server/process.ts';

const BIN = fileURLToPath(new URL('../../bin/kiln.js', import.meta.url));
const TINY = fileURLToPath(new URL('../fixtures/tiny-sd1', import.meta.url));

interface WorkerProcess {
  child: ChildProcess;
  output: () => string;
  exited: Promise<number | null>;
}

let redis: TestRedis;
let api: ServerProcess;
const workers: WorkerProcess[] = [];
const t = tempDir('kiln-scale-');
const shared = join(t.dir, 'results');

function spawnWorker(n: number): Promise<WorkerProcess> {
  const dataDir = join(t.dir, `worker-${n}-${workers.length}`);
  mkdirSync(dataDir, { recursive: true });
  const child = spawn(
    process.execPath,
    [
      BIN,
      'worker',
      '--queue',
      redis.url,
      '--model',
      TINY,
      '--data-dir',
      dataDir,
      '--storage',
      shared,
      '--worker-lock',
      '2',
      '--threads',
      '1',
      '--log-level',
      'info',
    ],
    { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, KILN_TEST_GRAPH_CACHE: '' } },
  );
  let out = '';
  child.stdout!.on('data', (d) => (out += d));
  child.stderr!.on('data', (d) => (out += d));
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  const w = { child, output: () => out, exited };
  workers.push(w);
  return waitUntil(async () => (out.includes('taking jobs from') ? w : undefined), 60_000, `worker ${n} to start:\n${out}`);
}

/** Job ids a worker's log says it completed (the queue logs 'job succeeded' only when its finish was recorded). */
function completions(w: WorkerProcess): string[] {
  return w
    .output()
    .split('\n')
    .filter((l) => l.includes('"job succeeded"'))
    .map((l) => JSON.parse(l).jobId as string);
}

before(async () => {
  redis = await startRedis({ aof: true });
  api = await spawnServer(['--queue', redis.url, '--worker', 'false', '--model', TINY, '--data-dir', join(t.dir, 'api'), '--storage', shared]);
  await spawnWorker(1);
  await spawnWorker(2);
});

after(async () => {
  for (const w of workers) if (w.child.exitCode === null) w.child.kill('SIGKILL');
  api?.child.kill('SIGTERM');
  await api?.exited;
  await Promise.all(workers.map((w) => w.exited));
  await redis?.close();
  t.remove();
});

const job = (seed: number, steps = 2) => ({ prompt: 'a lighthouse', width: 64, height: 64, steps, seed, sampler: 'Euler' });

async function submit(body: object): Promise<string> {
  const r = await json(`${api.url}/v1/jobs`, { method: 'POST', body: JSON.stringify(body) });
  assert.equal(r.status, 202, JSON.stringify(r.body));
  return r.body.id;
}

async function finished(ids: string[], timeoutMs: number) {
  let last: { state: string; attempts: number }[] = [];
  try {
    return await waitUntil(
      async () => {
        const jobs = await Promise.all(ids.map(async (id) => (await json(`${api.url}/v1/jobs/${id}`)).body));
        last = jobs;
        return jobs.every((j) => ['succeeded', 'failed', 'cancelled'].includes(j.state)) ? jobs : undefined;
      },
      timeoutMs,
      'jobs to finish',
    );
  } catch (e) {
    const states = last.map((j) => `${j.state}/${j.attempts}`).join(' ');
    throw new Error(`${(e as Error).message} (states: ${states}); workers:\n${workers.map((w) => w.output().slice(-1200)).join('\n---\n')}`);
  }
}

test('one API node, two workers: 30 jobs complete, both workers work, results served by the API node', async () => {
  const ids: string[] = [];
  for (let i = 0; i < 30; i++) ids.push(await submit(job(100 + i)));
  const jobs = await finished(ids, 180_000);
  assert.deepEqual(
    jobs.filter((j) => j.state !== 'succeeded').map((j) => [j.id, j.state, j.error]),
    [],
  );
  const done = workers.map(completions);
  assert.ok(
    done.every((d) => d.length > 0),
    `both workers ran jobs: ${done.map((d) => d.length)}`,
  );
  assert.equal(new Set(done.flat()).size, done.flat().length, 'no job completed twice');
  // The API node lists both workers with their device and loaded model, and /health counts them.
  const listed = (await json(`${api.url}/v1/workers`)).body.workers;
  assert.equal(listed.length, 2, JSON.stringify(listed));
  for (const w of listed) {
    assert.equal(w.device, 'cpu');
    assert.deepEqual(w.loaded_models, ['tiny-sd1']);
    assert.ok(['idle', 'running'].includes(w.state));
    assert.ok(Date.now() - Date.parse(w.last_heartbeat) < 10_000);
  }
  const health = (await json(`${api.url}/health`)).body;
  assert.equal(health.workers.idle + health.workers.running, 2);
  assert.equal((await json(`${api.url}/ready`)).status, 200);
  // The API node serves an image a worker stored.
  const img = await fetch(`${api.url}${jobs[0].images[0].url.replace(/^https?:\/\/[^/]+/, '')}`);
  assert.equal(img.status, 200);
  assert.equal((await sharp(Buffer.from(await img.arrayBuffer())).metadata()).width, 64);
});

test('a worker killed mid-job: its job completes on the other worker, nothing lost, nothing completed twice', async () => {
  const before = workers.map((w) => completions(w).length);
  const ids: string[] = [];
  for (let i = 0; i < 4; i++) ids.push(await submit(job(500 + i, 16)));
  // Wait until both workers are running a job, then kill one without warning.
  await waitUntil(async () => ((await json(`${api.url}/v1/jobs?state=running`)).body.jobs?.length >= 2 ? true : undefined), 60_000, 'two running jobs');
  const victim = workers[0]!;
  const killedAt = Date.now();
  victim.child.kill('SIGKILL');
  await victim.exited;
  const jobs = await finished(ids, 240_000);
  assert.deepEqual(
    jobs.filter((j) => j.state !== 'succeeded').map((j) => [j.id, j.state, j.error]),
    [],
  );
  const rerun = jobs.filter((j) => j.attempts === 2);
  assert.ok(rerun.length >= 1, `the killed worker's job ran again (attempts: ${jobs.map((j) => j.attempts)})`);
  const all = workers.flatMap(completions);
  assert.equal(new Set(all).size, all.length, 'no job completed twice');
  for (const id of ids) assert.equal(all.filter((x) => x === id).length, 1, `${id} completed exactly once`);
  // The killed worker stopped heart-beating: it is shown as gone, the other one as alive.
  const states = await waitUntil(
    async () => {
      const ws = (await json(`${api.url}/v1/workers`)).body.workers as { state: string; pid: number }[];
      return ws.some((w) => w.pid === victim.child.pid && w.state === 'gone') ? ws : undefined;
    },
    20_000,
    'the killed worker to show as gone',
  );
  assert.ok(states.some((w) => w.pid !== victim.child.pid && w.state !== 'gone'));
  process.stderr.write(`# recovery: all jobs done ${Date.now() - killedAt} ms after the kill (lock 2 s); completions before: ${before}\n`);
});

test('Redis restarted mid-run (AOF): queued and running jobs are not lost', async () => {
  await spawnWorker(3); // replaces the killed one
  const ids: string[] = [];
  for (let i = 0; i < 5; i++) ids.push(await submit(job(900 + i, 16)));
  try {
    await waitUntil(async () => ((await json(`${api.url}/v1/jobs?state=running`)).body.jobs?.length >= 1 ? true : undefined), 60_000, 'a running job');
  } catch (e) {
    const states = await Promise.all(ids.map(async (id) => (await json(`${api.url}/v1/jobs/${id}`)).body.state));
    throw new Error(`${(e as Error).message}; states ${states}; workers:\n${workers.map((w) => w.output().slice(-1500)).join('\n---\n')}`);
  }
  await redis.stop();
  // While Redis is away the API node answers 503 with the reason (not a hang, a 500 or a crash), and says so in
  // /health and /ready.
  const during = await json(`${api.url}/v1/jobs/${ids[0]}`);
  assert.equal(during.status, 503, JSON.stringify(during.body));
  assert.match(during.body.error.message, /job queue \(Redis at .*\) is unavailable/);
  assert.equal(during.headers.get('retry-after'), '5');
  assert.equal((await json(`${api.url}/health`)).body.status, 'degraded');
  assert.equal((await json(`${api.url}/ready`)).status, 503);
  await redis.restart(); // same data folder: the AOF brings every record and queue entry back
  const jobs = await finished(ids, 240_000);
  assert.deepEqual(
    jobs.filter((j) => j.state !== 'succeeded').map((j) => [j.id, j.state, j.error]),
    [],
  );
  const all = workers.flatMap(completions);
  for (const id of ids) assert.equal(all.filter((x) => x === id).length, 1, `${id} completed exactly once`);
});
