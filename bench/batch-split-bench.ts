// Batch split figures, printed (not asserted), with real processes on the tiny SD1 model: one A1111 txt2img batch
// (batch_size x n_iter images, 64x64) on
// - one `kiln serve` (embedded queue: the whole batch in one engine call),
// - an API node + 1 `kiln worker` on Redis (the batch split into chunks, all on the one worker: the split's cost),
// - an API node + 2 workers (the chunks shared),
// each process with one engine thread; wall time per batch, and whether the images are byte-identical.
// Usage: node --import tsx bench/batch-split-bench.ts [images=40] [steps=8] [chunk=8]
import { mkdtempSync, rmSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startRedis } from '../test/queue/redis-server.ts';
import { json, spawnServer, type ServerProcess } from '../test/server/process.ts';
import { spawnWorker, type WorkerProcess } from '../test/scale/worker-process.ts';

const TINY = fileURLToPath(new URL('../test/fixtures/tiny-sd1', import.meta.url));
const images = Number(process.argv[2] ?? 40);
const steps = Number(process.argv[3] ?? 8);
const chunk = Number(process.argv[4] ?? 8);
const root = mkdtempSync(join(tmpdir(), 'kiln-split-bench-'));
const common = ['--model', TINY, '--threads', '1'];
const body = {
  prompt: 'a lighthouse at dusk',
  width: 64,
  height: 64,
  steps,
  seed: 1,
  subseed: 1,
  sampler_name: 'Euler a',
  batch_size: 4,
  n_iter: Math.ceil(images / 4),
};

async function batch(url: string): Promise<{ ms: number; images: string[] }> {
  // One warm-up job first (the model's graphs), then the timed batch.
  await json(`${url}/sdapi/v1/txt2img`, { method: 'POST', body: JSON.stringify({ ...body, batch_size: 1, n_iter: 1 }) });
  const t0 = performance.now();
  const r = await json(`${url}/sdapi/v1/txt2img`, { method: 'POST', body: JSON.stringify(body) });
  if (r.status !== 200) throw new Error(`batch failed: ${JSON.stringify(r.body).slice(0, 300)}`);
  return { ms: performance.now() - t0, images: r.body.images };
}

const stops: Array<() => Promise<unknown>> = [];
const stop = (p: ServerProcess | WorkerProcess) => {
  p.child.kill('SIGTERM');
  return p.exited;
};
try {
  const single = await spawnServer(['--data-dir', join(root, 'single'), ...common]);
  const one = await batch(single.url);
  await stop(single);
  const results: Record<string, number> = { '1 serve (whole)': one.ms };
  for (const n of [1, 2]) {
    const redis = await startRedis();
    stops.push(() => redis.close());
    const shared = join(root, `shared-${n}`);
    const api = await spawnServer(['--queue', redis.url, '--worker', 'false', '--data-dir', join(root, `api-${n}`), '--storage', shared, ...common]);
    const workers: WorkerProcess[] = [];
    for (let i = 0; i < n; i++)
      workers.push(await spawnWorker(redis.url, join(root, `w${n}-${i}`), ['--storage', shared, '--split-batch', String(chunk), ...common]));
    const r = await batch(api.url);
    const same = r.images.length === one.images.length && r.images.every((b, i) => b === one.images[i]);
    results[`API + ${n} worker(s), split in ${chunk}s`] = r.ms;
    process.stdout.write(`${n} worker(s): images byte-identical to the single run: ${same}\n`);
    for (const w of workers) await stop(w);
    await stop(api);
    await redis.close();
    stops.pop();
  }
  process.stdout.write(
    `\n${images} images, 64x64, ${steps} steps (load average ${loadavg()[0]!.toFixed(1)} on ${(await import('node:os')).availableParallelism()} cores):\n`,
  );
  for (const [k, ms] of Object.entries(results)) process.stdout.write(`  ${k.padEnd(34)} ${(ms / 1000).toFixed(1)} s\n`);
  const two = results[`API + 2 worker(s), split in ${chunk}s`]!;
  process.stdout.write(`  speed-up, 2 workers vs 1 serve: ${(one.ms / two).toFixed(2)}x\n`);
} finally {
  for (const s of stops) await s().catch(() => undefined);
  rmSync(root, { recursive: true, force: true });
}
