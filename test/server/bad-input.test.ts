// Issue 10 item 2, "bounds on every input", as a table: one row per bound and surface, each asserting the 4xx
// status and that the answer names the field. RunPod is the exception by contract: a RunPod worker answers a
// refused input as a FAILED job (HTTP 200), so those rows assert FAILED with the field named in `error`.
// The /sdapi/v1/options store's bounds are tested with the options code (per-key isolation).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance } from 'fastify';
import { buildApp } from '../../src/server/app.ts';
import { loadConfig, testConfig } from '../../src/server/config.ts';
import { KEPT_INPUT_BYTES } from '../../src/server/compat/runpod.ts';
import { tempDir } from '../queue/helpers.ts';
import { startTestServer, waitForState } from './helpers.ts';

process.env.KILN_FAKE_STEP_MS = '1';

const TINY = fileURLToPath(new URL('../fixtures/tiny-sd1', import.meta.url));
const native = { prompt: 'a cat', width: 64, height: 64, steps: 2 };
const a1111 = { prompt: 'a cat', width: 64, height: 64, steps: 2 };
/** A 1x1 PNG, enough for an img2img request to reach its other checks. */
const PIXEL_PNG = 'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==';
const DEEP_ARRAY = `${'['.repeat(10_000)}${']'.repeat(10_000)}`;
const DEEP_OBJECT = `${'{"a":'.repeat(10_000)}1${'}'.repeat(10_000)}`;

interface Row {
  item: string;
  method?: 'POST' | 'GET';
  url: string;
  body?: unknown;
  raw?: { payload: string | Buffer; contentType: string };
  /** The HTTP status; RunPod rows expect 200 with status FAILED (see the header). */
  status: number;
  field: string;
  runpodFailed?: boolean;
}

function multipart(fields: Record<string, string>) {
  const b = 'xxBOUNDARYxx';
  const parts = Object.entries(fields).map(([k, v]) => `--${b}\r\nContent-Disposition: form-data; name="${k}"\r\n\r\n${v}\r\n`);
  return { payload: `${parts.join('')}--${b}--\r\n`, contentType: `multipart/form-data; boundary=${b}` };
}

function cutShort(form: { payload: string; contentType: string }) {
  return { ...form, payload: form.payload.slice(0, form.payload.lastIndexOf('--xxBOUNDARYxx--')) };
}

/** Sends a row; returns a failure description, or undefined when the row holds. */
async function check(app: FastifyInstance, row: Row): Promise<string | undefined> {
  const method = row.method ?? 'POST';
  const r = row.raw
    ? await app.inject({ method, url: row.url, payload: row.raw.payload, headers: { 'content-type': row.raw.contentType } })
    : await app.inject({ method, url: row.url, ...(row.body !== undefined ? { payload: row.body as object } : {}) });
  const text = r.body;
  if (row.runpodFailed) {
    const body = r.json();
    if (r.statusCode !== 200 || body.status !== 'FAILED') return `${row.item} ${row.url}: got ${r.statusCode} ${text.slice(0, 200)}`;
    if (!String(body.error).includes(row.field)) return `${row.item} ${row.url}: error does not name ${row.field}: ${body.error}`;
    return undefined;
  }
  if (r.statusCode !== row.status) return `${row.item} ${row.url}: expected ${row.status}, got ${r.statusCode} ${text.slice(0, 200)}`;
  if (!text.includes(row.field)) return `${row.item} ${row.url}: answer does not name ${row.field}: ${text.slice(0, 200)}`;
  return undefined;
}

