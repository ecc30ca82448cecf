// The JobBackends on their own. SQLite: migration of databases from before. Every backend (SQLite, and Redis on a
// real redis-server): atomic claiming in order, conditional finishing, live progress and previews, extra data,
// retry and lookup by a client's id — the same contract, so the queue above works the same on both.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { SqliteJobBackend } from '../../src/queue/sqlite-backend.ts';
import { RedisJobBackend } from '../../src/queue/redis-backend.ts';
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
    for (const c of ['progress', 'step', 'total_steps', 'extra', 'external_id']) assert.ok(cols.includes(c), c);
  } finally {
    await b.close();
    t.remove();
  }
});

type Made = { b: JobBackend; dispose: () => Promise<void> };

function backendContract(name: string, make: () => Promise<Made>) {
  test(`${name}: claimNext takes queued jobs oldest first, once each; finish only ends a job in an expected state`, async () => {
    const { b, dispose } = await make();
    try {
      for (const id of ['a', 'b', 'c']) await b.insert({ id, owner: 'x', spec: spec(), createdAt: 1 });
      const claimed = await Promise.all([b.claimNext(10), b.claimNext(10), b.claimNext(10), b.claimNext(10)]);
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

  test(`${name}: live progress shows while running and is dropped when the job ends; previews likewise`, async () => {
    const { b, dispose } = await make();
    try {
      await b.insert({ id: 'j', owner: 'x', spec: spec(), createdAt: 1 });
      await b.claimNext(2);
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
  return { b, dispose: () => b.close() };
});
