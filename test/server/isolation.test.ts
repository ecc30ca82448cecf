// Per-key isolation through the real server (app.inject) with two user keys and an admin key: live progress
// and previews, interrupt/skip, A1111 settings, key names, the wrong-key rate limit and webhook targets.
// Jobs stay "running" long enough to poke at them: the fake engine waits 20 ms per step over 150 steps.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { FastifyInstance } from 'fastify';
import { loadConfig } from '../../src/server/config.ts';
import { AuthFailureLimiter, clientBucket } from '../../src/server/auth.ts';
import { addFakeModel, post, startTestServer, waitForState } from './helpers.ts';
import { tempDir } from '../queue/helpers.ts';

process.env.KILN_FAKE_STEP_MS = '20';

const ALICE = 'alice-key-0123456789';
const BOB = 'bob-key-0123456789';
const ROOT = 'root-key-0123456789';
const keys = [
  { name: 'alice', key: ALICE, role: 'user' as const },
  { name: 'bob', key: BOB, role: 'user' as const },
  { name: 'root', key: ROOT, role: 'admin' as const },
];
const as = (key: string) => ({ 'x-api-key': key });
const long = { prompt: 'a long job', steps: 150, width: 64, height: 64 };

/** Starts a blocking A1111 txt2img as `key` (not awaited) and waits until it runs with a live preview. */
async function startLong(app: FastifyInstance, key: string, taskId: string) {
  const call = app.inject({ method: 'POST', url: '/sdapi/v1/txt2img', payload: { ...long, force_task_id: taskId }, headers: as(key) });
  const end = Date.now() + 10_000;
  for (;;) {
    const p = (await app.inject({ url: '/sdapi/v1/progress', headers: as(key) })).json();
    if (p.current_image) break;
    if (Date.now() > end) throw new Error('the job never showed a preview');
    await new Promise((r) => setTimeout(r, 20));
  }
  const job = (await app.inject({ url: '/v1/jobs?state=running', headers: as(key) })).json().jobs[0];
  return { call, id: job.id as string };
}

test('A1111 progress, /internal/progress and native previews: each key sees only its own running job; the admin sees it', async () => {
  const s = await startTestServer({ keys, previewEvery: 1 });
  try {
    const { call, id } = await startLong(s.app, ALICE, 'alice-task');
    const rows: Array<[string, () => Promise<unknown>, unknown]> = [
      [
        'bob: /sdapi/v1/progress shows no job and no preview',
        async () => {
          const p = (await s.app.inject({ url: '/sdapi/v1/progress', headers: as(BOB) })).json();
          return [p.progress, p.current_image, p.state.job, p.state.sampling_step];
        },
        [0, null, '', 0],
      ],
      [
        "bob: /internal/progress with alice's task id finds nothing",
        async () => {
          const p = (await post(s.app, '/internal/progress', { id_task: 'alice-task', id_live_preview: -1 }, as(BOB))).json();
          return [p.active, p.live_preview];
        },
        [false, null],
      ],
      ['bob: GET /v1/jobs/{id}/preview is 404', async () => (await s.app.inject({ url: `/v1/jobs/${id}/preview`, headers: as(BOB) })).statusCode, 404],
      ['bob: GET /v1/jobs/{id}/events is 404', async () => (await s.app.inject({ url: `/v1/jobs/${id}/events`, headers: as(BOB) })).statusCode, 404],
      [
        'alice: /sdapi/v1/progress shows her preview',
        async () => typeof (await s.app.inject({ url: '/sdapi/v1/progress', headers: as(ALICE) })).json().current_image,
        'string',
      ],
      [
        'alice: /internal/progress shows her preview',
        async () => (await post(s.app, '/internal/progress', { id_task: 'alice-task' }, as(ALICE))).json().live_preview?.slice(0, 22),
        'data:image/png;base64,',
      ],
      ['alice: native preview is a PNG', async () => (await s.app.inject({ url: `/v1/jobs/${id}/preview`, headers: as(ALICE) })).statusCode, 200],
      [
        'root (admin): /sdapi/v1/progress shows the running job',
        async () => typeof (await s.app.inject({ url: '/sdapi/v1/progress', headers: as(ROOT) })).json().current_image,
        'string',
      ],
      [
        "root (admin): /internal/progress finds alice's task",
        async () => (await post(s.app, '/internal/progress', { id_task: 'alice-task' }, as(ROOT))).json().active,
        true,
      ],
      ['root (admin): native preview', async () => (await s.app.inject({ url: `/v1/jobs/${id}/preview`, headers: as(ROOT) })).statusCode, 200],
    ];
    for (const [rule, run, expected] of rows) assert.deepEqual(await run(), expected, rule);
    await post(s.app, '/sdapi/v1/interrupt', {}, as(ALICE));
    assert.equal((await call).statusCode, 200);
  } finally {
    await s.close();
  }
});

