// Seed 001 (batch /generate with prompts x num_images_per_prompt, GET /, /health, /docs, heartbeats) through
// HTTP on the real engine. The seed's server is locked to 1024x576; its examples carry no size, so they run
// here with Kiln's size extension at 128x72 (the smallest 16:9 multiple of 8) and the defaults are checked
// on a queued job instead (1024x576 takes minutes on CPU).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import sharp from 'sharp';
import { readInfotext } from '../../../src/storage/encode.ts';
import { cancelQueued, findQueued, holdQueue, compatServerForFile } from './helpers.ts';

const { server, post } = compatServerForFile();
const SMALL = { width: 128, height: 72 };

test('GET / lists the API; /health has status and CUDA fields; /docs serves the API documentation', async () => {
  const root = (await server().app.inject('/')).json();
  assert.equal(root.status, 'running');
  assert.deepEqual(Object.keys(root.endpoints), ['generate', 'health', 'docs']);
  const health = (await server().app.inject('/health')).json();
  assert.equal(health.status, 'healthy');
  assert.equal(health.cuda_available, false);
  assert.ok('cuda_device' in health);
  const docs = await server().app.inject('/docs');
  assert.ok([200, 302].includes(docs.statusCode));
  const spec = (await server().app.inject('/openapi.json')).json();
  assert.ok(spec.paths['/generate'].post);
});

test('README example request: one prompt x 4 images, base64 -> success, images, count, message', async () => {
  const r = await post('/generate', {
    prompts: ['baroque oil painting, dramatic chiaroscuro lighting, a massive disembodied eye made of fire'],
    num_images_per_prompt: 4,
    negative_prompt: 'modern, photograph, low quality',
    return_format: 'base64',
    ...SMALL,
  });
  assert.equal(r.statusCode, 200, r.body);
  const body = r.json();
  assert.equal(body.success, true);
  assert.equal(body.count, 4);
  assert.equal(body.images.length, 4);
  assert.equal(body.message, 'Successfully generated 4 image(s)');
  const seeds = new Set<string>();
  for (const b64 of body.images) {
    const png = Buffer.from(b64, 'base64');
    const meta = await sharp(png).metadata();
    assert.deepEqual([meta.format, meta.width, meta.height], ['png', 128, 72]);
    const info = (await readInfotext(png))!;
    assert.match(info, /Negative prompt: modern, photograph, low quality\nSteps: 8, Sampler: Euler, Schedule type: SGM Uniform, CFG scale: 1,/);
    seeds.add(/Seed: (\d+)/.exec(info)![1]!);
  }
  assert.equal(seeds.size, 4, 'each image has its own seed');
});

test('README Python, cURL and JavaScript examples (no num_images_per_prompt: one image each); several prompts; url results', async () => {
  for (const payload of [
    {
      prompts: ['baroque oil painting, dramatic chiaroscuro lighting, ancient philosopher contemplating mortality, dark background'],
      negative_prompt: 'modern, photograph, cartoon, anime',
      return_format: 'base64',
    },
    {
      prompts: ['baroque oil painting, dramatic chiaroscuro lighting, a weathered stone tablet with ancient text'],
      negative_prompt: 'modern, low quality',
      return_format: 'base64',
    },
    {
      prompts: ['baroque oil painting, dramatic chiaroscuro lighting, mystical symbols glowing in darkness'],
      negative_prompt: 'modern, photograph',
      return_format: 'base64',
    },
  ]) {
    const r = await post('/generate', { ...payload, ...SMALL });
    assert.equal(r.statusCode, 200, r.body);
    assert.equal(r.json().count, 1);
    // The Python example decodes each entry with base64.b64decode and opens it with PIL.
    assert.equal((await sharp(Buffer.from(r.json().images[0], 'base64')).metadata()).format, 'png');
  }
  const many = await post('/generate', { prompts: ['a', 'b', 'c'], num_images_per_prompt: 2, return_format: 'url', ...SMALL, steps: 2 });
  const body = many.json();
  assert.equal(body.count, 6);
  for (const url of body.images) assert.match(url, /^http:\/\/localhost(:\d+)?\/v1\/images\/[0-9a-f-]+-\d\.png$/);
  const img = await server().app.inject(new URL(body.images[5]).pathname);
  assert.equal(img.statusCode, 200);
  assert.match((await readInfotext(img.rawPayload))!, /^c\n/);
});

test('defaults without extensions: 1024x576, 8 steps (checked on the queued job)', async () => {
  const hold = await holdQueue(server().app);
  try {
    const pending = post('/generate', { prompts: ['baroque oil painting, a lighthouse'], num_images_per_prompt: 2 });
    const queued = await findQueued(server().app, (j) => j.request.width === 1024);
    assert.deepEqual([queued.request.width, queued.request.height, queued.request.steps, queued.request.images], [1024, 576, 8, 2]);
    await server().app.inject({ method: 'POST', url: `/v1/jobs/${queued.id}/cancel` });
    const r = await pending;
    assert.equal(r.statusCode, 409);
    assert.match(r.json().detail, /^Image generation failed: cancelled/);
  } finally {
    await cancelQueued(server().app);
    await hold.release();
  }
});

test('limits: more than 150 images is 400 {detail}; schema errors are FastAPI 422 lists', async () => {
  const tooMany = await post('/generate', { prompts: Array(100).fill('x'), num_images_per_prompt: 2 });
  assert.equal(tooMany.statusCode, 400);
  assert.match(tooMany.json().detail, /= 200; at most 150 images/);
  const list = await post('/generate', { prompts: Array(151).fill('x') });
  assert.equal(list.statusCode, 422);
  assert.deepEqual(list.json().detail[0].loc, ['body', 'prompts']);
  const perPrompt = await post('/generate', { prompts: ['x'], num_images_per_prompt: 51 });
  assert.equal(perPrompt.statusCode, 422);
  const format = await post('/generate', { prompts: ['x'], return_format: 'jpeg' });
  assert.equal(format.statusCode, 422);
  assert.equal(format.json().detail[0].type, 'enum');
  const neither = await post('/generate', { negative_prompt: 'x' });
  assert.equal(neither.statusCode, 422);
});

test('heartbeats: a long request gets 200 headers early, spaces while it waits, then the JSON', async () => {
  process.env.KILN_HEARTBEAT_MS = '100';
  try {
    const r = await post('/generate', { prompts: ['slow'], num_images_per_prompt: 1, width: 64, height: 64, steps: 60 });
    assert.equal(r.statusCode, 200);
    assert.match(r.body, /^ +\{"success":true/);
    assert.equal(JSON.parse(r.body).count, 1);
  } finally {
    delete process.env.KILN_HEARTBEAT_MS;
  }
});
