// Graceful `kiln worker` shutdown through real processes (redis-server, one API node, workers on tiny SD1): on
// SIGTERM a worker takes no new job and either finishes the running one within --shutdown-grace, or stops it and
// hands it back to the queue (its attempt refunded) for another worker; it exits 0 either way. Also the worker's
// container health check from compose.scale.yaml, run as written against a live worker and a stopped one.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { tempDir } from '../queue/helpers.ts';
import { startRedis, type TestRedis } from '../queue/redis-server.ts';
import { json, spawnServer, waitUntil, type ServerProcess } from '../server/process.ts';
import { completions, spawnWorker, TINY_SD1, type WorkerProcess } from './worker-process.ts';

let redis: TestRedis;
let api: ServerProcess;
const started: WorkerProcess[] = [];
const t = tempDir('kiln-shutdown-');
const shared = join(t.dir, 'results');

before(async () => {
  redis = await startRedis();
  api = await spawnServer(['--queue', redis.url, '--worker', 'false', '--model', TINY_SD1, '--data-dir', join(t.dir, 'api'), '--storage', shared]);
});

after(async () => {
  for (const w of started) if (w.child.exitCode === null) w.child.kill('SIGKILL');
  api?.child.kill('SIGTERM');
  await api?.exited;
  await Promise.all(started.map((w) => w.exited));
  await redis?.close();
  t.remove();
});

async function worker(name: string, args: string[] = []): Promise<WorkerProcess> {
  const w = await spawnWorker(redis.url, join(t.dir, name), ['--model', TINY_SD1, '--threads', '1', '--storage', shared, '--worker-lock', '5', ...args]);
  started.push(w);
  return w;
}

async function submit(steps: number, seed: number): Promise<string> {
  const r = await json(`${api.url}/v1/jobs`, { method: 'POST', body: JSON.stringify({ prompt: 'a harbour', width: 64, height: 64, steps, seed }) });
  assert.equal(r.status, 202, JSON.stringify(r.body));
  return r.body.id;
}

const jobOf = async (id: string) => (await json(`${api.url}/v1/jobs/${id}`)).body;
const sampling = (id: string) => waitUntil(async () => ((await jobOf(id)).step > 0 ? true : undefined), 120_000, `job ${id} to be sampling`);

/** compose.scale.yaml's worker health check, run as Docker would, with the worker's data dir as KILN_DATA_DIR. */
function healthCheck(dataDir: string): number | null {
  const compose = parseYaml(readFileSync('compose.scale.yaml', 'utf8'), { merge: true }) as { services: Record<string, { healthcheck: { test: string[] } }> };
  const [kind, command, ...args] = compose.services['worker-1']!.healthcheck.test;
  assert.deepEqual([kind, command], ['CMD', 'node']);
  return spawnSync(process.execPath, args, { env: { ...process.env, KILN_DATA_DIR: dataDir }, timeout: 30_000 }).status;
}

test('SIGTERM mid-job with time to spare: the worker finishes the job, then exits 0; its health check passes while it runs', async () => {
  const w = await worker('finishing', ['--shutdown-grace', '300']);
  await waitUntil(async () => (existsSync(join(w.dataDir, 'worker-alive')) ? true : undefined), 30_000, 'the alive file');
  assert.equal(healthCheck(w.dataDir), 0, 'a running worker is healthy');
  const id = await submit(24, 1);
  await sampling(id);
  w.child.kill('SIGTERM');
  assert.equal(await w.exited, 0, w.output().slice(-2000));
  const job = await jobOf(id);
  assert.deepEqual([job.state, job.attempts], ['succeeded', 1], JSON.stringify(job.error));
  assert.deepEqual(completions(w), [id]);
  assert.match(w.output(), /SIGTERM: finishing or handing back the running job/);
  assert.notEqual(healthCheck(w.dataDir), 0, 'a stopped worker is not healthy');
});

test('SIGTERM mid-job with a short grace: the job goes back to the queue (attempt refunded) and another worker completes it once', async () => {
  const quitting = await worker('quitting', ['--shutdown-grace', '0']);
  const id = await submit(60, 2);
  await sampling(id);
  const t0 = Date.now();
  quitting.child.kill('SIGTERM');
  assert.equal(await quitting.exited, 0, quitting.output().slice(-2000));
  const back = await jobOf(id);
  assert.deepEqual([back.state, back.attempts], ['queued', 0], 'handed back, its attempt refunded');
  assert.match(quitting.output(), /job re-queued for shutdown/);
  process.stderr.write(`# hand-back: worker exited ${Date.now() - t0} ms after SIGTERM (grace 0 s)\n`);
  const next = await worker('next');
  const done = await waitUntil(
    async () => {
      const j = await jobOf(id);
      return ['succeeded', 'failed', 'cancelled'].includes(j.state) ? j : undefined;
    },
    240_000,
    'the handed-back job to finish on the next worker',
  );
  assert.deepEqual([done.state, done.attempts], ['succeeded', 1], JSON.stringify(done.error));
  assert.deepEqual(completions(quitting), []);
  // The worker logs the completion just after recording it: give the line a moment to arrive.
  await waitUntil(async () => (completions(next).length > 0 ? true : undefined), 10_000, 'the completion line').catch(() => undefined);
  assert.deepEqual(completions(next), [id]);
});
