// The job model's own behaviours (moved out of the adapters): per-job execution timeouts, retry by id,
// webhooks with retry, refused requests recorded as failed jobs, and two queues sharing one backend (what a
// second process would see: live progress, and a cancel that reaches the worker running the job).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { JobQueue } from '../../src/queue/queue.ts';
import { WebhookSender } from '../../src/queue/webhooks.ts';
import { WebhookPolicy } from '../../src/queue/webhook-target.ts';

import { createExecutor } from '../../src/queue/executor.ts';
import { createEngine } from './fake-engine.ts';
import { makeQueue, spec, tempDir } from './helpers.ts';

process.env.KILN_FAKE_STEP_MS = '5';

/** The test receivers listen on loopback, which webhooks refuse unless the operator allows it. */
const LOOPBACK_ALLOWED = new WebhookPolicy(['127.0.0.1']);

/** A local HTTP server that answers each POST with the next status in `statuses` (then 200). */
async function hookServer(statuses: number[] = []) {
  const bodies: unknown[] = [];
  const server = createServer((req, res) => {
    let raw = '';
    req.on('data', (c) => (raw += c));
    req.on('end', () => {
      bodies.push(JSON.parse(raw));
      res.statusCode = statuses.shift() ?? 200;
      res.end();
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`;
  return { url, bodies, close: () => new Promise<void>((r) => server.close(() => r())) };
}

test("a job's own timeout stops it before the server's, as a timeout failure naming its own limit", async () => {
  process.env.KILN_FAKE_STEP_MS = '20';
  const t = tempDir();
  const { q, store } = makeQueue(t.dir, { jobTimeoutMs: 60_000 });
  try {
    await q.start();
    const job = await q.submit({ ...spec({ steps: 100 }), timeoutMs: 100 });
    const done = await q.waitFor(job.id, 3000);
    assert.deepEqual([done?.state, done?.error?.code], ['failed', 'timeout']);
    assert.match(done!.error!.message, /ran longer than its own 0.1 s execution timeout/);
    assert.ok(done!.step > 0 && done!.step < 100, 'it ran, then stopped');
  } finally {
    process.env.KILN_FAKE_STEP_MS = '5';
    await q.stop();
    await store.close();
    t.remove();
  }
});

test('retry runs a failed job again under its id (optionally with a new spec); other states are not retried', async () => {
  const t = tempDir();
  const { q, store } = makeQueue(t.dir);
  try {
    await q.start();
    const job = await q.submit(spec({ prompt: '[fail]' }));
    assert.equal((await q.waitFor(job.id, 3000))?.state, 'failed');
    const again = await q.retry(job.id, spec({ prompt: 'fixed' }));
    assert.deepEqual([again?.id, again?.state], [job.id, 'queued']);
    const done = await q.waitFor(job.id, 3000);
    assert.deepEqual([done?.state, done?.result?.images[0]?.prompt, done?.attempts], ['succeeded', 'fixed', 1]);
    assert.equal(await q.retry(job.id), undefined, 'a succeeded job is not retried');
    assert.equal(q.stats.retried, 1);
  } finally {
    await q.stop();
    await store.close();
    t.remove();
  }
});

test('webhooks: the finished job is POSTed once, retried after failures, and given up after the last attempt', async () => {
  const hook = await hookServer([500, 503]);
  const t = tempDir();
  const webhooks = new WebhookSender({ retryDelayMs: 10, attempts: 3, policy: LOOPBACK_ALLOWED });
  webhooks.register('native', async (job) => ({ id: job.id, state: job.state, prompt: job.spec.prompts[0] }));
  const { q, store } = makeQueue(t.dir, {}, { webhooks });
  try {
    await q.start();
    const job = await q.submit({ ...spec({ prompt: 'hooked' }), webhook: { url: hook.url } });
    await q.waitFor(job.id, 3000);
    await webhooks.drain();
    assert.deepEqual(
      hook.bodies,
      [0, 1, 2].map(() => ({ id: job.id, state: 'succeeded', prompt: 'hooked' })),
      'two failures, then delivered',
    );

    hook.bodies.length = 0;
    const down = await hookServer([500, 500, 500, 500]);
    const lost = await q.submit({ ...spec(), webhook: { url: down.url } });
    await q.waitFor(lost.id, 3000);
    await webhooks.drain();
    assert.equal(down.bodies.length, 3, 'three attempts, then it gives up');
    await down.close();

    const plain = await q.submit(spec());
    await q.waitFor(plain.id, 3000);
    await webhooks.drain();
    assert.equal(hook.bodies.length, 0, 'jobs without a webhook send nothing');
  } finally {
    await q.stop();
    await store.close();
    await hook.close();
    t.remove();
  }
});

test('a refused request recorded as a failed job is listed, can be retried, and fires its webhook', async () => {
  const hook = await hookServer();
  const t = tempDir();
  const webhooks = new WebhookSender({ retryDelayMs: 10, policy: LOOPBACK_ALLOWED });
  webhooks.register('runpod', async (job) => ({ id: job.id, status: job.state === 'failed' ? 'FAILED' : job.state, error: job.error?.message }));
  const { q, store } = makeQueue(t.dir, {}, { webhooks });
  try {
    await q.start();
    const job = await q.recordFailed(
      { ...spec(), webhook: { url: hook.url, format: 'runpod' } },
      { code: 'input', message: 'prompt: missing' },
      { owner: 'bob', extra: { runpod: { rejected: true } } },
    );
    await webhooks.drain();
    assert.deepEqual(hook.bodies, [{ id: job.id, status: 'FAILED', error: 'prompt: missing' }]);
    assert.deepEqual(
      (await q.list({ owner: 'bob' })).map((j) => [j.id, j.state]),
      [[job.id, 'failed']],
    );
    assert.equal((await q.retry(job.id))?.state, 'queued');
    assert.equal((await q.waitFor(job.id, 3000))?.state, 'succeeded');
  } finally {
    await q.stop();
    await store.close();
    await hook.close();
    t.remove();
  }
});

test('a second queue on the same backend sees live progress and its cancel stops the job where it runs', async () => {
  process.env.KILN_FAKE_STEP_MS = '20';
  const t = tempDir();
  const { q, store, storage, config } = makeQueue(t.dir);
  // The second "process": its own worker, sharing the backend and the image store.
  const other = new JobQueue({
    backend: store,
    storage,
    config,
    run: createExecutor({ engine: createEngine(), storage, resolveModel: async () => ({ path: 'fake' }) }),
  });
  try {
    await q.start();
    const job = await q.submit(spec({ steps: 100 }));
    let seen = 0;
    for (let i = 0; i < 200 && seen < 3; i++) {
      seen = (await other.get(job.id))?.step ?? 0;
      await new Promise((r) => setTimeout(r, 10));
    }
    assert.ok(seen >= 3, 'live steps are visible from the other queue');
    assert.equal(other.busy, false);
    const after = await other.cancel(job.id);
    assert.equal(after?.state, 'cancelled');
    assert.ok(after!.step >= 3 && after!.step < 100);
  } finally {
    process.env.KILN_FAKE_STEP_MS = '5';
    await other.stop();
    await q.stop();
    await store.close();
    t.remove();
  }
});
