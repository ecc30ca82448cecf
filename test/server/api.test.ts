import { test } from 'node:test';
import assert from 'node:assert/strict';
import sharp from 'sharp';
import { readInfotext } from '../../src/storage/encode.ts';
import { post, startTestServer, waitForState } from './helpers.ts';

process.env.KILN_FAKE_STEP_MS = '5';

function parseSse(text: string): Array<{ event: string; data: any }> {
  return text
    .split('\n\n')
    .filter((b) => b.startsWith('event:'))
    .map((block) => {
      const [e = '', d = ''] = block.split('\n');
      return { event: e.slice(7), data: JSON.parse(d.slice(6)) };
    });
}

test('submit -> SSE progress on every step -> result with images, seeds and embedded parameters', async () => {
  const s = await startTestServer();
  try {
    const r = await post(s.app, '/v1/jobs', {
      prompt: 'a red apple',
      negative_prompt: 'blurry',
      width: 64,
      height: 64,
      steps: 6,
      seed: 1234,
      images_per_prompt: 2,
    });
    assert.equal(r.statusCode, 202);
    const { id, seeds, links } = r.json();
    assert.deepEqual(seeds, [1234, 1235]);
    assert.equal(r.headers.location, `/v1/jobs/${id}`);
    const sse = await s.app.inject({ method: 'GET', url: links.events });
    assert.equal(sse.headers['content-type'], 'text/event-stream; charset=utf-8');
    const events = parseSse(sse.body);
    assert.equal(events[0]!.event, 'state');
    const sampling = events.filter((e) => e.event === 'progress' && e.data.phase === 'sampling');
    assert.deepEqual(
      sampling.map((e) => e.data.step),
      [1, 2, 3, 4, 5, 6],
    );
    const last = events[events.length - 1]!;
    assert.equal(last.event, 'succeeded');
    assert.equal(last.data.images.length, 2);
    const png = Buffer.from(last.data.images[1].base64, 'base64');
    assert.match((await readInfotext(png))!, /Seed: 1235/);
    assert.equal((await sharp(png).metadata()).width, 64);

    const job = (await s.app.inject(`/v1/jobs/${id}?response=url`)).json();
    assert.equal(job.state, 'succeeded');
    assert.equal(job.progress, 1);
    assert.ok(job.timings.run_ms >= 0 && job.timings.sample_ms >= 0);
    assert.equal(job.images[0].base64, undefined);
    const img = await s.app.inject(new URL(job.images[0].url).pathname);
    assert.equal(img.statusCode, 200);
    assert.equal(img.headers['content-type'], 'image/png');
    assert.deepEqual(img.rawPayload, Buffer.from(last.data.images[0].base64, 'base64'));
  } finally {
    await s.close();
  }
});

test('SSE on a finished job sends its state and final event at once', async () => {
  const s = await startTestServer();
  try {
    const r = await post(s.app, '/v1/generate', { prompt: 'x', width: 64, height: 64, steps: 1 });
    const sse = parseSse((await s.app.inject(`/v1/jobs/${r.json().id}/events`)).body);
    assert.deepEqual(
      sse.map((e) => e.event),
      ['state', 'succeeded'],
    );
  } finally {
    await s.close();
  }
});

test('sync generate returns images in the chosen format and quality; failures map to status codes', async () => {
  const s = await startTestServer();
  try {
    const r = await post(s.app, '/v1/generate', { prompt: 'x', width: 128, height: 64, steps: 2, output: { format: 'jpeg', quality: 50 } });
    assert.equal(r.statusCode, 200);
    const img = r.json().images[0];
    const bytes = Buffer.from(img.base64, 'base64');
    const meta = await sharp(bytes).metadata();
    assert.deepEqual([meta.format, meta.width, meta.height], ['jpeg', 128, 64]);
    assert.match((await readInfotext(bytes))!, /Size: 128x64/);
    assert.ok(img.name.endsWith('.jpg'));

    const bad = await post(s.app, '/v1/generate', { prompt: '[input-error]', width: 64, height: 64, steps: 1 });
    assert.equal(bad.statusCode, 400);
    assert.equal(bad.json().error.field, 'sampler');
    const boom = await post(s.app, '/v1/generate', { prompt: '[fail]', width: 64, height: 64, steps: 1 });
    assert.equal(boom.statusCode, 500);
    assert.match(boom.json().error.message, /boom/);
  } finally {
    await s.close();
  }
});

