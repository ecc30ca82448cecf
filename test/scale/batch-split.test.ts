// A large batch split over two real `kiln worker` processes (Redis queue, API node, shared result folder) equals
// the same batch run whole by one `kiln serve` (embedded queue, no split), byte for byte: every PNG (pixels and
// infotext), A1111's info (seeds, infotexts) and the native job's image list. Tiny SD1 model, 64x64, 3 steps.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { tempDir } from '../queue/helpers.ts';
import { startRedis, type TestRedis } from '../queue/redis-server.ts';
import { json, spawnServer, waitUntil, type ServerProcess } from '../server/process.ts';
import { completions, spawnWorker, type WorkerProcess } from './worker-process.ts';

const TINY = fileURLToPath(new URL('../fixtures/tiny-sd1', import.meta.url));

let redis: TestRedis;
let api: ServerProcess;
let single: ServerProcess;
const workers: WorkerProcess[] = [];
const t = tempDir('kiln-split-');
const shared = join(t.dir, 'results');

before(async () => {
  redis = await startRedis();
  const common = ['--model', TINY, '--threads', '1'];
  api = await spawnServer(['--queue', redis.url, '--worker', 'false', '--data-dir', join(t.dir, 'api'), '--storage', shared, ...common]);
  single = await spawnServer(['--data-dir', join(t.dir, 'single'), ...common]);
  for (const n of [1, 2])
    workers.push(await spawnWorker(redis.url, join(t.dir, `worker-${n}`), ['--storage', shared, '--split-batch', '8', '--worker-lock', '2', ...common]));
});

after(async () => {
  for (const w of workers) if (w.child.exitCode === null) w.child.kill('SIGKILL');
  for (const s of [api, single]) s?.child.kill('SIGTERM');
  await Promise.all([api?.exited, single?.exited, ...workers.map((w) => w.exited)]);
  await redis?.close();
  t.remove();
});

// A1111 batch_size x n_iter = 40 images; seeds 4242..4281.
const BATCH = {
  prompt: 'a lighthouse at dusk',
  negative_prompt: 'blurry',
  width: 64,
  height: 64,
  steps: 3,
  seed: 4242,
  subseed: 9,
  sampler_name: 'Euler a',
  batch_size: 4,
  n_iter: 10,
};

test('a 40-image batch split over two workers equals the single-worker result byte for byte', { timeout: 240_000 }, async () => {
  const post = (url: string) => json(`${url}/sdapi/v1/txt2img`, { method: 'POST', body: JSON.stringify(BATCH) });
  const t0 = Date.now();
  const whole = await post(single.url);
  const t1 = Date.now();
  const split = await post(api.url);
  const t2 = Date.now();
  assert.equal(whole.status, 200, JSON.stringify(whole.body).slice(0, 500));
  assert.equal(split.status, 200, `${JSON.stringify(split.body).slice(0, 500)}\n${workers.map((w) => w.output().slice(-1500)).join('\n---\n')}`);
  assert.equal(whole.body.images.length, 40);
  assert.equal(split.body.images.length, 40);
  split.body.images.forEach((b64: string, i: number) => assert.ok(b64 === whole.body.images[i], `image ${i} differs`));
  const [infoWhole, infoSplit] = [JSON.parse(whole.body.info), JSON.parse(split.body.info)];
  for (const key of ['all_seeds', 'all_subseeds', 'all_prompts', 'infotexts', 'seed', 'subseed'])
    assert.deepEqual(infoSplit[key], infoWhole[key], `info.${key}`);
  assert.deepEqual(
    infoSplit.all_seeds,
    Array.from({ length: 40 }, (_, i) => 4242 + i),
  );
  // The chunks ran on both workers, each exactly once (8 images per chunk: 5 chunks).
  const chunkIds = () => workers.map((w) => completions(w).filter((id) => /-part\d+$/.test(id)));
  // A worker logs a completion just after recording it: give the log lines a moment.
  await waitUntil(async () => (chunkIds().flat().length >= 5 ? true : undefined), 10_000, 'chunk completion log lines');
  const chunks = chunkIds();
  assert.ok(
    chunks.every((c) => c.length >= 1),
    `chunks per worker: ${chunks.map((c) => c.length)}`,
  );
  assert.equal(new Set(chunks.flat()).size, 5, `chunks: ${chunks.flat()}`);
  assert.equal(chunks.flat().length, 5, 'no chunk completed twice');
  // The chunks are gone once the batch is done; listings show the batch only.
  await waitUntil(async () => ((await json(`${api.url}/v1/jobs?limit=100`)).body.jobs.length === 1 ? true : undefined), 10_000, 'chunks removed');
  process.stderr.write(`# 40-image batch (64x64, 3 steps): 1 worker ${t1 - t0} ms, 2 workers split ${t2 - t1} ms\n`);
});

