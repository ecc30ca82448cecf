// RunPod serverless surface with seed 000's payloads, through HTTP against the real engine (tiny SD1).
// Seed 000's examples are used as written, with the host and port changed (the /v2/{endpoint}/ path stays);
// their 1024-pixel sizes take minutes on CPU, so examples that state a size get the smallest faithful variant
// (64 px or so, same aspect ratio), and the minimal examples' 1024x1024 default is checked on the queued job.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import sharp from 'sharp';
import { readInfotext } from '../../../src/storage/encode.ts';
import { startCompatServer, type CompatServer } from './helpers.ts';

const KEY = 'YOUR_API_KEY';
const auth = { authorization: `Bearer ${KEY}`, 'content-type': 'application/json' };
const EP = '/v2/YOUR_ENDPOINT_ID';

let s: CompatServer;
before(async () => {
  s = await startCompatServer({ keys: [{ name: 'runpod-user', key: KEY, role: 'user' }] });
});
after(async () => {
  await s.close();
});

const post = (url: string, payload: unknown, headers: Record<string, string> = auth) =>
  s.app.inject({ method: 'POST', url, payload: payload as object, headers });
const get = (url: string, headers: Record<string, string> = auth) => s.app.inject({ method: 'GET', url, headers });

async function expectCompleted(r: Awaited<ReturnType<typeof post>>) {
  assert.equal(r.statusCode, 200, r.body);
  const body = r.json();
  assert.equal(body.status, 'COMPLETED', r.body.slice(0, 500));
  assert.ok(Number.isInteger(body.delayTime) && body.delayTime >= 0);
  assert.ok(Number.isInteger(body.executionTime) && body.executionTime > 0);
  assert.equal(typeof body.id, 'string');
  const out = body.output;
  assert.equal(out.status, 'success');
  assert.equal(out.url, `data:image/png;base64,${out.image_base64}`);
  assert.match(out.filename, /^alpha_\d+_[0-9a-f-]{36}\.png$/);
  // Step 5 of the seed: save output.png from image_base64.
  const png = Buffer.from(out.image_base64, 'base64');
  assert.equal((await sharp(png).metadata()).format, 'png');
  assert.equal(await readInfotext(png), out.info);
  return { body, out, png };
}

test('seed 000 "Request Body (Full Configuration)" via /runsync (64x64 instead of 1024x1024)', async () => {
  const input = {
    prompt: 'a red apple on a wooden table, high quality, detailed',
    negative_prompt: 'bad, ugly, blurry, low quality',
    seed: 12345,
    steps: 30,
    sampler_name: 'Euler a',
    scheduler: 'Karras',
    cfg_scale: 7.0,
    width: 64,
    height: 64,
    batch_size: 1,
    n_iter: 1,
    restore_faces: false,
    tiling: false,
    subseed: -1,
    subseed_strength: 0,
    seed_resize_from_h: -1,
    seed_resize_from_w: -1,
    eta: null,
    s_churn: 0,
    s_tmax: null,
    s_tmin: 0,
    s_noise: 1,
    override_settings: {},
    refiner_checkpoint: null,
    refiner_switch_at: null,
  };
  const { out, png } = await expectCompleted(await post(`${EP}/runsync`, { input }));
  assert.equal(
    out.info.split('\n').slice(0, 2).join('\n'),
    'a red apple on a wooden table, high quality, detailed\nNegative prompt: bad, ugly, blurry, low quality',
  );
  assert.match(out.info, /Steps: 30, Sampler: Euler a, Schedule type: Karras, CFG scale: 7, Seed: 12345, Size: 64x64/);
  assert.deepEqual([(await sharp(png).metadata()).width, (await sharp(png).metadata()).height], [64, 64]);
});

test('seed 000 Test 2 (custom parameters) and Test 4 (PowerShell body) at 64x64', async () => {
  const t2 = await expectCompleted(
    await post(`${EP}/runsync`, {
      input: {
        prompt: 'a red apple on a wooden table, high quality',
        negative_prompt: 'bad quality, blurry, distorted',
        seed: 42,
        steps: 30,
        cfg_scale: 7.5,
        sampler_name: 'Euler a',
        width: 64,
        height: 64,
      },
    }),
  );
  // The seed's scheduler default (Karras) applies when the request names none.
  assert.match(
    t2.out.info,
    /Negative prompt: bad quality, blurry, distorted\nSteps: 30, Sampler: Euler a, Schedule type: Karras, CFG scale: 7.5, Seed: 42, Size: 64x64/,
  );
  const t4 = await expectCompleted(
    await post(`${EP}/runsync`, {
      input: {
        prompt: 'a cute cat wearing a hat, studio photography',
        negative_prompt: 'bad quality, blurry',
        seed: 12345,
        steps: 25,
        cfg_scale: 6.5,
        sampler_name: 'Euler a',
        width: 64,
        height: 64,
      },
    }),
  );
  assert.match(t4.out.info, /Steps: 25, Sampler: Euler a, Schedule type: Karras, CFG scale: 6.5, Seed: 12345/);
});