test('sync generate answers 202 with the job when it is not done within timeout_s', async () => {
  process.env.KILN_FAKE_STEP_MS = '50';
  const s = await startTestServer();
  try {
    const r = await post(s.app, '/v1/generate?timeout_s=1', { prompt: 'x', width: 64, height: 64, steps: 60 });
    assert.equal(r.statusCode, 202);
    assert.equal(r.json().state, 'running');
    await s.app.inject({ method: 'POST', url: `/v1/jobs/${r.json().id}/cancel` });
  } finally {
    process.env.KILN_FAKE_STEP_MS = '5';
    await s.close();
  }
});

test('job status shows queue position and progress; cancel works for queued and running jobs', async () => {
  process.env.KILN_FAKE_STEP_MS = '20';
  const s = await startTestServer();
  try {
    const a = (await post(s.app, '/v1/jobs', { prompt: 'a', width: 64, height: 64, steps: 100 })).json();
    const b = (await post(s.app, '/v1/jobs', { prompt: 'b', width: 64, height: 64, steps: 5 })).json();
    const running = await waitForState(s.app, a.id, ['running']);
    assert.equal(running.state, 'running');
    const queued = (await s.app.inject(`/v1/jobs/${b.id}`)).json();
    assert.equal(queued.state, 'queued');
    assert.equal(queued.position, 0);
    assert.equal(queued.phase, 'queued');
    await new Promise((r) => setTimeout(r, 100));
    const mid = (await s.app.inject(`/v1/jobs/${a.id}`)).json();
    assert.ok(mid.progress > 0 && mid.progress < 1, `progress ${mid.progress}`);
    assert.equal(mid.phase, 'sampling');
    const cb = await s.app.inject({ method: 'DELETE', url: `/v1/jobs/${b.id}` });
    assert.equal(cb.json().state, 'cancelled');
    const t0 = Date.now();
    const ca = await s.app.inject({ method: 'POST', url: `/v1/jobs/${a.id}/cancel` });
    assert.equal(ca.json().state, 'cancelled');
    assert.ok(Date.now() - t0 < 500);
    assert.equal((await s.app.inject('/v1/jobs/nope')).statusCode, 404);
  } finally {
    process.env.KILN_FAKE_STEP_MS = '5';
    await s.close();
  }
});

test('a full queue answers 429 with Retry-After, and accepts again once it drains', async () => {
  process.env.KILN_FAKE_STEP_MS = '10';
  const s = await startTestServer({ queue: { maxQueued: 2 } });
  try {
    const codes: number[] = [];
    let retryAfter: string | undefined;
    for (let i = 0; i < 5; i++) {
      const r = await post(s.app, '/v1/jobs', { prompt: `p${i}`, width: 64, height: 64, steps: 3 });
      codes.push(r.statusCode);
      if (r.statusCode === 429) {
        retryAfter = r.headers['retry-after'] as string;
        assert.equal(r.json().error.code, 'queue_full');
      }
    }
    assert.ok(codes.includes(429), codes.join(','));
    assert.ok(Number(retryAfter) >= 1);
    const accepted = codes.filter((c) => c === 202).length;
    assert.ok(accepted >= 2 && accepted <= 3);
    const list = (await s.app.inject('/v1/jobs')).json().jobs;
    for (const j of list) await waitForState(s.app, j.id, ['succeeded']);
    assert.equal((await post(s.app, '/v1/jobs', { prompt: 'again', width: 64, height: 64, steps: 1 })).statusCode, 202);
  } finally {
    process.env.KILN_FAKE_STEP_MS = '5';
    await s.close();
  }
});

