// Batch split on both backends (SQLite: one process runs the chunks in turn; Redis: the same code path any number
// of workers share), with the fake engine, which honours batch windows as the real one does (the real engine's
// windows are checked in test/engine/pipelines/batch-window.test.ts; real processes in test/scale/batch-split.test.ts).
// A split parent's result equals the unsplit job's, image for image and byte for byte, under the parent's names;
// progress is aggregated; cancel reaches the chunks; a failed chunk fails the parent with its reason.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type { JobBackend } from '../../src/queue/backend.ts';
import { CHUNK_KEY, planSplit, SPLIT_KEY, type SplitPlan } from '../../src/queue/batch-split.ts';
import { createExecutor } from '../../src/queue/executor.ts';
import type { JobEvent } from '../../src/queue/job.ts';
import { JobQueue } from '../../src/queue/queue.ts';
import { RedisJobBackend } from '../../src/queue/redis-backend.ts';
import { SqliteJobBackend } from '../../src/queue/sqlite-backend.ts';
import { testConfig } from '../../src/server/config.ts';
import { LocalImageStore } from '../../src/storage/local.ts';
import { createEngine } from './fake-engine.ts';
import { spec, tempDir } from './helpers.ts';
import { startRedis, type TestRedis } from './redis-server.ts';

process.env.KILN_FAKE_STEP_MS = '5';

let redis: TestRedis;
before(async () => {
  redis = await startRedis();
});
after(async () => {
  await redis?.close();
});

let prefixes = 0;
const BACKENDS: Record<string, (dir: string) => JobBackend> = {
  sqlite: (dir) => {
    mkdirSync(dir, { recursive: true });
    return new SqliteJobBackend(join(dir, 'jobs.sqlite'));
  },
  redis: () => new RedisJobBackend({ url: redis.url, prefix: `split${++prefixes}:`, lockMs: 2000, stalledCheckMs: 2000 }),
};

function queueOn(kind: string, dir: string, splitImages: number) {
  const backend = BACKENDS[kind]!(dir);
  const storage = new LocalImageStore(join(dir, 'images'));
  const run = createExecutor({ engine: createEngine(), storage, resolveModel: async () => ({ path: 'fake-model' }) });
  const q = new JobQueue({ backend, run, storage, config: { ...testConfig(dir).queue, cleanupIntervalMs: 0, splitImages } });
  return {
    q,
    backend,
    storage,
    start: async () => {
      if (backend instanceof RedisJobBackend) await backend.ready();
      await q.start();
    },
    close: async () => {
      await q.stop();
      await backend.close();
    },
  };
}

const BATCH = { prompts: ['a', 'b'], images_per_prompt: 5, seed: 300, subseed: 7, steps: 4 };

