// Queue priorities and per-key fairness through HTTP (fairness.ts): higher priority first, API keys take turns
// within a priority, positions say so, and the jobs start in that order. Runs on SQLite here and on Redis in
// test/scale/redis-backend-suite.test.ts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { post, startTestServer, waitForState } from './helpers.ts';

const keys = [
  { name: 'alice', key: 'alice-key-0001', role: 'user' as const },
  { name: 'bob', key: 'bob-key-00001', role: 'user' as const },
  { name: 'carol', key: 'carol-key-0001', role: 'user' as const },
  { name: 'ops', key: 'ops-key-000001', role: 'admin' as const },
];
const as = (name: string) => ({ authorization: `Bearer ${keys.find((k) => k.name === name)!.key}` });
const job = (prompt: string, extra: Record<string, unknown> = {}) => ({ prompt, width: 64, height: 64, steps: 2, ...extra });

test('one key with many queued jobs does not starve another key; priority goes first; positions match the start order', async () => {
  process.env.KILN_FAKE_STEP_MS = '50';
  const s = await startTestServer({ keys });
  try {
    // A long job holds the worker while the line forms.
    const blocker = (await post(s.app, '/v1/jobs', job('blocker', { steps: 150 }), as('ops'))).json();
    assert.equal((await waitForState(s.app, blocker.id, ['running'], as('ops'))).state, 'running');
    const submit = async (who: string, prompt: string, extra: Record<string, unknown> = {}) => {
      const r = await post(s.app, '/v1/jobs', job(prompt, extra), as(who));
      assert.equal(r.statusCode, 202, r.body);
      return { who, prompt, id: r.json().id as string };
    };
    const jobs: Array<{ who: string; prompt: string; id: string }> = [];
    for (let i = 1; i <= 6; i++) jobs.push(await submit('alice', `alice ${i}`));
    jobs.push(await submit('bob', 'bob 1'));
    jobs.push(await submit('alice', 'alice low', { priority: -3 }));
    jobs.push(await submit('ops', 'ops urgent', { priority: 4 }));
    const expected = ['ops urgent', 'alice 1', 'bob 1', 'alice 2', 'alice 3', 'alice 4', 'alice 5', 'alice 6', 'alice low'];
    const view = async (j: { who: string; id: string }) => (await s.app.inject({ url: `/v1/jobs/${j.id}`, headers: as(j.who) })).json();
    const views = await Promise.all(jobs.map(view));
    const byPosition = [...views].sort((a, b) => a.position - b.position);
    assert.deepEqual(
      byPosition.map((v) => v.position),
      expected.map((_, i) => i),
    );
    assert.deepEqual(
      byPosition.map((v) => jobs.find((j) => j.id === v.id)!.prompt),
      expected,
    );
    assert.deepEqual(
      views.map((v) => v.priority),
      [0, 0, 0, 0, 0, 0, 0, -3, 4],
    );
    await s.app.inject({ method: 'POST', url: `/v1/jobs/${blocker.id}/cancel`, headers: as('ops') });
    process.env.KILN_FAKE_STEP_MS = '5';
    const done: Array<{ prompt: string; attemptStart: string }> = [];
    for (const j of jobs) {
      const v = await waitForState(s.app, j.id, ['succeeded', 'failed'], as(j.who), 60_000);
      assert.equal(v.state, 'succeeded', JSON.stringify(v.error));
      done.push({ prompt: j.prompt, attemptStart: v.started_at as string });
    }
    // Started in that order (each job takes at least its two 5 ms steps, so start times differ).
    assert.deepEqual(
      done.sort((a, b) => a.attemptStart.localeCompare(b.attemptStart)).map((d) => d.prompt),
      expected,
    );
  } finally {
    process.env.KILN_FAKE_STEP_MS = '5';
    await s.close();
  }
});

test('a priority outside the range is a 400 naming the field; above 0 needs an admin key (403)', async () => {
  const s = await startTestServer({ keys });
  try {
    for (const priority of [11, -11, 1.5, 'high']) {
      const r = await post(s.app, '/v1/jobs', job('x', { priority }), as('ops'));
      assert.equal(r.statusCode, 400, r.body);
      assert.match(r.body, /priority/);
    }
    const raised = await post(s.app, '/v1/jobs', job('x', { priority: 1 }), as('carol'));
    assert.equal(raised.statusCode, 403, raised.body);
    assert.equal(raised.json().error.field, 'priority');
    assert.equal((await post(s.app, '/v1/jobs', job('x', { priority: -10 }), as('carol'))).statusCode, 202, 'a user key may lower its own jobs');
  } finally {
    await s.close();
  }
});
