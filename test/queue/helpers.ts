// Shared setup for queue tests: a temp data dir, a job backend, an image store and an in-process fake engine.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SqliteJobBackend } from '../../src/queue/sqlite-backend.ts';
import { JobQueue } from '../../src/queue/queue.ts';
import type { JobQueueOptions } from '../../src/queue/queue.ts';
import { createExecutor } from '../../src/queue/executor.ts';
import { specFromNative } from '../../src/server/native/request.ts';
import type { NativeRequest } from '../../src/server/native/request.ts';
import { LocalImageStore } from '../../src/storage/local.ts';
import { testConfig } from '../../src/server/config.ts';
import type { QueueConfig } from '../../src/queue/config.ts';
import { createEngine } from './fake-engine.ts';

export function tempDir(prefix = 'kiln-test-'): { dir: string; remove: () => void } {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  return { dir, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

export const LIMITS = testConfig('/tmp/unused-kiln').limits;

export function spec(body: NativeRequest = {}) {
  return specFromNative({ ...(body.prompts ? {} : { prompt: 'a cat' }), width: 64, height: 64, steps: 3, ...body }, LIMITS);
}

export function makeQueue(dir: string, queue: Partial<QueueConfig> = {}, extra: Partial<JobQueueOptions> = {}) {
  const config = { ...testConfig(dir).queue, cleanupIntervalMs: 0, ...queue };
  const store = new SqliteJobBackend(join(dir, 'jobs.sqlite'));
  const storage = new LocalImageStore(join(dir, 'images'));
  const engine = createEngine();
  const run = createExecutor({ engine, storage, resolveModel: async () => ({ path: 'fake-model' }) });
  const q = new JobQueue({ backend: store, run, config, storage, ...extra });
  return { q, store, storage, engine, config };
}