test('img2img by multipart upload and by base64 JSON', async () => {
  const s = await startTestServer();
  try {
    const png = await sharp({ create: { width: 80, height: 48, channels: 3, background: '#336699' } })
      .png()
      .toBuffer();
    const boundary = 'kilnboundary';
    const parts = [
      `--${boundary}\r\nContent-Disposition: form-data; name="prompt"\r\n\r\na boat\r\n`,
      `--${boundary}\r\nContent-Disposition: form-data; name="steps"\r\n\r\n2\r\n`,
      `--${boundary}\r\nContent-Disposition: form-data; name="width"\r\n\r\n64\r\n`,
      `--${boundary}\r\nContent-Disposition: form-data; name="height"\r\n\r\n64\r\n`,
      `--${boundary}\r\nContent-Disposition: form-data; name="init_image"; filename="in.png"\r\nContent-Type: image/png\r\n\r\n`,
    ];
    const payload = Buffer.concat([Buffer.from(parts.join('')), png, Buffer.from(`\r\n--${boundary}--\r\n`)]);
    const r = await s.app.inject({ method: 'POST', url: '/v1/generate', payload, headers: { 'content-type': `multipart/form-data; boundary=${boundary}` } });
    assert.equal(r.statusCode, 200, r.body);
    assert.equal(r.json().request.type, 'img2img');

    const j = await post(s.app, '/v1/generate', {
      type: 'img2img',
      prompt: 'x',
      width: 64,
      height: 64,
      steps: 1,
      init_image: `data:image/png;base64,${png.toString('base64')}`,
      denoising_strength: 0.5,
    });
    assert.equal(j.statusCode, 200, j.body);
  } finally {
    await s.close();
  }
});

test('models, labels, samplers, schedules, health, ready, metrics and docs', async () => {
  const s = await startTestServer({ modelAliases: { 'Friendly Fake': 'fake-model' } });
  try {
    const models = (await s.app.inject('/v1/models')).json().models;
    assert.deepEqual(
      models.map((m: any) => [m.name, m.label, m.default]),
      [['fake-model', 'Friendly Fake', true]],
    );
    const byLabel = await post(s.app, '/v1/generate', { prompt: 'x', model: 'Friendly Fake', width: 64, height: 64, steps: 1 });
    assert.equal(byLabel.statusCode, 200);
    assert.ok((await s.app.inject('/v1/samplers')).json().samplers.some((x: any) => x.name === 'Euler a'));
    assert.ok((await s.app.inject('/v1/schedules')).json().schedules.some((x: any) => x.label === 'Karras'));
    const health = (await s.app.inject('/health')).json();
    assert.equal(health.status, 'healthy');
    assert.equal(health.cuda_available, false);
    assert.equal((await s.app.inject('/ready')).statusCode, 200);
    const metrics = (await s.app.inject('/metrics')).body;
    assert.match(metrics, /^kiln_queue_depth 0$/m);
    assert.match(metrics, /^kiln_jobs\{state="succeeded"\} 1$/m);
    assert.match(metrics, /^kiln_generation_seconds_count 1$/m);
    assert.match(metrics, /^kiln_steps_per_second \d/m);
    assert.equal((await s.app.inject('/docs')).statusCode < 400, true);
    const spec = (await s.app.inject('/openapi.json')).json();
    assert.ok(spec.paths['/v1/jobs'].post.requestBody);
    assert.equal(spec.paths['/v1/jobs'].post.requestBody.content['application/json'].schema.properties.steps.maximum, 150);
  } finally {
    await s.close();
  }
});

test('/ready is 503 with a reason when there is no default model', async () => {
  const s = await startTestServer({ model: undefined });
  try {
    const r = await s.app.inject('/ready');
    assert.equal(r.statusCode, 503);
    assert.match(r.json().reason, /no default model/);
    const sub = await post(s.app, '/v1/jobs', { prompt: 'x', width: 64, height: 64, steps: 1 });
    assert.equal(sub.statusCode, 400);
    assert.equal(sub.json().error.field, 'model');
  } finally {
    await s.close();
  }
});
