// Compat-surface test servers: the real engine (in-process) with the tiny SD1 fixture as the default model,
// so every adapter is exercised end to end through HTTP. Generations take well under a second at 64x64.
import { fileURLToPath } from 'node:url';
import type { FastifyInstance } from 'fastify';
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

/** Starts the server on a real port (for clients that speak HTTP themselves, like the openai package). */
export async function listenCompatServer(overrides: Overrides = {}): Promise<CompatServer & { url: string }> {
  const s = await startCompatServer(overrides);
  const address = await s.app.listen({ host: '127.0.0.1', port: 0 });
  return { ...s, url: address };
}