test("interrupt and skip: a user stops only their own running or queued job; another user's call changes nothing; the admin stops anyone's", async () => {
  const s = await startTestServer({ keys, previewEvery: 1 });
  try {
    // Bob's call leaves Alice's running job alone, for both routes.
    const first = await startLong(s.app, ALICE, 't1');
    for (const route of ['/sdapi/v1/interrupt', '/sdapi/v1/skip']) {
      assert.equal((await post(s.app, route, {}, as(BOB))).statusCode, 200, route);
      await new Promise((r) => setTimeout(r, 100));
      assert.equal((await waitForState(s.app, first.id, ['running'], as(ALICE), 0)).state, 'running', `${route} by bob`);
      assert.equal((await s.app.inject({ url: '/sdapi/v1/progress', headers: as(BOB) })).json().state.interrupted, false);
    }
    // Alice's own interrupt ends her blocked call the A1111 way (200, no images, flagged interrupted).
    await post(s.app, '/sdapi/v1/interrupt', {}, as(ALICE));
    const ended = await first.call;
    assert.deepEqual([ended.statusCode, ended.json().images], [200, []]);
    assert.equal((await waitForState(s.app, first.id, ['cancelled'], as(ALICE))).state, 'cancelled');
    assert.equal((await s.app.inject({ url: '/sdapi/v1/progress', headers: as(ALICE) })).json().state.interrupted, true);

    // Bob runs, Alice waits behind him: Alice's skip cancels her queued job, Bob's keeps running.
    const bobs = await startLong(s.app, BOB, 't2');
    const queued = await post(s.app, '/v1/jobs', long, as(ALICE));
    assert.equal(queued.statusCode, 202);
    await post(s.app, '/sdapi/v1/skip', {}, as(ALICE));
    assert.equal((await waitForState(s.app, queued.json().id, ['cancelled'], as(ALICE))).state, 'cancelled');
    assert.equal((await waitForState(s.app, bobs.id, ['running'], as(BOB), 0)).state, 'running');

    // The admin's interrupt stops the running job whoever owns it.
    await post(s.app, '/sdapi/v1/interrupt', {}, as(ROOT));
    assert.deepEqual((await bobs.call).json().images, []);
    assert.equal((await waitForState(s.app, bobs.id, ['cancelled'], as(BOB))).state, 'cancelled');
  } finally {
    await s.close();
  }
});

