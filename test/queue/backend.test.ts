// The JobBackends on their own. SQLite: migration of databases from before. Every backend (SQLite, and Redis on a
// real redis-server): atomic claiming in order, conditional finishing, live progress and previews, extra data,
// retry and lookup by a client's id — the same contract, so the queue above works the same on both.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { SqliteJobBackend } from '../../src/queue/sqlite-backend.ts';
import { RedisJobBackend } from '../../src/queue/redis-backend.ts';
import { ANY_ROUTE } from '../../src/queue/routing.ts';
import type { JobBackend } from '../../src/queue/backend.ts';
import { startRedis } from './redis-server.ts';
import type { TestRedis } from './redis-server.ts';
import { spec, tempDir } from './helpers.ts';

test('a database from before the progress/extra/external-id columns opens, keeps its jobs and gains the columns', async () => {
  const t = tempDir();
  const file = join(t.dir, 'jobs.sqlite');
  const old = new Database(file);
  old.exec(`CREATE TABLE jobs (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, state TEXT NOT NULL, owner TEXT NOT NULL,
    spec TEXT NOT NULL, created_at INTEGER NOT NULL, started_at INTEGER, finished_at INTEGER, attempts INTEGER NOT NULL DEFAULT 0, error TEXT, result TEXT)`);
  old.prepare("INSERT INTO jobs (id, state, owner, spec, created_at) VALUES ('old-job', 'queued', 'alice', ?, 1)").run(JSON.stringify(spec()));
  old.close();
  const b = new SqliteJobBackend(file);
  try {
    const job = (await b.get('old-job'))!;
    assert.deepEqual([job.state, job.owner, job.progress, job.step, job.externalId], ['queued', 'alice', 0, 0, undefined]);
    assert.deepEqual(job.extra, {});
    assert.equal((await b.updateExtra('old-job', { seed004: { delivered: true } }))?.extra.seed004 && true, true);
    const reader = new Database(file, { readonly: true });
    const cols = (reader.prepare('PRAGMA table_info(jobs)').all() as Array<{ name: string }>).map((c) => c.name);
    reader.close();
    for (const c of ['progress', 'step', 'total_steps', 'extra', 'external_id', 'priority', 'turn', 'ticket']) assert.ok(cols.includes(c), c);
    // A job queued before the run order existed still runs (priority 0, ahead of jobs queued since).
    await b.insert({ id: 'new-job', owner: 'bob', spec: spec(), createdAt: 2 });
    assert.deepEqual([(await b.claimNext(() => 3))?.id, (await b.claimNext(() => 3))?.id], ['old-job', 'new-job']);
  } finally {
    await b.close();
    t.remove();
  }
});

type Made = {
  b: JobBackend;
  dispose: () => Promise<void>;
  /** Loses a queued job's dispatch entry as a process dying between the record and the entry would (Redis only). */
  loseDispatch?: (id: string) => Promise<void>;
};

