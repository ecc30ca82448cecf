// Live previews through the queue: requested from the engine only when previewEvery > 0, carried across the
// worker-thread boundary, and kept (latest only) while the job runs.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ProcessEngine } from '../../src/queue/engine-process.ts';
import { JobQueue } from '../../src/queue/queue.ts';
import { SqliteJobBackend } from '../../src/queue/sqlite-backend.ts';
import { createExecutor } from '../../src/queue/executor.ts';
import type { Engine } from '../../src/queue/engine.ts';
import type { JobEvent, JobPreview } from '../../src/queue/job.ts';
import type { ProgressEvent } from '../../src/engine/api.ts';
import { LocalImageStore } from '../../src/storage/local.ts';
import { testConfig } from '../../src/server/config.ts';
import { createEngine } from './fake-engine.ts';
import { spec, tempDir } from './helpers.ts';

const FAKE = fileURLToPath(new URL('./fake-engine.ts', import.meta.url));

function queueWith(dir: string, engine: Engine, previewEvery: number) {
  const store = new SqliteJobBackend(join(dir, 'jobs.sqlite'));
  const storage = new LocalImageStore(join(dir, 'images'));
  const run = createExecutor({ engine, storage, resolveModel: async () => ({ path: 'fake-model' }), previewEvery });
  const q = new JobQueue({ backend: store, run, config: { ...testConfig(dir).queue, cleanupIntervalMs: 0 }, storage });
  return {
    q,
    close: async () => {
      await q.stop();
      await store.close();
    },
  };
}

test('previews cross the engine process boundary with their pixels; none unless asked for', async () => {
  process.env.KILN_FAKE_STEP_MS = '1';
  const engine = new ProcessEngine(FAKE);
  try {
    const req = { model: { path: 'x' }, prompts: ['a'], width: 64, height: 48, steps: 7, cfgScale: 7, sampler: 'Euler', seed: 1 };
    const events: ProgressEvent[] = [];
    await engine.generate(req, { onProgress: (e) => events.push(e), preview: { everyEvals: 3 } });
    const previews = events.filter((e) => e.preview);
    assert.deepEqual(
      previews.map((e) => e.step),
      [3, 6, 7],
    );
    for (const e of previews) {
      assert.ok(e.preview!.data instanceof Uint8Array);
      assert.deepEqual([e.preview!.width, e.preview!.height, e.preview!.data.length], [8, 6, 8 * 6 * 3]);
      assert.ok(
        e.preview!.data.every((v) => v === e.step),
        'the pixels arrive intact',
      );
    }
    const plain: ProgressEvent[] = [];
    await engine.generate(req, { onProgress: (e) => plain.push(e) });
    assert.ok(plain.length > 7);
    assert.equal(plain.filter((e) => e.preview).length, 0);
  } finally {
    await engine.close();
    delete process.env.KILN_FAKE_STEP_MS;
  }
});

test("the queue keeps only the running job's latest preview, numbered, and drops it when the job ends", async () => {
  process.env.KILN_FAKE_STEP_MS = '15';
  const t = tempDir();
  const { q, close } = queueWith(t.dir, createEngine(), 2);
  try {
    await q.start();
    const job = await q.submit(spec({ steps: 9 }));
    const seen: JobPreview[] = [];
    const fromEvents: number[] = [];
    const off = q.events(job.id, (e: JobEvent) => {
      if (e.type !== 'progress') return;
      if (e.preview) fromEvents.push(e.preview.seq);
      void q.preview(job.id).then((p) => {
        if (p && p.seq !== seen.at(-1)?.seq) seen.push(p);
      });
    });
    assert.equal(await q.preview(job.id), undefined, 'nothing before the first preview');
    assert.equal((await q.waitFor(job.id, 5000))?.state, 'succeeded');
    off();
    assert.deepEqual(
      seen.map((p) => p.step),
      [2, 4, 6, 8, 9],
    );
    assert.deepEqual(
      seen.map((p) => p.seq),
      [1, 2, 3, 4, 5],
    );
    assert.deepEqual(fromEvents, [1, 2, 3, 4, 5]);
    assert.equal(seen[0]!.image.data[0], 2);
    assert.equal(await q.preview(job.id), undefined, 'a finished job keeps no preview');
  } finally {
    await close();
    t.remove();
    delete process.env.KILN_FAKE_STEP_MS;
  }
});

test('previewEvery 0 asks the engine for no previews', async () => {
  const t = tempDir();
  let asked: unknown = 'not called';
  const fake = createEngine();
  const engine: Engine = {
    ...fake,
    generate: (req, opts) => {
      asked = opts.preview;
      return fake.generate(req, opts);
    },
  };
  const { q, close } = queueWith(t.dir, engine, 0);
  try {
    await q.start();
    const job = await q.submit(spec());
    assert.equal((await q.waitFor(job.id, 5000))?.state, 'succeeded');
    assert.equal(asked, undefined);
  } finally {
    await close();
    t.remove();
  }
});