test('seed 000 Test 3 (legacy "DPM++ 2M Karras", 1024x768 -> 96x72) and Test 5 (Python, "DPM++ 2M SDE Karras")', async () => {
  const t3 = await expectCompleted(
    await post(`${EP}/runsync`, {
      input: {
        prompt: 'a majestic dragon flying over mountains, epic fantasy art',
        negative_prompt: 'bad, ugly, blurry, low quality, deformed',
        seed: 999,
        steps: 40,
        sampler_name: 'DPM++ 2M Karras',
        scheduler: 'Karras',
        cfg_scale: 8.0,
        width: 96,
        height: 72,
        batch_size: 1,
      },
    }),
  );
  assert.match(t3.out.info, /Steps: 40, Sampler: DPM\+\+ 2M, Schedule type: Karras, CFG scale: 8, Seed: 999, Size: 96x72/);
  const meta = await sharp(t3.png).metadata();
  assert.deepEqual([meta.width, meta.height], [96, 72]);
  const t5 = await expectCompleted(
    await post(`${EP}/runsync`, {
      input: {
        prompt: 'a beautiful sunset over the ocean, vibrant colors',
        negative_prompt: 'bad quality, blurry, dark',
        seed: 777,
        steps: 35,
        cfg_scale: 7.0,
        sampler_name: 'DPM++ 2M SDE Karras',
        width: 64,
        height: 64,
      },
    }),
  );
  assert.match(t5.out.info, /Steps: 35, Sampler: DPM\+\+ 2M SDE, Schedule type: Karras, CFG scale: 7, Seed: 777/);
});

test('seed 000 minimal requests get the documented defaults (1024x1024, 20 steps, DPM++ 2M SDE, Karras, CFG 5, seed 12345, "bad, ugly")', async () => {
  // A long job in front keeps the 1024x1024 ones queued, so their specs can be read without running them.
  const blocker = (await post('/run', { input: { prompt: 'blocker', steps: 150, width: 64, height: 64 } })).json();
  for (let i = 0; i < 500 && (await get(`/status/${blocker.id}`)).json().status !== 'IN_PROGRESS'; i++) await new Promise((r) => setTimeout(r, 5));
  const ids = [];
  for (const prompt of ['a red apple, high quality', 'a red apple on a wooden table, high quality']) {
    const r = await post(`${EP}/run`, { input: { prompt } });
    assert.equal(r.statusCode, 200);
    assert.equal(r.json().status, 'IN_QUEUE');
    ids.push(r.json().id);
  }
  for (const id of ids) {
    const native = (await get(`/v1/jobs/${id}`)).json();
    assert.deepEqual(
      { ...native.request, output: undefined, model: undefined },
      {
        type: 'txt2img',
        width: 1024,
        height: 1024,
        steps: 20,
        cfg_scale: 5,
        sampler: 'DPM++ 2M SDE',
        schedule: 'Karras',
        images: 1,
        output: undefined,
        model: undefined,
      },
    );
    assert.deepEqual(native.seeds, [12345]);
    const status = (await get(`${EP}/status/${id}`)).json();
    assert.equal(status.status, 'IN_QUEUE');
    assert.ok(status.delayTime >= 0);
    assert.equal(status.executionTime, 0);
  }
  const purge = (await post(`${EP}/purge-queue`, {})).json();
  assert.deepEqual(purge, { removed: 2, status: 'completed' });
  assert.equal((await get(`${EP}/status/${ids[0]}`)).json().status, 'CANCELLED');
  const cancelled = (await post(`/cancel/${blocker.id}`, {})).json();
  assert.deepEqual(cancelled, { id: blocker.id, status: 'CANCELLED' });
});

test('/run then /status polling, /stream hands the output once; /runsync?wait returns a running job for polling', async () => {
  const r = (await post('/run', { input: { prompt: 'a kite', steps: 4, width: 64, height: 64 } })).json();
  let status: any;
  for (let i = 0; i < 500; i++) {
    status = (await get(`/status/${r.id}`)).json();
    if (status.status === 'COMPLETED') break;
    assert.ok(['IN_QUEUE', 'IN_PROGRESS'].includes(status.status), status.status);
    await new Promise((res) => setTimeout(res, 10));
  }
  assert.equal(status.status, 'COMPLETED');
  const stream1 = (await get(`/stream/${r.id}`)).json();
  assert.equal(stream1.stream.length, 1);
  assert.equal(stream1.stream[0].output.image_base64, status.output.image_base64);
  assert.deepEqual((await get(`/stream/${r.id}`)).json(), { status: 'COMPLETED', stream: [] });

  const slow = (await post(`${EP}/runsync?wait=1000`, { input: { prompt: 'slow', steps: 150, width: 64, height: 128 } })).json();
  assert.ok(['IN_QUEUE', 'IN_PROGRESS'].includes(slow.status), JSON.stringify(slow));
  assert.equal(slow.output, undefined);
  await post(`${EP}/cancel/${slow.id}`, {});
  assert.equal((await get(`${EP}/status/${slow.id}`)).json().status, 'CANCELLED');
});