test('A1111 options per key: each key sees and sets its own; the admin sets the shared defaults and model; unknown keys ignored; values bounded', async () => {
  const t = tempDir('kiln-iso-');
  addFakeModel(t.dir, 'second-model');
  const s = await startTestServer({ keys }, { dir: t.dir });
  const get = async (key: string) => (await s.app.inject({ url: '/sdapi/v1/options', headers: as(key) })).json();
  const quick = { prompt: 'x', steps: 1, width: 64, height: 64 };
  const format = async (key: string) => {
    const img = (await post(s.app, '/sdapi/v1/txt2img', quick, as(key))).json().images[0] as string;
    return Buffer.from(img, 'base64').subarray(0, 12).toString('latin1').includes('WEBP') ? 'webp' : 'png';
  };
  try {
    const models = (await s.app.inject({ url: '/sdapi/v1/sd-models', headers: as(ROOT) })).json() as Array<{ title: string; model_name: string }>;
    const second = models.find((m) => m.model_name === 'second-model')!;
    const first = models.find((m) => m.model_name === 'fake-model')!;

    assert.equal((await post(s.app, '/sdapi/v1/options', { samples_format: 'webp' }, as(ALICE))).statusCode, 200);
    assert.equal((await get(ALICE)).samples_format, 'webp');
    assert.equal((await get(BOB)).samples_format, 'png', "alice's setting is hers");
    assert.deepEqual([await format(ALICE), await format(BOB)], ['webp', 'png']);

    // A user's checkpoint choice is theirs; the admin's is the shared default for keys that chose none.
    await post(s.app, '/sdapi/v1/options', { sd_model_checkpoint: second.title }, as(ALICE));
    assert.deepEqual([(await get(ALICE)).sd_model_checkpoint, (await get(BOB)).sd_model_checkpoint], [second.title, first.title]);
    const aliceJob = (await post(s.app, '/sdapi/v1/txt2img', quick, as(ALICE))).json();
    assert.equal(JSON.parse(aliceJob.info).sd_model_name, 'second-model');
    await post(s.app, '/sdapi/v1/options', { sd_model_checkpoint: second.model_name }, as(ROOT));
    assert.equal((await get(BOB)).sd_model_checkpoint, second.title, 'the admin switched the shared model');
    await post(s.app, '/sdapi/v1/options', { sd_model_checkpoint: first.model_name }, as(ROOT));
    assert.deepEqual([(await get(ALICE)).sd_model_checkpoint, (await get(BOB)).sd_model_checkpoint], [second.title, first.title]);

    // override_settings kept with override_settings_restore_afterwards=false land in the caller's settings only.
    await post(
      s.app,
      '/sdapi/v1/txt2img',
      { ...quick, override_settings: { jpeg_quality: 55, junk: 'x' }, override_settings_restore_afterwards: false },
      as(BOB),
    );
    assert.deepEqual([(await get(BOB)).jpeg_quality, (await get(ALICE)).jpeg_quality, (await get(BOB)).junk], [55, 80, undefined]);

    // Unknown keys are not stored (a big value costs nothing) and are named in a header.
    const big = 'x'.repeat(2 * 1024 * 1024);
    for (let i = 0; i < 5; i++) {
      const r = await post(s.app, '/sdapi/v1/options', { [`outdir_${i}`]: big, live_previews_enable: false }, as(BOB));
      assert.equal(r.statusCode, 200);
      assert.equal(r.headers['x-kiln-ignored-options'], `outdir_${i},live_previews_enable`);
    }
    const after = await s.app.inject({ url: '/sdapi/v1/options', headers: as(BOB) });
    assert.ok(after.body.length < 2000, `GET stays small (${after.body.length} bytes)`);
    assert.equal(after.json().live_previews_enable, true, 'reported settings are the server’s');

    // Known keys: type and range checked, 422 naming the key, nothing applied from a refused request.
    let nested: unknown = 'deep';
    for (let i = 0; i < 10; i++) nested = { a: nested }; // deeper than --max-json-depth is refused at parsing
    const bad: Array<[Record<string, unknown>, string]> = [
      [{ jpeg_quality: 0 }, 'jpeg_quality'],
      [{ jpeg_quality: 101 }, 'jpeg_quality'],
      [{ CLIP_stop_at_last_layers: 99 }, 'CLIP_stop_at_last_layers'],
      [{ eta_noise_seed_delta: -1 }, 'eta_noise_seed_delta'],
      [{ samples_format: 'gif' }, 'samples_format'],
      [{ sd_vae: nested }, 'sd_vae'],
      [{ sd_vae: 'v'.repeat(300) }, 'sd_vae'],
      [{ sd_model_checkpoint: { deep: nested } }, 'sd_model_checkpoint'],
      [{ samples_format: 'webp', jpeg_quality: 'high' }, 'jpeg_quality'],
    ];
    for (const [body, field] of bad) {
      const r = await post(s.app, '/sdapi/v1/options', body, as(BOB));
      assert.equal(r.statusCode, 422, JSON.stringify(body).slice(0, 80));
      assert.match(r.json().detail, new RegExp(`^${field}: `), field);
    }
    assert.equal((await get(BOB)).samples_format, 'png', 'a refused request applies nothing');
    assert.equal((await s.app.inject({ url: '/sdapi/v1/options', headers: as(ALICE) })).statusCode, 200);
  } finally {
    await s.close();
    t.remove();
  }
});

