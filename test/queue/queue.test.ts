import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readInfotext } from '../../src/storage/encode.ts';
import { QueueFullError } from '../../src/queue/queue.ts';
import type { JobEvent } from '../../src/queue/job.ts';
import { SqliteJobBackend } from '../../src/queue/sqlite-backend.ts';
import { join } from 'node:path';
import { makeQueue, spec, tempDir } from './helpers.ts';

process.env.KILN_FAKE_STEP_MS = '5';

test('a job runs to success; images are stored with metadata and the seeds used', async () => {
  const t = tempDir();
  const { q, store, storage } = makeQueue(t.dir);
  try {
    await q.start();
    const job = await q.submit(spec({ prompts: ['a', 'b'], images_per_prompt: 2, seed: 100, output: { format: 'jpeg' } }), { owner: 'alice' });
    assert.equal(job.state, 'queued');
    const done = await q.waitFor(job.id, 5000);
    assert.equal(done?.state, 'succeeded');
    assert.equal(done?.owner, 'alice');
    assert.deepEqual(
      done?.result?.images.map((i) => i.seed),
      [100, 101, 102, 103],
    );
    assert.deepEqual(
      done?.result?.images.map((i) => i.prompt),
      ['a', 'a', 'b', 'b'],
    );
    const file = await storage.read(done!.result!.images[2]!.name);
    assert.ok(file);
    assert.match((await readInfotext(file!))!, /Seed: 102/);
  } finally {
    await q.stop();
    await store.close();
    t.remove();
  }
});

test('jobs run one at a time, in submission order, with progress events', async () => {
  const t = tempDir();
  const { q, store } = makeQueue(t.dir);
  try {
    const events: JobEvent[] = [];
    const off = q.events('*', (e) => events.push(e));
    const jobs = [await q.submit(spec()), await q.submit(spec()), await q.submit(spec())];
    assert.equal(await q.position((await q.get(jobs[2]!.id))!), 2);
    await q.start();
    for (const j of jobs) assert.equal((await q.waitFor(j.id, 5000))?.state, 'succeeded');
    off();
    let running = 0;
    let maxRunning = 0;
    const starts: string[] = [];
    for (const e of events) {
      if (e.type === 'started') {
        running++;
        starts.push(e.job.id);
      }
      if (e.type === 'succeeded') running--;
      maxRunning = Math.max(maxRunning, running);
    }
    assert.equal(maxRunning, 1);
    assert.deepEqual(
      starts,
      jobs.map((j) => j.id),
    );
    const steps = events.filter((e) => e.type === 'progress' && e.job.id === jobs[0]!.id && e.phase === 'sampling');
    assert.equal(steps.length, 3);
  } finally {
    await q.stop();
    await store.close();
    t.remove();
  }
});

test('a full queue refuses with QueueFullError and a Retry-After estimate', async () => {
  const t = tempDir();
  const { q, store } = makeQueue(t.dir, { maxQueued: 2 });
  try {
    await q.submit(spec());
    await q.submit(spec());
    await assert.rejects(
      () => q.submit(spec()),
      (e: unknown) => e instanceof QueueFullError && e.retryAfterS >= 1 && e.depth === 2,
    );
  } finally {
    await store.close();
    t.remove();
  }
});

test('cancelling a queued job is immediate; a running job stops within one step', async () => {
  process.env.KILN_FAKE_STEP_MS = '20';
  const t = tempDir();
  const { q, store } = makeQueue(t.dir);
  try {
    await q.start();
    const long = await q.submit(spec({ steps: 100 }));
    const waiting = await q.submit(spec());
    assert.equal((await q.cancel(waiting.id))?.state, 'cancelled');
    let stepAtCancel = 0;
    let lastStep = 0;
    q.events(long.id, (e) => {
      if (e.type === 'progress') lastStep = e.step;
    });
    while (lastStep < 5) await new Promise((r) => setTimeout(r, 5));
    stepAtCancel = lastStep;
    const t0 = Date.now();
    const after = await q.cancel(long.id);
    assert.equal(after?.state, 'cancelled');
    assert.ok(lastStep <= stepAtCancel + 1, `ran ${lastStep - stepAtCancel} steps after cancel`);
    assert.equal(after?.step, lastStep, 'the cancelled job records how far it got');
    assert.ok(Date.now() - t0 < 200, 'cancel took too long');
  } finally {
    process.env.KILN_FAKE_STEP_MS = '5';
    await q.stop();
    await store.close();
    t.remove();
  }
});

test('a job past its timeout is stopped and marked failed with code timeout', async () => {
  process.env.KILN_FAKE_STEP_MS = '20';
  const t = tempDir();
  const { q, store } = makeQueue(t.dir, { jobTimeoutMs: 100 });
  try {
    await q.start();
    const job = await q.submit(spec({ steps: 100 }));
    const done = await q.waitFor(job.id, 3000);
    assert.equal(done?.state, 'failed');
    assert.equal(done?.error?.code, 'timeout');
    assert.match(done!.error!.message, /limit/);
  } finally {
    process.env.KILN_FAKE_STEP_MS = '5';
    await q.stop();
    await store.close();
    t.remove();
  }
});