test('bad-input table: every bound of issue 10 item 2 answers 4xx naming the field, on every surface (fake engine)', async () => {
  const s = await startTestServer();
  try {
    const rows: Row[] = [
      // seed_resize_from_w/h: bounded like width/height everywhere they are accepted.
      {
        item: 'seed resize',
        url: '/v1/jobs',
        body: { ...native, seed_resize_from_w: 40000, seed_resize_from_h: 64 },
        status: 400,
        field: 'seed_resize_from_w',
      },
      {
        item: 'seed resize',
        url: '/v1/jobs',
        body: { ...native, seed_resize_from_w: 64, seed_resize_from_h: 40000 },
        status: 400,
        field: 'seed_resize_from_h',
      },
      {
        item: 'seed resize',
        url: '/v1/generate',
        body: { ...native, seed_resize_from_w: 40000, seed_resize_from_h: 40000 },
        status: 400,
        field: 'seed_resize_from_w',
      },
      {
        item: 'seed resize',
        url: '/v1/jobs',
        raw: multipart({ prompt: 'x', width: '64', height: '64', steps: '2', seed_resize_from_w: '40000', seed_resize_from_h: '64' }),
        status: 400,
        field: 'seed_resize_from_w',
      },
      { item: 'seed resize', url: '/v1/jobs', body: { ...native, seed_resize_from_w: 64 }, status: 400, field: 'seed_resize_from_h' },
      {
        item: 'seed resize',
        url: '/sdapi/v1/txt2img',
        body: { ...a1111, seed_resize_from_w: 40000, seed_resize_from_h: 40000 },
        status: 400,
        field: 'seed_resize_from_w',
      },
      {
        item: 'seed resize',
        url: '/sdapi/v1/txt2img',
        body: { ...a1111, seed_resize_from_w: 64, seed_resize_from_h: 40000 },
        status: 400,
        field: 'seed_resize_from_h',
      },
      {
        item: 'seed resize',
        url: '/sdapi/v1/img2img',
        body: { ...a1111, init_images: [PIXEL_PNG], seed_resize_from_w: 40000, seed_resize_from_h: 40000 },
        status: 400,
        field: 'seed_resize_from_w',
      },
      {
        item: 'seed resize',
        url: '/alpha/v1/txt2img',
        body: { ...a1111, seed_resize_from_w: 40000, seed_resize_from_h: 40000 },
        status: 400,
        field: 'seed_resize_from_w',
      },
      {
        item: 'seed resize',
        url: '/v2/endpoint/runsync',
        body: { input: { ...a1111, seed_resize_from_w: 40000, seed_resize_from_h: 40000 } },
        status: 200,
        field: 'seed_resize_from_w',
        runpodFailed: true,
      },
      {
        item: 'seed resize',
        url: '/runsync',
        body: { input: { ...a1111, seed_resize_from_w: 40000, seed_resize_from_h: 40000 } },
        status: 200,
        field: 'seed_resize_from_w',
        runpodFailed: true,
      },
      // Image quality 0 (and beyond 100).
      { item: 'quality', url: '/v1/jobs', body: { ...native, output: { format: 'jpeg', quality: 0 } }, status: 400, field: 'output.quality' },
      { item: 'quality', url: '/v1/jobs', body: { ...native, output: { format: 'jpeg', quality: 101 } }, status: 400, field: 'output.quality' },
      {
        item: 'quality',
        url: '/sdapi/v1/txt2img',
        body: { ...a1111, override_settings: { samples_format: 'jpg', jpeg_quality: 0 } },
        status: 400,
        field: 'override_settings.jpeg_quality',
      },
      {
        item: 'quality',
        url: '/sdapi/v1/txt2img',
        body: { ...a1111, override_settings: { jpeg_quality: 'best' } },
        status: 400,
        field: 'override_settings.jpeg_quality',
      },
      {
        item: 'quality',
        url: '/sdapi/v1/img2img',
        body: { ...a1111, init_images: [], override_settings: { jpeg_quality: 0 } },
        status: 400,
        field: 'override_settings.jpeg_quality',
      },
      {
        item: 'quality',
        url: '/v1/images/generations',
        body: { prompt: 'x', size: '64x64', output_format: 'jpeg', output_compression: 101 },
        status: 400,
        field: 'output_compression',
      },
      {
        item: 'quality',
        url: '/v1/images/generations',
        body: { prompt: 'x', size: '64x64', output_compression: -1 },
        status: 400,
        field: 'output_compression',
      },
      { item: 'quality', url: '/alpha/v1/txt2img', body: { ...a1111, override_settings: { jpeg_quality: 0 } }, status: 400, field: 'jpeg_quality' },
      { item: 'quality', url: '/txt2img', body: { prompt: 'x', width: 64, height: 64, fileType: 'jpg', jpeg_quality: 0 }, status: 422, field: 'jpeg_quality' },
      // clip_skip beyond what any supported text encoder has (the per-model bound is the real-engine test below).
      { item: 'clip_skip', url: '/v1/jobs', body: { ...native, clip_skip: 13 }, status: 400, field: 'clip_skip' },
      { item: 'clip_skip', url: '/v1/jobs', body: { ...native, clip_skip: 0 }, status: 400, field: 'clip_skip' },
      {
        item: 'clip_skip',
        url: '/sdapi/v1/txt2img',
        body: { ...a1111, override_settings: { CLIP_stop_at_last_layers: 50 } },
        status: 400,
        field: 'CLIP_stop_at_last_layers',
      },
      {
        item: 'clip_skip',
        url: '/sdapi/v1/txt2img',
        body: { ...a1111, override_settings: { CLIP_stop_at_last_layers: 2.5 } },
        status: 400,
        field: 'CLIP_stop_at_last_layers',
      },
      {
        item: 'clip_skip',
        url: '/v1/images/generations',
        body: { prompt: 'x <sd_cpp_extra_args>{"clip_skip": 50}</sd_cpp_extra_args>', size: '64x64' },
        status: 400,
        field: 'clip_skip',
      },
      {
        item: 'clip_skip',
        url: '/runsync',
        body: { input: { ...a1111, override_settings: { CLIP_stop_at_last_layers: 99 } } },
        status: 200,
        field: 'CLIP_stop_at_last_layers',
        runpodFailed: true,
      },
      // A multipart body cut short (no closing boundary) is the client's error on every surface that reads forms.
      { item: 'multipart', url: '/v1/jobs', raw: cutShort(multipart({ prompt: 'x' })), status: 400, field: 'body' },
      { item: 'multipart', url: '/v1/images/edits', raw: cutShort(multipart({ prompt: 'x' })), status: 400, field: 'body' },
      { item: 'multipart', url: '/v1/images/variations', raw: cutShort(multipart({ n: '1' })), status: 400, field: 'body' },
      { item: 'multipart', url: '/post_config?prompt=x', raw: cutShort(multipart({ x: '1' })), status: 400, field: 'body' },
      // JSON-valued multipart fields are bounded like a JSON body.
      { item: 'deep JSON', url: '/v1/jobs', raw: multipart({ prompt: 'x', prompts: DEEP_ARRAY }), status: 400, field: 'prompts' },
      { item: 'deep JSON', url: '/v1/jobs', raw: multipart({ request: DEEP_OBJECT }), status: 400, field: 'request' },
      { item: 'deep JSON', url: '/v1/jobs', raw: multipart({ prompt: 'x', output: DEEP_OBJECT }), status: 400, field: 'output' },
    ];

    // Deeply nested JSON -> 400 naming the body, on every route of /docs/json that takes a body.
    const doc = (await s.app.inject('/docs/json')).json() as { paths: Record<string, Record<string, unknown>> };
    let bodyRoutes = 0;
    for (const [path, methods] of Object.entries(doc.paths)) {
      if (!('post' in methods)) continue;
      bodyRoutes++;
      const url = path.replace(/\{[^}]+\}/g, 'x');
      for (const payload of [DEEP_ARRAY, DEEP_OBJECT])
        rows.push({ item: 'deep JSON', url, raw: { payload, contentType: 'application/json' }, status: 400, field: 'body' });
    }
    assert.ok(bodyRoutes >= 20, `only ${bodyRoutes} POST routes in /docs/json`);
    for (const url of ['/run', '/alpha/v1/txt2img', '/sdapi/v1/txt2img', '/sdapi/v1/options']) {
      assert.ok(
        rows.some((r) => r.item === 'deep JSON' && r.url === url),
        `${url} is covered`,
      );
    }

    const failures: string[] = [];
    for (const row of rows) {
      const f = await check(s.app, row);
      if (f) failures.push(f);
    }
    assert.deepEqual(failures, []);
    console.log(`bad-input table: ${rows.length} rows (${bodyRoutes} POST routes x 2 nesting bombs), 0 failures`);

    // OpenAI documents output_compression 0-100: 0 is valid there and means the encoder's lowest quality.
    const zero = await s.app.inject({
      method: 'POST',
      url: '/v1/images/generations',
      payload: { prompt: 'x', size: '64x64', output_format: 'jpeg', output_compression: 0 },
    });
    assert.equal(zero.statusCode, 200, zero.body);
    // The nesting limit leaves ordinary nesting alone, and the server still generates after all of the above.
    const ok = await s.app.inject({ method: 'POST', url: '/v1/generate', payload: { ...native, loras: [], output: { format: 'png' } } });
    assert.equal(ok.statusCode, 200, ok.body);
  } finally {
    await s.close();
  }
});