test('native surface: the split job reads as one job, its images in order under its own names', { timeout: 120_000 }, async () => {
  const body = { prompts: ['a red apple', 'a lighthouse'], images_per_prompt: 10, width: 64, height: 64, steps: 2, seed: 77, subseed: 5 };
  const submit = async (url: string) => (await json(`${url}/v1/jobs`, { method: 'POST', body: JSON.stringify(body) })).body.id as string;
  const [a, b] = [await submit(single.url), await submit(api.url)];
  const done = (url: string, id: string) =>
    waitUntil(async () => {
      const j = (await json(`${url}/v1/jobs/${id}`)).body;
      return ['succeeded', 'failed', 'cancelled'].includes(j.state) ? j : undefined;
    }, 100_000);
  const [ja, jb] = [await done(single.url, a), await done(api.url, b)];
  assert.equal(jb.state, 'succeeded', JSON.stringify(jb.error));
  assert.equal(jb.images.length, 20);
  for (const [i, img] of jb.images.entries()) {
    assert.match(img.url, new RegExp(`/${b}-${i}\\.png$`));
    assert.equal(img.seed, ja.images[i].seed);
    const [x, y] = await Promise.all([fetchBytes(single.url, ja.images[i].url), fetchBytes(api.url, img.url)]);
    assert.ok(x.equals(y), `image ${i}: bytes differ`);
  }
});

async function fetchBytes(base: string, url: string): Promise<Buffer> {
  const r = await fetch(`${base}${url.replace(/^https?:\/\/[^/]+/, '')}`);
  assert.equal(r.status, 200);
  return Buffer.from(await r.arrayBuffer());
}

test('cancel on the API node stops the chunks running on the workers', { timeout: 120_000 }, async () => {
  const body = { prompt: 'a lighthouse', images_per_prompt: 40, width: 64, height: 64, steps: 30, seed: 5 };
  const id = (await json(`${api.url}/v1/jobs`, { method: 'POST', body: JSON.stringify(body) })).body.id as string;
  const runningChunks = async () =>
    ((await json(`${api.url}/v1/workers`)).body.workers as { job: string | null }[]).filter((w) => w.job?.startsWith(`${id}-part`)).length;
  await waitUntil(async () => ((await runningChunks()) >= 1 ? true : undefined), 60_000, 'a chunk running');
  const r = await json(`${api.url}/v1/jobs/${id}/cancel`, { method: 'POST' });
  assert.equal(r.body.state, 'cancelled', JSON.stringify(r.body));
  // Every worker stops its chunk within a step or so, and the chunks are removed with the batch.
  await waitUntil(async () => ((await runningChunks()) === 0 ? true : undefined), 30_000, 'the chunks to stop');
  await waitUntil(async () => ((await json(`${api.url}/v1/jobs/${id}-part1`)).status === 404 ? true : undefined), 15_000, 'the chunks removed');
  assert.equal((await json(`${api.url}/v1/jobs/${id}`)).body.state, 'cancelled');
});

/** Jobs a worker's log says it started that are not chunks (batches it coordinated, or whole jobs). */
const parentsStarted = (w: WorkerProcess) =>
  w
    .output()
    .split('\n')
    .filter((l) => l.includes('"job started"'))
    .map((l) => JSON.parse(l).jobId as string)
    .filter((id) => !/-part\d+$/.test(id));

// Last: it kills a worker.
// The kill lands while the coordinator queues the chunks: a chunk record written just before the kill had no
// BullMQ entry yet, and the batch hung until the takeover learned to repair that (queueChunks, ensureDispatched).
test('the coordinating worker killed mid-batch: the other worker takes the batch over, still byte-identical', {
  timeout: 180_000,
}, async () => {
  const body = { ...BATCH, steps: 6, seed: 777, n_iter: 6 }; // 24 images: 3 chunks of 8
  const reference = (await json(`${single.url}/sdapi/v1/txt2img`, { method: 'POST', body: JSON.stringify(body) })).body;
  const seen = new Set(workers.flatMap(parentsStarted));
  const pending = json(`${api.url}/sdapi/v1/txt2img`, { method: 'POST', body: JSON.stringify(body) });
  const coordinator = await waitUntil(
    async () => workers.find((w) => parentsStarted(w).some((id) => !seen.has(id))),
    60_000,
    'a worker to coordinate the batch',
  );
  coordinator.child.kill('SIGKILL');
  await coordinator.exited;
  const split = await pending;
  assert.equal(split.status, 200, JSON.stringify(split.body).slice(0, 500));
  assert.equal(split.body.images.length, 24);
  split.body.images.forEach((b64: string, i: number) => assert.ok(b64 === reference.images[i], `image ${i} differs`));
  const survivor = workers.find((w) => w !== coordinator)!;
  assert.ok(
    parentsStarted(survivor).some((id) => !seen.has(id)),
    'the surviving worker coordinated the batch after the kill',
  );
});