test('failures: rejected input is a FAILED job with the reason; retry re-runs a FAILED job under the same id', async () => {
  const missing = (await post(`${EP}/runsync`, { input: { negative_prompt: 'x' } })).json();
  assert.equal(missing.status, 'FAILED');
  assert.match(missing.error, /Missing prompt/);
  assert.equal((await get(`${EP}/status/${missing.id}`)).json().status, 'FAILED');

  for (const [input, why] of [
    [{ prompt: 'x', restore_faces: true }, /restore_faces: face restoration with CodeFormer needs files that are not installed/],
    [{ prompt: 'x', refiner_checkpoint: 'sd_xl_refiner_1.0' }, /Could not find checkpoint with name sd_xl_refiner_1.0/],
    [{ prompt: 'x', sampler_name: 'Bogus' }, /unknown sampler "Bogus"/],
    [{ prompt: 'x', steps: 'thirty' }, /input.steps: must be integer/],
  ] as const) {
    const r = (await post(`${EP}/runsync`, { input })).json();
    assert.equal(r.status, 'FAILED', JSON.stringify(input));
    assert.match(r.error, why);
  }

  const failed = (await post(`${EP}/runsync`, { input: { prompt: 'x', steps: 2, width: 64, height: 64, sampler_name: 'Bogus' } })).json();
  assert.equal((await post(`${EP}/retry/${failed.id}`, {})).json().status, 'FAILED', 'the same bad input fails again');
  const ok = (await post(`${EP}/runsync`, { input: { prompt: 'x', steps: 2, width: 64, height: 64 } })).json();
  const notRetryable = await post(`${EP}/retry/${ok.id}`, {});
  assert.equal(notRetryable.statusCode, 400);
  assert.match(notRetryable.json().error, /only FAILED or TIMED_OUT jobs can be retried/);
});

test('envelope errors answer {error}: missing input (400), bad key (401), unknown job (404); health carries RunPod counts', async () => {
  const noInput = await post(`${EP}/run`, { prompt: 'x' });
  assert.equal(noInput.statusCode, 400);
  assert.deepEqual(noInput.json(), { error: 'input: is required' });
  const badKey = await post(`${EP}/run`, { input: { prompt: 'x' } }, { authorization: 'Bearer nope', 'content-type': 'application/json' });
  assert.equal(badKey.statusCode, 401);
  assert.equal(typeof badKey.json().error, 'string');
  // RunPod also accepts the bare key in Authorization.
  const bare = await post(
    `${EP}/runsync`,
    { input: { prompt: 'x', steps: 1, width: 64, height: 64 } },
    { authorization: KEY, 'content-type': 'application/json' },
  );
  assert.equal(bare.json().status, 'COMPLETED');
  const unknown = await get(`${EP}/status/00000000-0000-0000-0000-000000000000`);
  assert.equal(unknown.statusCode, 404);
  assert.match(unknown.json().error, /not found/);

  const health = (await get(`${EP}/health`)).json();
  assert.ok(health.jobs.completed >= 1);
  assert.equal(typeof health.jobs.inQueue, 'number');
  assert.equal(health.workers.idle + health.workers.running, 1);
  const root = (await get('/health')).json();
  assert.equal(root.status, 'healthy');
  assert.deepEqual(Object.keys(root.jobs), ['completed', 'failed', 'inProgress', 'inQueue', 'retried']);
});

test('seed 000 /alpha/v1/txt2img answers {url, filename}; /alpha/v1/file/{filename} serves the PNG', async () => {
  const r = await post('/alpha/v1/txt2img', { prompt: 'a red apple', steps: 3, width: 64, height: 64 });
  assert.equal(r.statusCode, 200, r.body);
  const { url, filename, info } = r.json();
  assert.match(filename, /^alpha_\d+_[0-9a-f-]{36}\.png$/);
  assert.ok(url.endsWith(`/alpha/v1/file/${filename}`));
  const file = await get(new URL(url).pathname);
  assert.equal(file.statusCode, 200);
  assert.equal(file.headers['content-type'], 'image/png');
  assert.equal(await readInfotext(file.rawPayload), info);
  assert.equal((await get('/alpha/v1/file/alpha_1_00000000-0000-0000-0000-000000000000.png')).statusCode, 404);
  assert.equal((await get('/alpha/v1/file/..%2F..%2Fjobs.sqlite')).statusCode, 404);
  const bad = await post('/alpha/v1/txt2img', { input: { negative_prompt: 'x' } });
  assert.equal(bad.statusCode, 400);
  assert.match(bad.json().error, /Missing prompt/);
});
