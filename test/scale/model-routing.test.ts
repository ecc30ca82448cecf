// Model-aware routing with real processes: an API node and two `kiln worker`s with different models (tiny SD1 and
// tiny SDXL, each restricted with --model) on one Redis queue. Every job runs on a worker that has its model (the
// job's own or, without one, the API node's default); a job for a model no live worker runs stays queued, /health
// and GET /v1/workers say so, and it runs once a worker with that model starts.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { tempDir } from '../queue/helpers.ts';
import { startRedis, type TestRedis } from '../queue/redis-server.ts';
import { json, spawnServer, waitUntil, type ServerProcess } from '../server/process.ts';
import { completions, spawnWorker, type WorkerProcess } from './worker-process.ts';

const FIXTURES = fileURLToPath(new URL('../fixtures/', import.meta.url));

let redis: TestRedis;
let api: ServerProcess;
const workers: Record<string, WorkerProcess> = {};
const t = tempDir('kiln-routing-');
const models = join(t.dir, 'models');
const shared = join(t.dir, 'results');

const worker = (name: string, model: string) =>
  spawnWorker(redis.url, join(t.dir, name), ['--models-dir', models, '--model', model, '--storage', shared, '--threads', '1', '--worker-lock', '2']);

before(async () => {
  mkdirSync(join(models, 'checkpoints'), { recursive: true });
  for (const m of ['tiny-sd1', 'tiny-sdxl']) symlinkSync(join(FIXTURES, m), join(models, 'checkpoints', m));
  redis = await startRedis();
  api = await spawnServer([
    '--queue',
    redis.url,
    '--worker',
    'false',
    '--models-dir',
    models,
    '--model',
    'tiny-sd1',
    '--data-dir',
    join(t.dir, 'api'),
    '--storage',
    shared,
  ]);
  workers.sd1 = await worker('w-sd1', 'tiny-sd1');
  workers.sdxl = await worker('w-sdxl', 'tiny-sdxl');
});

after(async () => {
  for (const w of Object.values(workers)) if (w.child.exitCode === null) w.child.kill('SIGKILL');
  api?.child.kill('SIGTERM');
  await Promise.all([api?.exited, ...Object.values(workers).map((w) => w.exited)]);
  await redis?.close();
  t.remove();
});

async function submit(model: string | undefined, seed: number): Promise<string> {
  const body = { prompt: 'a lighthouse', width: 64, height: 64, steps: 2, seed, ...(model ? { model } : {}) };
  const r = await json(`${api.url}/v1/jobs`, { method: 'POST', body: JSON.stringify(body) });
  assert.equal(r.status, 202, JSON.stringify(r.body));
  return r.body.id;
}

const finished = (ids: string[], ms = 150_000) =>
  waitUntil(
    async () => {
      const jobs = await Promise.all(ids.map(async (id) => (await json(`${api.url}/v1/jobs/${id}`)).body));
      return jobs.every((j) => ['succeeded', 'failed', 'cancelled'].includes(j.state)) ? jobs : undefined;
    },
    ms,
    'jobs to finish',
  );

test('each job lands on a worker that has its model; the workers announce their models', { timeout: 200_000 }, async () => {
  const listed = (await json(`${api.url}/v1/workers`)).body;
  assert.deepEqual(listed.workers.map((w: { models: string[] }) => w.models).sort(), [['tiny-sd1'], ['tiny-sdxl']]);
  assert.deepEqual(listed.unserved_models, []);
  const want: Record<string, string> = {};
  for (let i = 0; i < 4; i++) {
    want[await submit('tiny-sdxl', 10 + i)] = 'sdxl';
    want[await submit('tiny-sd1', 20 + i)] = 'sd1';
  }
  // No model named: the API node's default (tiny-sd1) decides the route, and that worker runs that model.
  want[await submit(undefined, 30)] = 'sd1';
  const jobs = await finished(Object.keys(want));
  assert.deepEqual(
    jobs.filter((j) => j.state !== 'succeeded').map((j) => [j.id, j.error]),
    [],
  );
  const ranOn = (id: string) => Object.keys(workers).filter((k) => completions(workers[k]!).includes(id));
  // A worker logs a completion just after recording it: give the log lines a moment.
  await waitUntil(async () => (Object.keys(want).every((id) => ranOn(id).length > 0) ? true : undefined), 10_000, 'completion log lines');
  for (const [id, where] of Object.entries(want)) assert.deepEqual(ranOn(id), [where], `job ${id} (${where}) ran on ${ranOn(id)}`);
  for (const j of jobs) assert.match(j.images[0].infotext ?? j.infotext ?? JSON.stringify(j), want[j.id] === 'sdxl' ? /Model: tiny-sdxl/ : /Model: tiny-sd1/);
});

test('a job for a model no live worker runs stays queued with a note, and runs when such a worker starts', { timeout: 200_000 }, async () => {
  workers.sdxl!.child.kill('SIGTERM');
  await workers.sdxl!.exited;
  const id = await submit('tiny-sdxl', 99);
  const health = await waitUntil(async () => {
    const h = (await json(`${api.url}/health`)).body;
    return h.unserved_models ? h : undefined;
  }, 20_000);
  assert.deepEqual(
    health.unserved_models.map((u: { model: string; queued: number }) => [u.model, u.queued]),
    [['tiny-sdxl', 1]],
  );
  assert.match(health.unserved_models[0].note, /no live worker runs; start one with `kiln worker --model tiny-sdxl`/);
  await new Promise((r) => setTimeout(r, 3000));
  assert.equal((await json(`${api.url}/v1/jobs/${id}`)).body.state, 'queued', 'the tiny-SD1 worker did not take it');
  workers.sdxl2 = await worker('w-sdxl2', 'tiny-sdxl');
  const [job] = await finished([id]);
  assert.equal(job.state, 'succeeded', JSON.stringify(job.error));
  await waitUntil(async () => (completions(workers.sdxl2!).includes(id) ? true : undefined), 10_000, 'the new tiny-SDXL worker to have run it');
  assert.ok(!completions(workers.sd1!).includes(id));
  assert.equal((await json(`${api.url}/health`)).body.unserved_models, undefined);
});