function backendContract(name: string, make: () => Promise<Made>) {
  test(`${name}: claimNext takes queued jobs oldest first, once each; finish only ends a job in an expected state`, async () => {
    const { b, dispose } = await make();
    try {
      for (const id of ['a', 'b', 'c']) await b.insert({ id, owner: 'x', spec: spec(), createdAt: 1 });
      const claimed = await Promise.all([b.claimNext(() => 10), b.claimNext(() => 10), b.claimNext(() => 10), b.claimNext(() => 10)]);
      assert.deepEqual(
        claimed.map((j) => j?.id),
        ['a', 'b', 'c', undefined],
      );
      assert.deepEqual(
        claimed.slice(0, 3).map((j) => [j!.state, j!.attempts, j!.startedAt]),
        [
          ['running', 1, 10],
          ['running', 1, 10],
          ['running', 1, 10],
        ],
      );
      assert.equal(await b.finish('a', ['queued'], 'cancelled', 20, {}), undefined, 'a running job is not cancelled as a queued one');
      const done = await b.finish('a', ['running'], 'succeeded', 20, { progress: { progress: 1, step: 3, totalSteps: 3 } });
      assert.deepEqual([done?.state, done?.finishedAt, done?.step], ['succeeded', 20, 3]);
      assert.equal(await b.finish('a', ['running'], 'failed', 30, {}), undefined, 'a final job stays final');
      assert.deepEqual(await b.counts(), { queued: 0, running: 2, succeeded: 1, failed: 0, cancelled: 0 });
    } finally {
      await dispose();
    }
  });

  test(`${name}: ensureDispatched repairs a queued job whose dispatch entry was lost, and never runs a job twice`, async () => {
    const { b, dispose, loseDispatch } = await make();
    try {
      // A first claim makes Redis reconcile once at start-up (a restart repairs lost entries); the loss comes later.
      await b.insert({ id: 'first', owner: 'x', spec: spec(), createdAt: 1 });
      assert.equal((await b.claimNext(() => 2))?.id, 'first');
      await new Promise((r) => setTimeout(r, 300));
      await b.insert({ id: 'lost', owner: 'x', spec: spec(), createdAt: 1 });
      await b.insert({ id: 'kept', owner: 'x', spec: spec(), createdAt: 1 });
      await loseDispatch?.('lost');
      await b.ensureDispatched('lost');
      await b.ensureDispatched('kept');
      await b.ensureDispatched('lost');
      const first = [(await b.claimNext(() => 5))?.id, (await b.claimNext(() => 5))?.id];
      assert.deepEqual(first.sort(), ['kept', 'lost']);
      await b.ensureDispatched('lost'); // running now: nothing to repair
      await b.ensureDispatched('no-such-job');
      assert.equal((await b.claimNext(() => 6))?.id, undefined, 'each job is claimed once');
    } finally {
      await dispose();
    }
  });

  test(`${name}: live progress shows while running and is dropped when the job ends; previews likewise`, async () => {
    const { b, dispose } = await make();
    try {
      await b.insert({ id: 'j', owner: 'x', spec: spec(), createdAt: 1 });
      await b.claimNext(() => 2);
      await b.setProgress('j', { progress: 0.5, phase: 'sampling', step: 2, totalSteps: 4 });
      await b.setPreview('j', { image: { data: new Uint8Array(3), width: 1, height: 1, channels: 3 }, step: 2, seq: 1 });
      assert.deepEqual([(await b.get('j'))?.progress, (await b.list({ limit: 5 }))[0]?.step], [0.5, 2]);
      assert.equal((await b.getPreview('j'))?.seq, 1);
      await b.finish('j', ['running'], 'failed', 3, { error: { code: 'internal', message: 'x' }, progress: { progress: 0.5, step: 2, totalSteps: 4 } });
      assert.equal(await b.getPreview('j'), undefined);
      assert.equal((await b.get('j'))?.step, 2, 'how far it got is stored with the final state');
    } finally {
      await dispose();
    }
  });

  test(`${name}: a job queued while a claim is under way starts no earlier than it was created`, async () => {
    const { b, dispose } = await make();
    try {
      // The first claim of a fresh backend may wait (Redis: the worker's connection); the start time is read
      // once the job is taken, so a job created during the wait never shows a negative queue time.
      let t = 100;
      const clock = () => t;
      const claiming = b.claimNext(clock);
      t = 200;
      await b.insert({ id: 'late', owner: 'x', spec: spec(), createdAt: 200 });
      const job = (await claiming) ?? (await b.claimNext(clock));
      assert.equal(job?.id, 'late');
      assert.ok(job.startedAt! >= job.createdAt, `started ${job.startedAt} before it was created (${job.createdAt})`);
    } finally {
      await dispose();
    }
  });

  test(`${name}: run order is priority, then round-robin turns across owners, then submission; positions agree`, async () => {
    const { b, dispose } = await make();
    try {
      const add = (id: string, owner: string, priority?: number) => b.insert({ id, owner, spec: spec({ priority }), createdAt: 1 });
      for (const id of ['a1', 'a2', 'a3', 'a4']) await add(id, 'alice');
      await add('b1', 'bob');
      await add('c1', 'carol', 5);
      await add('d1', 'dave', -1);
      await add('b2', 'bob');
      const order = ['c1', 'a1', 'b1', 'a2', 'b2', 'a3', 'a4', 'd1'];
      const positions = async (ids: string[]) => Promise.all(ids.map(async (id) => b.queuedAhead((await b.get(id))!)));
      assert.deepEqual(await positions(order), [0, 1, 2, 3, 4, 5, 6, 7]);
      assert.deepEqual(await Promise.all(order.map(async (id) => [(await b.get(id))?.priority, (await b.get(id))?.turn])), [
        [5, 1],
        [0, 1],
        [0, 1],
        [0, 2],
        [0, 2],
        [0, 3],
        [0, 4],
        [-1, 1],
      ]);
      const claimed: string[] = [];
      for (let i = 0; i < 4; i++) claimed.push((await b.claimNext(() => 5))!.id);
      assert.deepEqual(claimed, order.slice(0, 4));
      // A key arriving now takes the turn at the head of the line, not one after alice's last job.
      await add('e1', 'erin');
      assert.equal((await b.get('e1'))?.turn, 2);
      // A job handed back keeps its turn (behind the jobs that share it); a retried one queues afresh.
      await b.requeue('a2', true);
      await b.finish('a1', ['running'], 'failed', 6, { error: { code: 'internal', message: 'x' } });
      await b.retry('a1');
      const rest = ['b2', 'e1', 'a2', 'a3', 'a4', 'a1', 'd1'];
      assert.deepEqual(await positions(rest), [0, 1, 2, 3, 4, 5, 6]);
      const next: string[] = [];
      for (let j = await b.claimNext(() => 7); j; j = await b.claimNext(() => 7)) next.push(j.id);
      assert.deepEqual(next, rest);
    } finally {
      await dispose();
    }
  });

  test(`${name}: retry re-queues only failed jobs, clearing the outcome; external ids find the newest job; extra merges`, async () => {
    const { b, dispose } = await make();
    try {
      const failed = await b.insert({ id: 'f', owner: 'x', spec: spec(), createdAt: 1, failed: { code: 'input', message: 'bad' }, extra: { a: 1 } });
      assert.deepEqual([failed.state, failed.error?.message, failed.finishedAt], ['failed', 'bad', 1]);
      await b.insert({ id: 'q', owner: 'x', spec: spec(), createdAt: 2, externalId: 'task-1' });
      await b.insert({ id: 'q2', owner: 'x', spec: spec(), createdAt: 3, externalId: 'task-1' });
      assert.equal((await b.findByExternalId('task-1'))?.id, 'q2');
      assert.equal(await b.findByExternalId('task-2'), undefined);
      assert.equal((await b.findByExternalId('task-1', 'x'))?.id, 'q2');
      assert.equal(await b.findByExternalId('task-1', 'someone-else'), undefined);
      assert.equal(await b.retry('q'), undefined, 'a queued job is not retried');
      const again = await b.retry('f', spec({ steps: 7 }));
      assert.deepEqual([again?.state, again?.error, again?.finishedAt, again?.spec.steps, again?.attempts], ['queued', undefined, undefined, 7, 0]);
      await b.updateExtra('f', { b: 2 });
      assert.deepEqual((await b.get('f'))?.extra, { a: 1, b: 2 });
    } finally {
      await dispose();
    }
  });
}

backendContract('SQLite', async () => {
  const t = tempDir();
  const b = new SqliteJobBackend(join(t.dir, 'jobs.sqlite'));
  return {
    b,
    dispose: async () => {
      await b.close();
      t.remove();
    },
  };
});

let redis: TestRedis;
before(async () => {
  redis = await startRedis();
});
after(async () => {
  await redis.close();
});
let prefixes = 0;
backendContract('Redis', async () => {
  // A fresh key prefix per test keeps the tests apart on one server.
  const b = new RedisJobBackend({ url: redis.url, prefix: `t${++prefixes}:` });
  await b.ready();
  const queues = (b as unknown as { queues: { producer(route: string): { remove(id: string): Promise<number> } } }).queues;
  return { b, dispose: () => b.close(), loseDispatch: async (id) => assert.equal(await queues.producer(ANY_ROUTE).remove(id), 1) };
});