test('bad-input table: the nesting limit is --max-json-depth, counted outside strings', async () => {
  const s = await startTestServer({ http: { maxJsonDepth: 3 } });
  try {
    // Depth 3 with brackets inside a string: accepted.
    const ok = await s.app.inject({ method: 'POST', url: '/v1/generate', payload: { ...native, prompt: '[[[[{{{{', output: { format: 'png' } } });
    assert.equal(ok.statusCode, 200, ok.body);
    const deep = await s.app.inject({ method: 'POST', url: '/v1/generate', payload: { ...native, loras: [{ name: 'x', weight: [[1]] }] } });
    assert.equal(deep.statusCode, 400);
    assert.equal(deep.json().error.field, 'body');
    assert.match(deep.json().error.message, /nested more than 3 levels/);
  } finally {
    await s.close();
  }
});

test('bad-input table: RunPod keeps a refused input for /retry only up to a bound, and retention removes it', async () => {
  const s = await startTestServer({ queue: { retentionMs: 1 } });
  try {
    const small = await s.app.inject({ method: 'POST', url: '/run', payload: { input: { ...a1111, sampler_name: 'Nope' } } });
    const big = await s.app.inject({
      method: 'POST',
      url: '/run',
      payload: { input: { ...a1111, sampler_name: 'Nope', init_images: ['A'.repeat(KEPT_INPUT_BYTES + 1)] } },
    });
    assert.equal(small.statusCode, 200, small.body);
    assert.equal(big.statusCode, 200, big.body);
    const smallJob = await s.app.kiln.queue.get(small.json().id);
    const bigJob = await s.app.kiln.queue.get(big.json().id);
    assert.ok(smallJob && bigJob);
    assert.ok((smallJob.extra.runpod as { input?: unknown }).input, 'a small refused input is kept for /retry');
    const bigExtra = bigJob.extra.runpod as { input?: unknown; inputBytes?: number };
    assert.equal(bigExtra.input, undefined, 'a large refused input is not kept');
    assert.ok(JSON.stringify(bigJob.extra).length < 1024, `the record stays small: ${JSON.stringify(bigJob.extra).length} bytes`);
    const retry = await s.app.inject({ method: 'POST', url: `/retry/${big.json().id}` });
    assert.equal(retry.statusCode, 400);
    assert.match(retry.body, /not kept; submit it again/);
    // Retention: both refused records (and what they hold) go at cleanup.
    await new Promise((r) => setTimeout(r, 5));
    await s.app.kiln.queue.cleanup();
    assert.equal(await s.app.kiln.queue.get(small.json().id), undefined);
    assert.equal(await s.app.kiln.queue.get(big.json().id), undefined);
  } finally {
    await s.close();
  }
});

