// Image understanding through HTTP on the real engine: POST /v1/embeddings/image and /v1/interrogate, A1111's
// /sdapi/v1/interrogate, the job record, operator phrase lists, and bad input (non-image, too large,
// decompression bomb, no CLIP model installed) as 4xx naming the field.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import sharp from 'sharp';
import { writeTinyClipModel } from '../engine/tiny-clip-model.ts';
import { startCompatServer, type CompatServer } from './compat/helpers.ts';

let s: CompatServer;
let bare: CompatServer;
let png: string;
before(async () => {
  s = await startCompatServer({ limits: { uploadBytes: 256 * 1024, maxDecodedPixels: 1000 * 1000 } });
  writeTinyClipModel(join(s.config.modelsDir, 'clip_vision', 'tiny-clip'));
  s.app.kiln.models.refresh();
  bare = await startCompatServer();
  const pixels = Buffer.alloc(48 * 40 * 3);
  for (let i = 0; i < pixels.length; i++) pixels[i] = (i * 37) % 251;
  png = (
    await sharp(pixels, { raw: { width: 48, height: 40, channels: 3 } })
      .png()
      .toBuffer()
  ).toString('base64');
});
after(async () => {
  await s.close();
  await bare.close();
});

test('POST /v1/embeddings/image: the CLIP embedding (16 floats for the tiny model) and the VAE latent [4, 32, 32]; the job keeps the result', async () => {
  const r = await s.app.inject({ method: 'POST', url: '/v1/embeddings/image', payload: { image: png } });
  assert.equal(r.statusCode, 200, r.body);
  const b = r.json();
  assert.equal(b.clip_model, 'tiny-clip');
  assert.equal(b.clip_embedding.length, 16);
  assert.deepEqual(b.vae_latent.shape, [4, 32, 32]);
  assert.equal(b.vae_latent.data.length, 4 * 32 * 32);
  const again = (await s.app.inject({ method: 'POST', url: '/v1/embeddings/image', payload: { image: `data:image/png;base64,${png}` } })).json();
  assert.deepEqual(again.vae_latent.data, b.vae_latent.data, 'deterministic: the latent mean, not a sample');
  const job = (await s.app.inject(`/v1/jobs/${b.id}`)).json();
  assert.equal(job.state, 'succeeded');
  assert.equal(job.request.type, 'embed-image');
  assert.deepEqual(job.result.clip_embedding, b.clip_embedding);
  assert.deepEqual(job.images, []);
  const small = (await s.app.inject({ method: 'POST', url: '/v1/embeddings/image', payload: { image: png, vae_size: 16 } })).json();
  assert.deepEqual(small.vae_latent.shape, [4, 8, 8]);
  const clipOnly = (await s.app.inject({ method: 'POST', url: '/v1/embeddings/image', payload: { image: png, vae: false } })).json();
  assert.equal(clipOnly.vae_latent, null);
  assert.deepEqual(clipOnly.clip_embedding, b.clip_embedding);
});

test('POST /v1/interrogate: one phrase from each built-in list; with ranks; operator lists in models/interrogate replace them', async () => {
  const r = await s.app.inject({ method: 'POST', url: '/v1/interrogate', payload: { image: png } });
  assert.equal(r.statusCode, 200, r.body);
  const b = r.json();
  assert.equal(b.text_tower, 'clip-model');
  assert.deepEqual(
    b.categories.map((c: { name: string }) => c.name),
    ['flavors', 'mediums', 'movements'],
  );
  assert.equal(b.prompt, b.categories.map((c: { matches: { phrase: string }[] }) => c.matches[0]!.phrase).join(', '));
  const ranked = (await s.app.inject({ method: 'POST', url: '/v1/interrogate', payload: { image: png, return_ranks: true } })).json();
  assert.match(ranked.prompt, /^\([^:]+:\d\.\d{3}\), \([^:]+:\d\.\d{3}\), \([^:]+:\d\.\d{3}\)$/);

  const dir = join(s.config.modelsDir, 'interrogate');
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'subjects.top2.txt'), 'a cat\na dog\na house\na tree\n');
  try {
    const custom = (await s.app.inject({ method: 'POST', url: '/v1/interrogate', payload: { image: png } })).json();
    assert.deepEqual(
      custom.categories.map((c: { name: string; matches: unknown[] }) => [c.name, c.matches.length]),
      [['subjects', 2]],
    );
  } finally {
    writeFileSync(join(dir, 'subjects.top2.txt'), '');
  }
});