for (const kind of Object.keys(BACKENDS)) {
  test(`${kind}: a 10-image batch in chunks of 4 equals the unsplit job byte for byte; chunks are gone after`, async () => {
    const t = tempDir();
    const whole = queueOn(kind, join(t.dir, 'whole'), 0);
    const split = queueOn(kind, join(t.dir, 'split'), 4);
    try {
      await whole.start();
      await split.start();
      const events: JobEvent[] = [];
      const a = await whole.q.submit(spec(BATCH));
      const b = await split.q.submit(spec(BATCH));
      const off = split.q.events(b.id, (e) => events.push(e));
      const [ja, jb] = [await whole.q.waitFor(a.id, 20_000), await split.q.waitFor(b.id, 20_000)];
      off();
      assert.equal(jb?.state, 'succeeded', JSON.stringify(jb?.error));
      const ia = ja!.result!.images;
      const ib = jb!.result!.images;
      assert.equal(ib.length, 10);
      ib.forEach((img, i) => {
        assert.equal(img.name, `${b.id}-${i}.png`);
        assert.deepEqual({ ...img, name: '' }, { ...ia[i]!, name: '' });
      });
      for (let i = 0; i < 10; i++) {
        const [x, y] = [await whole.storage.read(ia[i]!.name), await split.storage.read(ib[i]!.name)];
        assert.ok(x && y && x.equals(y), `image ${i}: bytes differ`);
      }
      // Progress on the parent: aggregated over the chunks, rising to the end.
      const fractions = events.filter((e) => e.type === 'progress').map((e) => (e as { progress: number }).progress);
      assert.ok(fractions.length >= 3, `progress events: ${fractions.length}`);
      assert.ok(
        fractions.some((f) => f > 0.2 && f < 0.9),
        `intermediate progress: ${fractions.join(' ')}`,
      );
      // The plan: chunks 0-3, 4-7, 8-9; they are removed once the parent is final (the parent holds copies).
      const plan = jb!.extra[SPLIT_KEY] as SplitPlan;
      assert.deepEqual(
        plan.chunks.map((c) => [c.start, c.count]),
        [
          [0, 4],
          [4, 4],
          [8, 2],
        ],
      );
      await assertEventually(async () => (await Promise.all(plan.chunks.map((c) => split.backend.get(c.id)))).every((c) => c === undefined));
      assert.deepEqual(
        (await split.q.list()).map((j) => j.id),
        [b.id],
      );
    } finally {
      await whole.close();
      await split.close();
      t.remove();
    }
  });

  test(`${kind}: cancelling a split parent cancels its chunks; a failed chunk fails the parent with its reason`, async () => {
    const t = tempDir();
    const s = queueOn(kind, t.dir, 4);
    try {
      const chunkEvents: JobEvent[] = [];
      const off = s.q.events('*', (e) => e.job.extra[CHUNK_KEY] && chunkEvents.push(e));
      await s.start();
      const job = await s.q.submit(spec({ ...BATCH, steps: 40 }));
      await assertEventually(async () => (await s.q.get(job.id))?.state === 'running' && chunkEvents.some((e) => e.type === 'started'));
      const cancelled = await s.q.cancel(job.id);
      assert.equal(cancelled?.state, 'cancelled');
      await assertEventually(async () => chunkEvents.filter((e) => e.type === 'cancelled').length === 3);
      assert.equal(chunkEvents.filter((e) => e.type === 'succeeded').length, 0);

      const failing = await s.q.submit(spec({ ...BATCH, prompts: ['a', 'b [fail]'] }));
      const failed = await s.q.waitFor(failing.id, 20_000);
      assert.equal(failed?.state, 'failed');
      assert.equal(failed?.error?.code, 'internal');
      assert.match(failed?.error?.message ?? '', /^images \d+-\d+ of this batch \(run as job .*-part\d\) failed: generation failed: boom$/);
      off();
    } finally {
      await s.close();
      t.remove();
    }
  });
}

test('what is split: generations larger than the chunk, not chunks, not DPM adaptive; a stored plan wins', () => {
  const job = (body: object, extra: Record<string, unknown> = {}) => ({ id: 'j', extra, spec: spec(body) }) as unknown as Parameters<typeof planSplit>[0];
  assert.equal(planSplit(job({ images_per_prompt: 8 }), 8), undefined);
  assert.equal(planSplit(job({ images_per_prompt: 9 }), 0), undefined);
  assert.equal(planSplit(job({ images_per_prompt: 9, sampler: 'DPM adaptive' }), 4), undefined);
  assert.deepEqual(planSplit(job({ images_per_prompt: 9 }), 8)?.chunks, [
    { id: 'j-part0', start: 0, count: 8 },
    { id: 'j-part1', start: 8, count: 1 },
  ]);
  const stored = { images: 9, chunks: [{ id: 'x', start: 0, count: 9 }] };
  assert.deepEqual(planSplit(job({ images_per_prompt: 9 }, { [SPLIT_KEY]: stored }), 4), stored);
  // Never more than 64 chunks: 1000 images in chunks of 4 become chunks of 16.
  const huge = job({ images_per_prompt: 9 });
  huge.spec.imagesPerPrompt = 1000;
  assert.equal(planSplit(huge, 4)?.chunks.length, 63);
});

async function assertEventually(check: () => Promise<boolean>, ms = 15_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > end) assert.fail('condition not met in time');
    await new Promise((r) => setTimeout(r, 50));
  }
}