/** Opens a raw connection, writes `data`, and resolves with what came back once the server closes it. */
function sendAndAwaitClose(port: number, data: string, giveUpMs: number): Promise<{ reply: string; closedMs: number }> {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const socket = connect(port, '127.0.0.1', () => socket.write(data));
    let reply = '';
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`the server kept a stalled connection open for ${giveUpMs} ms; got ${JSON.stringify(reply)}`));
    }, giveUpMs);
    socket.on('data', (d) => (reply += d));
    socket.on('error', () => undefined);
    socket.on('close', () => {
      clearTimeout(timer);
      resolve({ reply, closedMs: Date.now() - started });
    });
  });
}

test('bad-input table: the HTTP timeouts are options, and an impossible pair is refused at start', () => {
  const cfg = loadConfig({ flags: { 'data-dir': '/tmp/kiln-unused', 'headers-timeout': '5', 'request-timeout': '30', 'max-json-depth': '16' }, env: {} });
  assert.deepEqual([cfg.http.headersTimeoutMs, cfg.http.requestTimeoutMs, cfg.http.maxJsonDepth], [5000, 30_000, 16]);
  assert.equal(loadConfig({ flags: { 'data-dir': '/tmp/kiln-unused' }, env: {} }).http.idleTimeoutMs, 0);
  assert.throws(
    () => loadConfig({ flags: { 'data-dir': '/tmp/kiln-unused', 'headers-timeout': '60', 'request-timeout': '30' }, env: {} }),
    /headersTimeoutMs.*request timeout/,
  );
  assert.throws(() => loadConfig({ flags: { 'data-dir': '/tmp/kiln-unused', 'max-json-depth': '0' }, env: {} }), /maxJsonDepth/);
});

