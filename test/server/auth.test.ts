import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { assertSafeBinding } from '../../src/server/app.ts';
import { KeyRing, presentedKey } from '../../src/server/auth.ts';
import { loadConfig, testConfig } from '../../src/server/config.ts';
import { post, startTestServer } from './helpers.ts';

process.env.KILN_FAKE_STEP_MS = '1';

const USER = 'user-key-0123456789';
const OTHER = 'other-key-0123456789';
const ADMIN = 'admin-key-0123456789';
const keys = [
  { name: 'alice', key: USER, role: 'user' as const },
  { name: 'bob', key: OTHER, role: 'user' as const },
  { name: 'root', key: ADMIN, role: 'admin' as const },
];
const job = { prompt: 'a cat', width: 64, height: 64, steps: 1 };

test('keys: none, wrong, user on admin route, header forms, owner isolation', async () => {
  const s = await startTestServer({ keys });
  try {
    const none = await post(s.app, '/v1/jobs', job);
    assert.equal(none.statusCode, 401);
    assert.equal(none.headers['www-authenticate'], 'Bearer');
    assert.match(none.json().error.message, /API key is required/);
    const wrong = await post(s.app, '/v1/jobs', job, { 'x-api-key': 'not-the-key-at-all' });
    assert.equal(wrong.statusCode, 401);
    assert.match(wrong.json().error.message, /not valid/);

    const viaHeader = await post(s.app, '/v1/generate', job, { 'x-api-key': USER });
    assert.equal(viaHeader.statusCode, 200);
    const viaBearer = await post(s.app, '/v1/generate', job, { authorization: `Bearer ${USER}` });
    assert.equal(viaBearer.statusCode, 200);

    assert.equal((await s.app.inject({ method: 'POST', url: '/v1/models/refresh', headers: { 'x-api-key': USER } })).statusCode, 403);
    assert.equal((await s.app.inject({ method: 'DELETE', url: '/v1/queue', headers: { 'x-api-key': USER } })).statusCode, 403);
    assert.equal((await s.app.inject({ method: 'POST', url: '/v1/models/refresh', headers: { 'x-api-key': ADMIN } })).statusCode, 200);

    // Alice's job and image are invisible to Bob, visible to the admin.
    const id = viaHeader.json().id;
    const image = new URL(viaHeader.json().images[0].url).pathname;
    assert.equal((await s.app.inject({ url: `/v1/jobs/${id}`, headers: { 'x-api-key': OTHER } })).statusCode, 404);
    assert.equal((await s.app.inject({ url: image, headers: { 'x-api-key': OTHER } })).statusCode, 404);
    assert.equal((await s.app.inject({ method: 'POST', url: `/v1/jobs/${id}/cancel`, headers: { 'x-api-key': OTHER } })).statusCode, 404);
    assert.equal((await s.app.inject({ url: image, headers: { 'x-api-key': USER } })).statusCode, 200);
    assert.equal((await s.app.inject({ url: `/v1/jobs/${id}`, headers: { 'x-api-key': ADMIN } })).statusCode, 200);
    assert.equal((await s.app.inject({ url: '/v1/jobs', headers: { 'x-api-key': OTHER } })).json().jobs.length, 0);
    assert.equal((await s.app.inject({ url: '/v1/jobs', headers: { 'x-api-key': USER } })).json().jobs.length, 2);

    // Probes and docs stay public.
    for (const url of ['/health', '/ready', '/metrics', '/docs', '/openapi.json']) {
      assert.ok((await s.app.inject(url)).statusCode < 400, url);
    }
  } finally {
    await s.close();
  }
});

test('key comparison: exact match only, constant-time path over every key', () => {
  const ring = new KeyRing(keys);
  assert.equal(ring.check(USER)?.name, 'alice');
  assert.equal(ring.check(ADMIN)?.role, 'admin');
  assert.equal(ring.check(USER.slice(0, -1)), undefined);
  assert.equal(ring.check(`${USER}x`), undefined);
  assert.equal(ring.check(''), undefined);
  assert.equal(ring.check(undefined), undefined);
  assert.equal(new KeyRing([]).check(undefined)?.anonymous, true);
  assert.equal(presentedKey({ authorization: 'Bearer abc' }), 'abc');
  assert.equal(presentedKey({ authorization: 'abc' }), 'abc', 'RunPod clients send the bare key');
  assert.equal(presentedKey({ 'x-api-key': 'k', authorization: 'Bearer z' }), 'k');
});

