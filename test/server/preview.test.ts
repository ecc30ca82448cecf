// Live previews end to end with the real engine in its process and the tiny SD1 model: HTTP -> queue ->
// engine process (x0 -> Approx cheap RGB, buffer sent over IPC) -> native GET /v1/jobs/{id}/preview and A1111
// /sdapi/v1/progress current_image and /internal/progress live_preview.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance } from 'fastify';
import sharp from 'sharp';
import { buildApp } from '../../src/server/app.ts';
import { testConfig } from '../../src/server/config.ts';
import { tempDir } from '../queue/helpers.ts';
import { startTestServer } from './helpers.ts';

const TINY = fileURLToPath(new URL('../fixtures/tiny-sd1', import.meta.url));
const t = tempDir('kiln-preview-');
let app: FastifyInstance;
before(async () => {
  app = await buildApp(testConfig(t.dir, { model: TINY, previewEvery: 2 }));
  await app.ready();
  await app.kiln.engineReady;
});
after(async () => {
  await app.close();
  t.remove();
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const post = (url: string, payload: unknown) => app.inject({ method: 'POST', url, payload: payload as object });

/** Polls `probe` until it returns something, or fails after `ms`. */
async function until<T>(what: string, probe: () => Promise<T | undefined>, ms = 20_000): Promise<T> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    const v = await probe();
    if (v !== undefined) return v;
    await sleep(20);
  }
  throw new Error(`timed out waiting for ${what}`);
}

test("A1111 progress: current_image is the running job's preview as bare base64 PNG; skip_current_image=true leaves it null", async () => {
  const running = post('/sdapi/v1/txt2img', {
    prompt: 'a red apple',
    steps: 40,
    width: 64,
    height: 64,
    seed: 5,
    sampler_name: 'Euler',
    force_task_id: 'preview-task',
  });
  const progress = await until('a progress answer with current_image', async () => {
    const p = (await app.inject('/sdapi/v1/progress?skip_current_image=false')).json();
    return typeof p.current_image === 'string' ? p : undefined;
  });
  assert.doesNotMatch(progress.current_image, /^data:/, 'A1111 sends bare base64 here');
  const png = Buffer.from(progress.current_image, 'base64');
  const meta = await sharp(png).metadata();
  assert.deepEqual([meta.format, meta.width, meta.height, meta.channels], ['png', 32, 32, 3], 'latent resolution: 64 / 2 for the tiny model');
  const stats = await sharp(png).stats();
  assert.ok(
    stats.channels.some((c) => c.stdev > 1),
    'the preview is an image, not a flat fill',
  );
  assert.ok(progress.state.sampling_step >= 2 && progress.state.sampling_step <= 40);

  const skipped = (await app.inject('/sdapi/v1/progress?skip_current_image=true')).json();
  assert.equal(skipped.current_image, null);
  assert.ok(skipped.state.sampling_steps > 0, 'the rest of the answer is still there');

  // The web UI's poller: a data URL and its id, then no image while the client already has the latest id.
  const task = (await post('/internal/progress', { id_task: 'preview-task', id_live_preview: -1 })).json();
  assert.equal(task.active, true, 'a 40-step job is still running a few requests after its first preview');
  assert.match(task.live_preview, /^data:image\/png;base64,/);
  assert.ok(task.id_live_preview >= 1);
  const again = (await post('/internal/progress', { id_task: 'preview-task', id_live_preview: task.id_live_preview })).json();
  if (again.live_preview === null) assert.equal(again.id_live_preview, task.id_live_preview, 'nothing new: the id the client has');
  else assert.ok(again.id_live_preview > task.id_live_preview, 'an image is only sent when it is newer');

  const done = await running;
  assert.equal(done.statusCode, 200, done.body);
  assert.equal(done.json().images.length, 1);
  const idle = (await app.inject('/sdapi/v1/progress')).json();
  assert.equal(idle.current_image, null, 'no preview once nothing runs');
});

test('native: GET /v1/jobs/{id}/preview serves the latest preview PNG while running, preview_url points at it, 404 after', async () => {
  const sub = await post('/v1/jobs', { prompt: 'a blue car', steps: 40, width: 64, height: 80, seed: 9, sampler: 'Euler' });
  assert.equal(sub.statusCode, 202);
  const id = sub.json().id as string;
  const res = await until('a preview', async () => {
    const r = await app.inject(`/v1/jobs/${id}/preview`);
    if (r.statusCode === 404) {
      assert.match(r.json().error.message, /no live preview/);
      return undefined;
    }
    return r;
  });
  assert.equal(res.statusCode, 200);
  assert.equal(res.headers['content-type'], 'image/png');
  assert.equal(res.headers['cache-control'], 'no-store');
  assert.ok(Number(res.headers['x-preview-step']) >= 2);
  const meta = await sharp(res.rawPayload).metadata();
  assert.deepEqual([meta.width, meta.height], [32, 40]);
  const view = (await app.inject(`/v1/jobs/${id}`)).json();
  assert.equal(view.state, 'running', 'a 40-step job is still running right after its first preview');
  assert.equal(view.preview_url, `/v1/jobs/${id}/preview`);

  const sse = (await app.inject(`/v1/jobs/${id}/events`)).body;
  assert.ok(sse.includes('event: succeeded'));
  const final = (await app.inject(`/v1/jobs/${id}`)).json();
  assert.equal(final.preview_url, null);
  const gone = await app.inject(`/v1/jobs/${id}/preview`);
  assert.equal(gone.statusCode, 404);
  assert.match(gone.json().error.message, /the job is succeeded/);
  assert.equal((await app.inject('/v1/jobs/nope/preview')).statusCode, 404);
});

test('previewEvery 0: no previews anywhere; A1111 options say live previews are off', async () => {
  const s = await startTestServer({ previewEvery: 0 }, { threaded: true });
  try {
    const sub = await s.app.inject({ method: 'POST', url: '/v1/jobs', payload: { prompt: 'x', steps: 30, width: 64, height: 64 } });
    const id = sub.json().id as string;
    let sawRunning = false;
    for (let i = 0; i < 200; i++) {
      const view = (await s.app.inject(`/v1/jobs/${id}`)).json();
      if (view.state === 'succeeded') break;
      if (view.state === 'running' && view.step > 0) {
        sawRunning = true;
        assert.equal(view.preview_url, null);
        assert.equal((await s.app.inject(`/sdapi/v1/progress`)).json().current_image, null);
        const r = await s.app.inject(`/v1/jobs/${id}/preview`);
        assert.equal(r.statusCode, 404);
        assert.match(r.json().error.message, /previews are disabled/);
      }
      await sleep(5);
    }
    assert.ok(sawRunning, 'the job was seen running');
    const options = (await s.app.inject('/sdapi/v1/options')).json();
    assert.equal(options.live_previews_enable, false);
  } finally {
    await s.close();
  }
});
