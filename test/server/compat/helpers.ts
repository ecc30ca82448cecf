// Compat-surface test servers: the real engine (in-process) with the tiny SD1 fixture as the default model,
// so every adapter is exercised end to end through HTTP. Generations take well under a second at 64x64.
import { after, before } from 'node:test';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance, LightMyRequestResponse } from 'fastify';
import { buildApp } from '../../../src/server/app.ts';
import { testConfig } from '../../../src/server/config.ts';
import type { KilnConfig } from '../../../src/server/config.ts';
import { createEngine } from '../../../src/engine/engine.ts';
import { tempDir } from '../../queue/helpers.ts';

export const TINY_SD1 = fileURLToPath(new URL('../../fixtures/tiny-sd1', import.meta.url));

export type Overrides = Parameters<typeof testConfig>[1];

export interface CompatServer {
  app: FastifyInstance;
  config: KilnConfig;
  dir: string;
  close: () => Promise<void>;
}

export async function startCompatServer(overrides: Overrides = {}): Promise<CompatServer> {
  const t = tempDir('kiln-compat-');
  const config = testConfig(t.dir, { model: TINY_SD1, ...overrides });
  const app = await buildApp(config, { engine: createEngine({ cacheDir: process.env.KILN_TEST_GRAPH_CACHE }) });
  await app.ready();
  await app.kiln.engineReady;
  return {
    app,
    config,
    dir: t.dir,
    close: async () => {
      await app.close();
      t.remove();
    },
  };
}

/**
 * One compat server for a whole test file: started before its tests, closed after them. `post` sends a JSON body;
 * `server()` is the running server (for its app or config).
 */
export function compatServerForFile(overrides: Overrides = {}): {
  server: () => CompatServer;
  post: (url: string, payload: unknown) => Promise<LightMyRequestResponse>;
} {
  let s: CompatServer | undefined;
  before(async () => {
    s = await startCompatServer(overrides);
  });
  after(async () => {
    await s?.close();
  });
  const server = () => {
    if (!s) throw new Error('the compat server is not started yet (use it inside a test)');
    return s;
  };
  return { server, post: (url, payload) => server().app.inject({ method: 'POST', url, payload: payload as object }) };
}

/** Starts the server on a real port (for clients that speak HTTP themselves, like the openai package). */
export async function listenCompatServer(overrides: Overrides = {}): Promise<CompatServer & { url: string }> {
  const s = await startCompatServer(overrides);
  const address = await s.app.listen({ host: '127.0.0.1', port: 0 });
  return { ...s, url: address };
}

/**
 * Keeps the queue busy with a long 64x64 job so later submissions stay queued: their specs (defaults from a
 * seed, often 1024 px) can then be checked without running them. release() cancels the blocker.
 */
export async function holdQueue(app: FastifyInstance): Promise<{ release: () => Promise<void> }> {
  const r = await app.inject({ method: 'POST', url: '/v1/jobs', payload: { prompt: 'blocker', steps: 150, width: 64, height: 64 } });
  const id = r.json().id as string;
  // By time, not by count: on a loaded machine the first claim (Redis: the worker's first connection) takes seconds.
  const end = Date.now() + 30_000;
  while ((await app.inject(`/v1/jobs/${id}`)).json().state !== 'running') {
    if (Date.now() > end) throw new Error('the blocker job did not start within 30 s');
    await new Promise((res) => setTimeout(res, 5));
  }
  return { release: async () => void (await app.inject({ method: 'POST', url: `/v1/jobs/${id}/cancel` })) };
}

/** The first queued job (native summary) matching `pred`, waiting briefly for it to appear. */
export async function findQueued(app: FastifyInstance, pred: (job: any) => boolean = () => true): Promise<any> {
  for (let i = 0; i < 500; i++) {
    const job = (await app.inject('/v1/jobs?state=queued')).json().jobs.find(pred);
    if (job) return job;
    await new Promise((res) => setTimeout(res, 5));
  }
  throw new Error('no queued job appeared');
}

/** Cancels every queued job (cleanup after a held-queue test). */
export async function cancelQueued(app: FastifyInstance): Promise<void> {
  for (const job of (await app.inject('/v1/jobs?state=queued')).json().jobs) await app.inject({ method: 'POST', url: `/v1/jobs/${job.id}/cancel` });
}