test('binding a non-loopback address without keys refuses to start unless --insecure', () => {
  const base = testConfig('/tmp/kiln-unused');
  assert.throws(() => assertSafeBinding({ ...base, host: '0.0.0.0' }), /refusing to listen on 0\.0\.0\.0 without API keys/);
  assertSafeBinding({ ...base, host: '0.0.0.0', insecure: true });
  assertSafeBinding({ ...base, host: '0.0.0.0', keys });
  assertSafeBinding({ ...base, host: '127.0.0.1' });
});

test('keys load from env and config file; flags beat env beat file', () => {
  const cfg = loadConfig({
    flags: { 'data-dir': '/tmp/kiln-unused', port: '9000' },
    env: { KILN_API_KEYS: 'alice=aaaaaaaaaaaa,bbbbbbbbbbbb', KILN_ADMIN_KEYS: 'cccccccccccc', KILN_PORT: '8000', KILN_MAX_QUEUE: '7' },
    file: { keys: [{ name: 'ci', key: 'dddddddddddd', role: 'admin' }], queue: { maxQueued: 3, jobTimeoutMs: 5000 }, host: '127.0.0.2' },
  });
  assert.equal(cfg.port, 9000);
  assert.equal(cfg.queue.maxQueued, 7);
  assert.equal(cfg.host, '127.0.0.2');
  assert.equal(cfg.queue.jobTimeoutMs, 5000, 'config-file keys are in their own unit (ms)');
  assert.deepEqual(
    cfg.keys.map((k) => [k.name, k.role]),
    [
      ['ci', 'admin'],
      ['alice', 'user'],
      ['user-2', 'user'],
      ['admin-1', 'admin'],
    ],
  );
  assert.throws(() => loadConfig({ flags: { 'data-dir': '/tmp/x', port: 'eighty' }, env: {} }), /port \(--port\): must be a non-negative integer/);
  assert.throws(() => loadConfig({ flags: { 'data-dir': '/tmp/x', bogus: '1' }, env: {} }), /--bogus: unknown option/);
  assert.throws(() => loadConfig({ flags: { 'data-dir': '/tmp/x' }, env: { KILN_API_KEYS: 'short' } }), /at least 8 characters/);
});

test('per-key rate limit answers 429 for that key only', async () => {
  const s = await startTestServer({ keys, rateLimitPerMinute: 3 });
  try {
    const codes: number[] = [];
    for (let i = 0; i < 5; i++) codes.push((await s.app.inject({ url: '/v1/samplers', headers: { 'x-api-key': USER } })).statusCode);
    assert.deepEqual(codes, [200, 200, 200, 429, 429]);
    const limited = await s.app.inject({ url: '/v1/samplers', headers: { 'x-api-key': USER } });
    assert.equal(limited.json().error.code, 'rate_limited');
    assert.equal((await s.app.inject({ url: '/v1/samplers', headers: { 'x-api-key': OTHER } })).statusCode, 200);
    assert.equal((await s.app.inject('/health')).statusCode, 200, 'health is never rate limited');
  } finally {
    await s.close();
  }
});

test('logs never contain API keys or base64 images', async () => {
  const chunks: string[] = [];
  const logStream = new Writable({
    write(chunk, _enc, cb) {
      chunks.push(String(chunk));
      cb();
    },
  });
  const s = await startTestServer({ keys, logLevel: 'trace' }, { build: { logStream } });
  try {
    const r = await post(s.app, '/v1/generate', job, { authorization: `Bearer ${USER}` });
    assert.equal(r.statusCode, 200);
    const b64 = r.json().images[0].base64 as string;
    await post(s.app, '/v1/jobs', { ...job, steps: 'bad' }, { 'x-api-key': ADMIN });
    await post(s.app, '/v1/jobs', job, { 'x-api-key': 'wrong-key-0123456789' });
    const logs = chunks.join('');
    assert.ok(logs.length > 500, 'something was logged');
    for (const secret of [USER, ADMIN, 'wrong-key-0123456789', b64.slice(0, 40)]) assert.ok(!logs.includes(secret), `log leaked ${secret.slice(0, 12)}`);
  } finally {
    await s.close();
  }
});