test('engine errors become failed jobs: input errors keep their field', async () => {
  const t = tempDir();
  const { q, store } = makeQueue(t.dir);
  try {
    await q.start();
    const bad = await q.submit(spec({ prompt: '[input-error]' }));
    const boom = await q.submit(spec({ prompt: '[fail]' }));
    const ok = await q.submit(spec());
    const b = await q.waitFor(bad.id, 3000);
    assert.deepEqual([b?.state, b?.error?.code, b?.error?.field], ['failed', 'input', 'sampler']);
    const f = await q.waitFor(boom.id, 3000);
    assert.deepEqual([f?.state, f?.error?.code], ['failed', 'internal']);
    assert.match(f!.error!.message, /boom/);
    assert.equal((await q.waitFor(ok.id, 3000))?.state, 'succeeded', 'the queue keeps going after a failure');
  } finally {
    await q.stop();
    await store.close();
    t.remove();
  }
});

test('after a crash, running jobs are re-queued (or failed past maxAttempts) and queued jobs survive', async () => {
  const t = tempDir();
  const file = join(t.dir, 'jobs.sqlite');
  // "Crash": leave rows in the running state, as a killed process would.
  const before = new SqliteJobBackend(file);
  const a = await before.insert({ id: 'job-a', owner: 'x', spec: spec(), createdAt: Date.now() });
  const b = await before.insert({ id: 'job-b', owner: 'x', spec: spec(), createdAt: Date.now() });
  const c = await before.insert({ id: 'job-c', owner: 'x', spec: spec(), createdAt: Date.now() });
  assert.equal((await before.claimNext(Date.now))?.id, a.id);
  assert.equal((await before.claimNext(Date.now))?.id, b.id);
  await before.requeue(b.id, false);
  assert.equal((await before.claimNext(Date.now))?.id, b.id); // b already had two starts: at the limit
  await before.close();

  const { q, store } = makeQueue(t.dir, { maxAttempts: 2 });
  try {
    const rec = await q.start();
    assert.deepEqual(rec, { requeued: ['job-a'], failed: ['job-b'] });
    const fb = (await q.get('job-b'))!;
    assert.equal(fb.state, 'failed');
    assert.equal(fb.error?.code, 'interrupted');
    assert.match(fb.error!.message, /server stopped/);
    assert.equal((await q.waitFor('job-a', 3000))?.state, 'succeeded');
    assert.equal((await q.waitFor(c.id, 3000))?.state, 'succeeded');
  } finally {
    await q.stop();
    await store.close();
    t.remove();
  }
});

test('graceful stop re-queues the running job without counting the attempt', async () => {
  process.env.KILN_FAKE_STEP_MS = '20';
  const t = tempDir();
  const { q, store } = makeQueue(t.dir);
  try {
    await q.start();
    const job = await q.submit(spec({ steps: 100 }));
    await new Promise<void>((r) => {
      const off = q.events(job.id, (e) => {
        if (e.type !== 'progress' || e.step < 2) return;
        off();
        r();
      });
    });
    await q.stop(50);
    const after = (await store.get(job.id))!;
    assert.equal(after.state, 'queued');
    assert.equal(after.attempts, 0);
    await assert.rejects(() => q.submit(spec()), /shutting down/);
  } finally {
    process.env.KILN_FAKE_STEP_MS = '5';
    await store.close();
    t.remove();
  }
});

test('cleanup removes expired finished jobs and their files, and keeps recent ones', async () => {
  const t = tempDir();
  let now = Date.now();
  const { q, store, storage } = makeQueue(t.dir, { retentionMs: 60_000 }, { now: () => now });
  try {
    await q.start();
    const old = await q.submit(spec());
    const oldDone = await q.waitFor(old.id, 3000);
    const name = oldDone!.result!.images[0]!.name;
    assert.ok(await storage.exists(name));
    now += 120_000;
    const fresh = await q.submit(spec());
    await q.waitFor(fresh.id, 3000);
    assert.equal(await q.cleanup(), 1);
    assert.equal(await q.get(old.id), undefined);
    assert.equal(await storage.exists(name), false);
    assert.equal((await q.get(fresh.id))?.state, 'succeeded');
  } finally {
    await q.stop();
    await store.close();
    t.remove();
  }
});

test('waitFor returns the current state when the timeout comes first; ETA appears after one job', async () => {
  process.env.KILN_FAKE_STEP_MS = '20';
  const t = tempDir();
  const { q, store } = makeQueue(t.dir);
  try {
    await q.start();
    const first = await q.submit(spec({ steps: 2 }));
    assert.equal(await q.etaSeconds((await q.get(first.id))!), undefined, 'no history, no estimate');
    await q.waitFor(first.id, 3000);
    const job = await q.submit(spec({ steps: 50 }));
    const mid = await q.waitFor(job.id, 100);
    assert.equal(mid?.state, 'running');
    assert.ok(mid!.progress > 0 && mid!.progress < 1);
    const eta = await q.etaSeconds(mid!);
    assert.ok(eta !== undefined && eta > 0 && eta < 10, `eta ${eta}`);
    await q.cancel(job.id);
  } finally {
    process.env.KILN_FAKE_STEP_MS = '5';
    await q.stop();
    await store.close();
    t.remove();
  }
});