test('A1111 /sdapi/v1/interrogate: model "clip" answers {caption}; deepdanbooru 501; unknown model and missing image 404', async () => {
  const clip = await s.app.inject({ method: 'POST', url: '/sdapi/v1/interrogate', payload: { image: png, model: 'clip' } });
  assert.equal(clip.statusCode, 200, clip.body);
  assert.equal(clip.json().caption.split(', ').length, 3);
  const dd = await s.app.inject({ method: 'POST', url: '/sdapi/v1/interrogate', payload: { image: png, model: 'deepdanbooru' } });
  assert.equal(dd.statusCode, 501);
  assert.match(JSON.stringify(dd.json()), /DeepDanbooru/);
  const unknown = await s.app.inject({ method: 'POST', url: '/sdapi/v1/interrogate', payload: { image: png, model: 'blip2' } });
  assert.equal(unknown.statusCode, 404);
  assert.match(JSON.stringify(unknown.json()), /Model not found/);
  assert.equal((await s.app.inject({ method: 'POST', url: '/sdapi/v1/interrogate', payload: { model: 'clip' } })).statusCode, 404);
});

test('bad input: not an image, too large, a decompression bomb, unknown CLIP model -> 400 naming the field', async () => {
  const bomb = await sharp({ create: { width: 2000, height: 2000, channels: 3, background: '#000' } })
    .png()
    .toBuffer();
  const cases: Array<[string, Record<string, unknown>, string, RegExp]> = [
    ['/v1/embeddings/image', { image: Buffer.from('not an image at all').toString('base64') }, 'image', /not a readable image/],
    ['/v1/interrogate', { image: Buffer.alloc(300 * 1024, 1).toString('base64') }, 'image', /upload limit/],
    // sharp refuses the header's pixel count before decoding anything (the same answer img2img uploads get).
    ['/v1/embeddings/image', { image: bomb.toString('base64') }, 'image', /not a readable image|the limit is/],
    ['/v1/interrogate', { image: png, clip_model: 'ViT-L-14' }, 'clip_model', /unknown CLIP model ..?ViT-L-14..?; available: tiny-clip/],
    ['/v1/embeddings/image', { image: png, vae_size: 12 }, 'vae_size', /multiple of 8/],
    ['/sdapi/v1/interrogate', { image: 'data:image/png;base64,AAAA' }, 'image', /not a readable image/],
  ];
  for (const [url, payload, field, message] of cases) {
    const r = await s.app.inject({ method: 'POST', url, payload });
    assert.equal(r.statusCode, 400, `${url} ${JSON.stringify(payload).slice(0, 80)}: ${r.body.slice(0, 200)}`);
    assert.match(r.body, new RegExp(field));
    assert.match(r.body, message);
  }
});

test('no CLIP model installed: 400 naming clip_model and saying what to put where', async () => {
  for (const url of ['/v1/embeddings/image', '/v1/interrogate', '/sdapi/v1/interrogate']) {
    const r = await bare.app.inject({ method: 'POST', url, payload: { image: png } });
    assert.equal(r.statusCode, 400, `${url}: ${r.body}`);
    assert.match(r.body, /clip_model/);
    assert.match(r.body, /clip_vision\//);
  }
  const listed = (await s.app.inject('/v1/models?kind=clip_vision')).json();
  assert.deepEqual(
    listed.models.map((m: { name: string }) => m.name),
    ['tiny-clip'],
  );
});
