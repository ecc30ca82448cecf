// Test servers: a temp data dir with a placeholder checkpoint, the fake engine (in-process or in the worker
// thread, as production runs it), and helpers for JSON requests.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance } from 'fastify';
import { buildApp } from '../../src/server/app.ts';
import type { BuildOptions } from '../../src/server/app.ts';
import { testConfig } from '../../src/server/config.ts';
import type { KilnConfig } from '../../src/server/config.ts';
import { createEngine } from '../queue/fake-engine.ts';
import { tempDir } from '../queue/helpers.ts';

export const FAKE_ENGINE_MODULE = fileURLToPath(new URL('../queue/fake-engine.ts', import.meta.url));

export type Overrides = Parameters<typeof testConfig>[1];

export interface TestServer {
  app: FastifyInstance;
  config: KilnConfig;
  dir: string;
  close: () => Promise<void>;
}

/** A placeholder checkpoint so the registry has a default model (the fake engine never reads it). */
export function addFakeModel(dir: string, name = 'fake-model'): void {
  const ckpt = join(dir, 'models', 'checkpoints');
  mkdirSync(ckpt, { recursive: true });
  writeFileSync(join(ckpt, `${name}.safetensors`), '');
}

export async function startTestServer(overrides: Overrides = {}, opts: { threaded?: boolean; dir?: string; build?: BuildOptions } = {}): Promise<TestServer> {
  const t = opts.dir ? { dir: opts.dir, remove: () => {} } : tempDir('kiln-server-');
  addFakeModel(t.dir);
  const config = testConfig(t.dir, { model: 'fake-model', engineModule: FAKE_ENGINE_MODULE, ...overrides });
  const app = await buildApp(config, { ...(opts.threaded ? {} : { engine: createEngine() }), ...opts.build });
  await app.ready();
  await app.kiln.engineReady;
  return {
    app,
    config,
    dir: t.dir,
    close: async () => {
      await app.close();
      if (!opts.dir) t.remove();
    },
  };
}

export async function post(app: FastifyInstance, url: string, payload: unknown, headers: Record<string, string> = {}) {
  return app.inject({ method: 'POST', url, payload: payload as object, headers });
}

export async function waitForState(app: FastifyInstance, id: string, states: string[], headers: Record<string, string> = {}, timeoutMs = 5000) {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const r = await app.inject({ method: 'GET', url: `/v1/jobs/${id}`, headers });
    const body = r.json();
    if (states.includes(body.state) || Date.now() > end) return body;
    await new Promise((res) => setTimeout(res, 10));
  }
}

/** A log destination for buildApp that keeps every JSON log line, parsed, as the test reads them. */
export function logLines<T>(): { lines: T[]; logStream: Writable } {
  const lines: T[] = [];
  const logStream = new Writable({
    write(chunk, _enc, cb) {
      for (const l of String(chunk).split('\n')) if (l.trim()) lines.push(JSON.parse(l) as T);
      cb();
    },
  });
  return { lines, logStream };
}