test('key names: env and --api-key keys without names never share one; duplicate names, duplicate keys and reserved names are refused', async () => {
  const cfg = loadConfig({
    flags: { 'data-dir': '/tmp/kiln-unused', 'api-key': ['kkkkkkkkkkkk', 'llllllllllll'], 'admin-key': 'mmmmmmmmmmmm' },
    env: { KILN_API_KEYS: 'aaaaaaaaaaaa,bbbbbbbbbbbb', KILN_ADMIN_KEYS: 'cccccccccccc' },
  });
  assert.deepEqual(
    cfg.keys.map((k) => k.name),
    ['user-1', 'user-2', 'admin-1', 'cli-user-1', 'cli-user-2', 'cli-admin-1'],
  );
  const refused: Array<[Parameters<typeof loadConfig>[0], RegExp]> = [
    [{ env: { KILN_API_KEYS: 'x=aaaaaaaaaaaa' }, flags: { 'api-key': 'x=bbbbbbbbbbbb' } }, /API key name "x": is given to two keys/],
    [{ env: { KILN_API_KEYS: 'aaaaaaaaaaaa' }, file: { keys: [{ name: 'user-1', key: 'bbbbbbbbbbbb' }] } }, /"user-1": is given to two keys/],
    [{ env: { KILN_API_KEYS: 'aaaaaaaaaaaa', KILN_ADMIN_KEYS: 'aaaaaaaaaaaa' } }, /"admin-1": is the same key as "user-1"/],
    [{ env: { KILN_API_KEYS: 'anonymous=aaaaaaaaaaaa' } }, /"anonymous": is reserved/],
    [{ env: { KILN_API_KEYS: 'bad name=aaaaaaaaaaaa' } }, /"bad name": must be 1 to 64 letters/],
    [{ env: { KILN_WEBHOOK_ALLOW: '10.0.0.0/40' } }, /webhookAllow: webhook allowlist entry "10.0.0.0\/40"/],
  ];
  for (const [src, message] of refused) {
    assert.throws(() => loadConfig({ ...src, flags: { 'data-dir': '/tmp/kiln-unused', ...src?.flags }, env: src?.env ?? {} }), message);
  }

  // Through the server: the env key's job is invisible to the --api-key key, which had the same name before.
  const s = await startTestServer({ keys: cfg.keys });
  try {
    const job = (await post(s.app, '/v1/jobs', { ...long, steps: 1 }, as('aaaaaaaaaaaa'))).json();
    assert.equal((await s.app.inject({ url: `/v1/jobs/${job.id}`, headers: as('kkkkkkkkkkkk') })).statusCode, 404);
    assert.equal((await s.app.inject({ url: `/v1/jobs/${job.id}`, headers: as('aaaaaaaaaaaa') })).statusCode, 200);
  } finally {
    await s.close();
  }
});

