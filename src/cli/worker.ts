// `kiln worker`: takes jobs from a shared Redis queue and runs them on this machine's engine, with no HTTP.
// Run one per GPU (or per CPU box) beside any number of `kiln serve --queue redis://… --worker false` API
// nodes. The options are kiln serve's (models, device, storage, limits), plus --queue, which must be redis://.
// --model X makes X this worker's only model (model-aware routing: other models' jobs wait for workers that have
// them); without it, the worker runs jobs for every checkpoint in its models folder.
// SIGINT/SIGTERM: stop taking jobs, let the running one finish within the grace or hand it back to the queue.
// A worker has no HTTP port: while it can reach the queue and its engine is up it renews <data-dir>/worker-alive
// (its time, every few seconds), and a container healthcheck tests that file's age (compose.scale.yaml).
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import pino from 'pino';
import type { FastifyBaseLogger } from 'fastify';
import { loadConfig } from '../server/config.ts';
import { KilnServices } from '../server/services.ts';
import type { Flags } from './options.ts';
import { ensureDefaultModel } from './serve.ts';

/** Renewed while the worker is healthy; healthchecks call it stale after WORKER_ALIVE_STALE_S seconds. */
export const WORKER_ALIVE_FILE = 'worker-alive';
const WORKER_ALIVE_EVERY_MS = 5000;
export const WORKER_ALIVE_STALE_S = 30;

/** Keeps the alive file fresh while the queue answers and the engine is not broken; returns the stop function. */
function keepAlive(kiln: KilnServices, file: string): () => void {
  const touch = async () => {
    try {
      await kiln.queue.counts(); // throws while Redis is away: the file ages and the healthcheck fails
      if (kiln.engineStatus.state !== 'error') writeFileSync(file, `${Date.now()}\n`);
    } catch {
      // stale on purpose
    }
  };
  void touch();
  const timer = setInterval(() => void touch(), WORKER_ALIVE_EVERY_MS);
  timer.unref();
  return () => {
    clearInterval(timer);
    rmSync(file, { force: true });
  };
}

export async function runWorker(flags: Flags): Promise<number> {
  let kiln: KilnServices;
  let stopAlive = () => {};
  try {
    const config = { ...loadConfig({ flags }), worker: true };
    if (!config.queueUrl.startsWith('redis')) throw new Error('--queue: a worker takes jobs from a shared queue; give --queue redis://host:port');
    // --model restricts this worker to that model: jobs for others go to workers that have them.
    const onlyDefaultModel = config.model !== undefined;
    await ensureDefaultModel(config);
    const log = pino({ level: config.logLevel }) as unknown as FastifyBaseLogger;
    kiln = new KilnServices(config, { log, onlyDefaultModel });
    await kiln.engineReady;
    if (kiln.engineStatus.state === 'error') {
      await kiln.close().catch(() => undefined);
      throw new Error(`the engine failed to start: ${kiln.engineStatus.error}`);
    }
    await kiln.start();
    stopAlive = keepAlive(kiln, join(config.dataDir, WORKER_ALIVE_FILE));
    process.stderr.write(`kiln worker: taking jobs from ${config.queueUrl.replace(/\/\/[^@/]*@/, '//***@')} (pid ${process.pid})\n`);
  } catch (e) {
    process.stderr.write(`kiln worker: ${(e as Error).message}\n`);
    return 1;
  }
  return new Promise<number>((done) => {
    let closing = false;
    const shutdown = (signal: string) => {
      if (closing) process.exit(1);
      closing = true;
      process.stderr.write(`kiln worker: ${signal}: finishing or handing back the running job\n`);
      stopAlive();
      kiln.close().then(
        () => done(0),
        (e: Error) => {
          process.stderr.write(`kiln worker: shutdown failed: ${e.message}\n`);
          done(1);
        },
      );
    };
    process.once('SIGINT', () => shutdown('SIGINT'));
    process.once('SIGTERM', () => shutdown('SIGTERM'));
  });
}