test('bad-input table: a client that stalls in the headers, the body or between requests is cut off', async () => {
  const s = await startTestServer({ http: { headersTimeoutMs: 300, requestTimeoutMs: 600, keepAliveTimeoutMs: 300 } });
  try {
    await s.app.listen({ port: 0, host: '127.0.0.1' });
    const port = (s.app.server.address() as { port: number }).port;
    // Generous upper bounds: the point is "closed", not how fast.
    const headers = await sendAndAwaitClose(port, 'POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: app', 15_000);
    assert.match(headers.reply, /^HTTP\/1.1 408/, 'half a header block: 408');
    const body = await sendAndAwaitClose(
      port,
      'POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"prompt": "x"',
      15_000,
    );
    assert.match(body.reply, /^HTTP\/1.1 408/, 'half a body: 408');
    const idle = await sendAndAwaitClose(port, 'GET /health HTTP/1.1\r\nHost: x\r\n\r\n', 15_000);
    assert.match(idle.reply, /^HTTP\/1.1 200/, 'an answered keep-alive connection is closed when idle');
    console.log(`stalled connections closed after: headers ${headers.closedMs} ms, body ${body.closedMs} ms, idle keep-alive ${idle.closedMs} ms`);
    assert.equal((await s.app.inject('/health')).statusCode, 200);
  } finally {
    await s.close();
  }
});

test('bad-input table: clip_skip beyond the loaded model text encoder layers is 400 (sync) or a failed job with code input (async)', async () => {
  const t = tempDir('kiln-bounds-real-');
  const app = await buildApp(testConfig(t.dir, { model: TINY }));
  try {
    await app.ready();
    await app.kiln.engineReady;
    // The tiny fixture's text encoder has 5 layers.
    const job = { ...native, seed: 1 };
    const sync = await app.inject({ method: 'POST', url: '/v1/generate', payload: { ...job, clip_skip: 6 } });
    assert.equal(sync.statusCode, 400, sync.body);
    assert.equal(sync.json().error.field, 'clip_skip');
    assert.match(sync.json().error.message, /clip_skip must be an integer from 1 to 5/);

    const a1 = await app.inject({ method: 'POST', url: '/sdapi/v1/txt2img', payload: { ...a1111, override_settings: { CLIP_stop_at_last_layers: 6 } } });
    assert.equal(a1.statusCode, 400, a1.body);
    assert.match(a1.body, /clip_skip/);

    const oa = await app.inject({
      method: 'POST',
      url: '/v1/images/generations',
      payload: { prompt: 'x <sd_cpp_extra_args>{"clip_skip": 6, "steps": 2}</sd_cpp_extra_args>', size: '64x64' },
    });
    assert.equal(oa.statusCode, 400, oa.body);
    assert.match(oa.body, /clip_skip/);

    const alpha = await app.inject({ method: 'POST', url: '/alpha/v1/txt2img', payload: { ...a1111, override_settings: { CLIP_stop_at_last_layers: 6 } } });
    assert.equal(alpha.statusCode, 400, alpha.body);
    assert.match(alpha.body, /clip_skip/);

    const rp = await app.inject({ method: 'POST', url: '/runsync', payload: { input: { ...a1111, override_settings: { CLIP_stop_at_last_layers: 6 } } } });
    assert.equal(rp.json().status, 'FAILED', rp.body);
    assert.match(rp.json().error, /clip_skip/);

    const sub = await app.inject({ method: 'POST', url: '/v1/jobs', payload: { ...job, clip_skip: 6 } });
    assert.equal(sub.statusCode, 202, sub.body);
    const failed = await waitForState(app, sub.json().id, ['failed', 'succeeded'], {}, 60_000);
    assert.equal(failed.state, 'failed');
    assert.equal(failed.error.code, 'input');
    assert.match(failed.error.message, /clip_skip/);

    const edge = await app.inject({ method: 'POST', url: '/v1/generate', payload: { ...job, clip_skip: 5 } });
    assert.equal(edge.statusCode, 200, `clip_skip at the model's layer count works: ${edge.body.slice(0, 200)}`);
  } finally {
    await app.close();
    t.remove();
  }
});