test('wrong and missing keys: 429 with Retry-After per client address after the limit; valid keys and other addresses are unaffected', async () => {
  const s = await startTestServer({ keys, authFailuresPerMinute: 5 });
  const from = (remoteAddress: string, headers: Record<string, string> = {}) => s.app.inject({ url: '/v1/jobs', remoteAddress, headers });
  try {
    const codes: number[] = [];
    for (let i = 0; i < 4; i++) codes.push((await from('203.0.113.7', as(`guess-${i}-0123456789`))).statusCode);
    codes.push((await from('203.0.113.7')).statusCode, (await from('203.0.113.7')).statusCode);
    assert.deepEqual(codes, [401, 401, 401, 401, 401, 429], 'missing keys count too');
    const limited = await from('203.0.113.7', as('another-guess-0123'));
    assert.equal(limited.statusCode, 429);
    assert.equal(limited.json().error.code, 'rate_limited');
    const retry = Number(limited.headers['retry-after']);
    assert.ok(retry >= 1 && retry <= 60, `Retry-After ${retry}`);
    assert.equal((await from('203.0.113.7', as(ALICE))).statusCode, 200, 'a valid key from the same address still works');
    assert.equal((await from('198.51.100.9', as('wrong-0123456789'))).statusCode, 401, 'another address has its own bucket');
    for (let i = 0; i < 6; i++) await from('2001:db8:1:2::a', as('wrong-0123456789'));
    assert.equal((await from('2001:db8:1:2:ffff::1')).statusCode, 429, 'IPv6 clients share a bucket per /64');
    assert.equal((await s.app.inject({ url: '/health', remoteAddress: '203.0.113.7' })).statusCode, 200, 'public routes are not limited');
  } finally {
    await s.close();
  }
  assert.equal(clientBucket('::ffff:10.1.2.3'), '10.1.2.3');
  assert.equal(clientBucket('2001:db8::1'), '2001:db8:0:0::/64');
  const limiter = new AuthFailureLimiter(1, 100);
  for (let i = 0; i < 1000; i++) limiter.fail(`10.0.${i >> 8}.${i & 255}`, 0);
  assert.equal(limiter.tracked, 100, 'tracked addresses are bounded');
  assert.equal(limiter.fail('10.0.3.231', 0), 60, 'the newest windows are kept (over the limit: wait 60 s)');
  assert.equal(limiter.fail('10.0.3.231', 60_000), undefined, 'a window ends after a minute');
});

test('webhook targets at submission: loopback, private and metadata refused with 400 naming webhook on every surface; an allowlisted loopback receiver gets its POST', async () => {
  const bodies: unknown[] = [];
  const hook = createServer((req, res) => {
    let raw = '';
    req.on('data', (c) => {
      raw += c;
    });
    req.on('end', () => {
      bodies.push(JSON.parse(raw));
      res.end();
    });
  });
  await new Promise<void>((r) => hook.listen(0, '127.0.0.1', () => r()));
  const url = `http://127.0.0.1:${(hook.address() as AddressInfo).port}/hook`;
  const job = { prompt: 'hooked', steps: 1, width: 64, height: 64 };
  const closed = await startTestServer({ keys });
  try {
    for (const target of [
      url,
      'http://localhost:9/x',
      'http://[::1]/x',
      'http://169.254.169.254/latest/meta-data/',
      'http://10.0.0.1/',
      'http://0x7f000001/',
    ]) {
      const native = await post(closed.app, '/v1/jobs', { ...job, webhook: target }, as(ALICE));
      assert.equal(native.statusCode, 400, target);
      assert.equal(native.json().error.field, 'webhook');
      assert.match(native.json().error.message, /^webhook: the target .* webhookAllow/);
      const runpod = await post(closed.app, '/run', { input: job, webhook: target }, as(ALICE));
      assert.equal(runpod.statusCode, 400, target);
      assert.match(runpod.json().error, /^webhook: /);
    }
    assert.equal((await closed.app.inject({ url: '/v1/jobs', headers: as(ALICE) })).json().jobs.length, 0, 'nothing was queued');
  } finally {
    await closed.close();
  }
  const open = await startTestServer({ keys, webhookAllow: ['127.0.0.1'] });
  try {
    const r = await post(open.app, '/v1/jobs', { ...job, webhook: url }, as(ALICE));
    assert.equal(r.statusCode, 202, r.body);
    await waitForState(open.app, r.json().id, ['succeeded'], as(ALICE));
    await open.app.kiln.webhooks.drain();
    assert.equal((bodies[0] as { id: string }).id, r.json().id);
  } finally {
    await open.close();
    await new Promise<void>((r) => hook.close(() => r()));
  }
});
