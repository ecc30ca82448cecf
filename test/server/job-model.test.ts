// The job model through HTTP: state the adapters used to keep in memory now lives in the job record (seed 004's
// /queue/{id} and A1111's force_task_id survive a restart), the native API takes every field an adapter can
// set, one capability check answers 501 natively too, and per-job timeouts, retry and webhooks work on every
// surface that offers them.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { post, startTestServer, waitForState } from './helpers.ts';
import { tempDir } from '../queue/helpers.ts';

process.env.KILN_FAKE_STEP_MS = '5';

async function hookServer() {
  const bodies: any[] = [];
  const server = createServer((req, res) => {
    let raw = '';
    req.on('data', (c) => (raw += c));
    req.on('end', () => {
      bodies.push(JSON.parse(raw));
      res.end();
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`, bodies, close: () => new Promise<void>((r) => server.close(() => r())) };
}

test('seed 004: GET /queue/{id} answers the same after a restart over the same data dir (payload echo included)', async () => {
  const t = tempDir('kiln-restart-');
  try {
    const first = await startTestServer({}, { dir: t.dir });
    const r = await post(first.app, '/txt2img', { prompt: 'a lighthouse', steps: 3, width: 64, height: 64, sampler_name: 'Euler', seed: 77 });
    assert.equal(r.statusCode, 200, r.body);
    const id = r.json().job_id as string;
    assert.equal((await waitForState(first.app, id, ['succeeded'])).state, 'succeeded');
    await first.close();

    const second = await startTestServer({}, { dir: t.dir });
    try {
      const done = (await second.app.inject(`/queue/${id}`)).json();
      assert.deepEqual([done.status, done.state, done.progress, done.seed], ['success', 'done', 100, 77]);
      assert.equal(done.payload.prompt, 'a lighthouse');
      assert.equal(done.payload.steps, 3);
      assert.equal(typeof done.image, 'string');
      assert.equal(typeof done.memory_before_mb, 'number');
      // Delivered once, as in the seed; that is remembered in the record too.
      assert.equal((await second.app.inject(`/queue/${id}`)).statusCode, 404);
    } finally {
      await second.close();
    }
    const third = await startTestServer({}, { dir: t.dir });
    try {
      assert.equal((await third.app.inject(`/queue/${id}`)).statusCode, 404);
      // A job from another surface is not a seed 004 job.
      const native = (await post(third.app, '/v1/jobs', { prompt: 'x', width: 64, height: 64, steps: 1 })).json();
      assert.equal((await third.app.inject(`/queue/${native.id}`)).statusCode, 404);
    } finally {
      await third.close();
    }
  } finally {
    t.remove();
  }
});

test('A1111: /internal/progress finds a force_task_id job after a restart', async () => {
  const t = tempDir('kiln-restart-');
  try {
    const first = await startTestServer({}, { dir: t.dir });
    const r = await post(first.app, '/sdapi/v1/txt2img', {
      prompt: 'x',
      steps: 2,
      width: 64,
      height: 64,
      sampler_name: 'Euler',
      force_task_id: 'task-restart',
    });
    assert.equal(r.statusCode, 200, r.body);
    await first.close();
    const second = await startTestServer({}, { dir: t.dir });
    try {
      const task = (await post(second.app, '/internal/progress', { id_task: 'task-restart' })).json();
      assert.deepEqual([task.completed, task.progress], [true, 1]);
      assert.equal((await post(second.app, '/internal/progress', { id_task: 'unknown-task' })).json().active, false);
    } finally {
      await second.close();
    }
  } finally {
    t.remove();
  }
});

test('native /v1 takes the fields adapters set (s_churn, seed_resize_from_*, ...), bounded like width/height', async () => {
  const s = await startTestServer();
  try {
    const ok = await post(s.app, '/v1/jobs', {
      prompt: 'x',
      width: 64,
      height: 64,
      steps: 2,
      s_churn: 0.5,
      s_tmin: 0.1,
      s_tmax: 10,
      s_noise: 1.003,
      seed_resize_from_w: 128,
      seed_resize_from_h: 96,
    });
    assert.equal(ok.statusCode, 202, ok.body);
    assert.equal((await waitForState(s.app, ok.json().id, ['succeeded', 'failed'])).state, 'succeeded');
    const big = await post(s.app, '/v1/jobs', { prompt: 'x', seed_resize_from_w: 4096, seed_resize_from_h: 64 });
    assert.equal(big.statusCode, 400);
    assert.equal(big.json().error.field, 'seed_resize_from_w');
    const half = await post(s.app, '/v1/jobs', { prompt: 'x', width: 64, height: 64, seed_resize_from_w: 128 });
    assert.equal(half.statusCode, 400);
    assert.equal(half.json().error.field, 'seed_resize_from_h');
    const churn = await post(s.app, '/v1/jobs', { prompt: 'x', s_churn: -1 });
    assert.equal(churn.statusCode, 400);
    assert.equal(churn.json().error.field, 's_churn');
  } finally {
    await s.close();
  }
});

test('native /v1: features Kiln lacks answer 501 naming the feature and field, before any upload is stored', async () => {
  const s = await startTestServer();
  try {
    for (const [field, extra, feature] of [
      ['hypernetworks', { hypernetworks: [{ name: 'pixel-art', weight: 0.8 }] }, /hypernetworks/],
      // (loras, hires, transparent_background and restore_faces used to be here; they run now: see their own tests.)
      ['s_min_uncond', { s_min_uncond: 1 }, /s_min_uncond/],
    ] as const) {
      const r = await post(s.app, '/v1/jobs', { prompt: 'x', width: 64, height: 64, ...extra });
      assert.equal(r.statusCode, 501, `${field}: ${r.body}`);
      assert.deepEqual([r.json().error.code, r.json().error.field], ['not_implemented', field]);
      assert.match(r.json().error.message, feature);
    }
    // Transparency exists now: without LayerDiffuse's files it is a 4xx naming the field, the files and the folder.
    const transparent = await post(s.app, '/v1/jobs', { prompt: 'x', width: 64, height: 64, transparent_background: true });
    assert.equal(transparent.statusCode, 422, transparent.body);
    assert.equal(transparent.json().error.field, 'transparent_background');
    assert.match(
      transparent.json().error.message,
      /layer_xl_transparent_attn\.safetensors and vae_transparent_decoder\.safetensors, not found in .*models\/layerdiffuse/,
    );
    // Face restoration exists now: without its weight files it is a 400 naming them and where they go.
    const faces = await post(s.app, '/v1/jobs', { prompt: 'x', width: 64, height: 64, restore_faces: true });
    assert.equal(faces.statusCode, 400, faces.body);
    assert.equal(faces.json().error.field, 'restore_faces');
    assert.match(faces.json().error.message, /detection_Resnet50_Final\.pth\) in models\/facedetect\//);
    // Inpainting exists now: a mask that is not an image is a 400 naming the field.
    const mask = await post(s.app, '/v1/jobs', {
      prompt: 'x',
      width: 64,
      height: 64,
      type: 'img2img',
      init_image: 'bm90IGFuIGltYWdl',
      mask: { image: 'aGk=' },
    });
    assert.equal(mask.statusCode, 400, mask.body);
    assert.equal(mask.json().error.field, 'mask.image');
  } finally {
    await s.close();
  }
});

test('per-job timeout_s fails the job as a timeout (RunPod: TIMED_OUT); retry re-runs it under the same id', async () => {
  process.env.KILN_FAKE_STEP_MS = '20';
  const s = await startTestServer();
  try {
    const r = await post(s.app, '/v1/jobs', { prompt: 'x', width: 64, height: 64, steps: 100, timeout_s: 0.1 });
    const id = r.json().id as string;
    const failed = await waitForState(s.app, id, ['failed', 'succeeded']);
    assert.deepEqual([failed.state, failed.error.code], ['failed', 'timeout']);
    assert.match(failed.error.message, /own 0.1 s execution timeout/);
    assert.equal((await s.app.inject(`/status/${id}`)).json().status, 'TIMED_OUT');
    const again = await post(s.app, `/v1/jobs/${id}/retry`, {});
    assert.equal(again.statusCode, 202, again.body);
    assert.equal(again.json().id, id);
    assert.ok(['queued', 'running'].includes(again.json().state));
    const notFailed = await post(s.app, `/v1/jobs/${id}/retry`, {});
    assert.equal(notFailed.statusCode, 409);
    assert.equal((await waitForState(s.app, id, ['failed'])).error.code, 'timeout', 'the retry keeps its own timeout');
  } finally {
    process.env.KILN_FAKE_STEP_MS = '5';
    await s.close();
  }
});

test('RunPod: the webhook gets the job object (COMPLETED with output, or FAILED for refused input); bad webhook URLs are 400', async () => {
  const hook = await hookServer();
  const s = await startTestServer({ webhookAllow: ['127.0.0.1'] });
  try {
    const input = { prompt: 'a kite', steps: 2, width: 64, height: 64, sampler_name: 'Euler' };
    const run = (await post(s.app, '/run', { input, webhook: hook.url })).json();
    await waitForState(s.app, run.id, ['succeeded']);
    await s.app.kiln.webhooks.drain();
    assert.equal(hook.bodies.length, 1);
    assert.deepEqual([hook.bodies[0].id, hook.bodies[0].status, hook.bodies[0].output.status], [run.id, 'COMPLETED', 'success']);
    assert.equal(typeof hook.bodies[0].output.image_base64, 'string');

    const refused = (await post(s.app, '/run', { input: { negative_prompt: 'x' }, webhook: hook.url })).json();
    assert.equal(refused.status, 'FAILED');
    await s.app.kiln.webhooks.drain();
    assert.deepEqual([hook.bodies[1].id, hook.bodies[1].status], [refused.id, 'FAILED']);
    assert.match(hook.bodies[1].error, /Missing prompt/);

    const bad = await post(s.app, '/run', { input, webhook: 'file:///etc/passwd' });
    assert.equal(bad.statusCode, 400);
    assert.match(bad.json().error, /webhook: must be an http or https URL/);
  } finally {
    await s.close();
    await hook.close();
  }
});

test('RunPod: policy.executionTimeout stops a long job as TIMED_OUT', async () => {
  process.env.KILN_FAKE_STEP_MS = '50';
  const s = await startTestServer();
  try {
    const input = { prompt: 'slow', steps: 150, width: 64, height: 64, sampler_name: 'Euler' };
    const run = (await post(s.app, '/run', { input, policy: { executionTimeout: 5001 } })).json();
    const done = await waitForState(s.app, run.id, ['failed', 'succeeded'], {}, 15_000);
    assert.equal(done.error.code, 'timeout');
    const status = (await s.app.inject(`/status/${run.id}`)).json();
    assert.equal(status.status, 'TIMED_OUT');
    assert.match(status.error, /execution timeout/);
  } finally {
    process.env.KILN_FAKE_STEP_MS = '5';
    await s.close();
  }
});
