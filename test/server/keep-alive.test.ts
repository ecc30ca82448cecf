// The shared keep-alive helpers: a JSON answer that waits sends whitespace heartbeats, and an error after the
// headers went out ends the body in the caller's shape; a quick answer or error is a plain reply.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import Fastify from 'fastify';
import { sendJsonWithHeartbeats, startHeartbeat } from '../../src/server/keep-alive.ts';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function app(work: () => Promise<unknown>) {
  const a = Fastify();
  a.setErrorHandler((err, _req, reply) => void reply.status(418).send({ handled: (err as Error).message }));
  a.post('/', async (req, reply) => {
    await sendJsonWithHeartbeats(req, reply, work, { intervalMs: 30, lateErrorBody: (e) => ({ ok: false, late: (e as Error).message }) });
    return reply;
  });
  return a;
}

test('startHeartbeat beats at the interval until stopped', async () => {
  let beats = 0;
  const stop = startHeartbeat(() => beats++, 10);
  await sleep(75);
  stop();
  const seen = beats;
  assert.ok(seen >= 3, `beats ${seen}`);
  await sleep(40);
  assert.equal(beats, seen, 'no beat after stop');
});

test('a quick answer is a plain JSON reply; a quick error goes to the route error handler', async () => {
  const quick = await app(async () => ({ ok: true })).inject({ method: 'POST', url: '/' });
  assert.equal(quick.statusCode, 200);
  assert.equal(quick.body, '{"ok":true}');
  const failing = await app(async () => {
    throw new Error('nope');
  }).inject({ method: 'POST', url: '/' });
  assert.equal(failing.statusCode, 418);
  assert.deepEqual(failing.json(), { handled: 'nope' });
});

test('a slow answer gets 200 headers early and spaces before the JSON; a late error ends the body as lateErrorBody', async () => {
  const slow = await app(async () => {
    await sleep(120);
    return { ok: true };
  }).inject({ method: 'POST', url: '/' });
  assert.equal(slow.statusCode, 200);
  assert.match(slow.body, /^ {2,}\{"ok":true\}$/);
  const late = await app(async () => {
    await sleep(120);
    throw new Error('engine died');
  }).inject({ method: 'POST', url: '/' });
  assert.equal(late.statusCode, 200);
  assert.match(late.body, /^ +\{"ok":false,"late":"engine died"\}$/);
});
