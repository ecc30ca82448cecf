// TAESD end to end: a decoder file in models/vae-approx/ (A1111's folder, published name) makes the running
// job's native preview a full-size image instead of the latent-size "Approx cheap" one, and `vae: "taesd"`
// decodes the final image with it. The decoder has one upsampling group (x2), the tiny model's VAE factor.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, renameSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance } from 'fastify';
import sharp from 'sharp';
import { buildApp } from '../../src/server/app.ts';
import { testConfig } from '../../src/server/config.ts';
import { findTaesdDecoders } from '../../src/server/models/taesd.ts';
import { tempDir } from '../queue/helpers.ts';
import { tinyTaesd, writeTaesd } from '../engine/nets/taesd-fixture.ts';

const TINY = fileURLToPath(new URL('../fixtures/tiny-sd1', import.meta.url));
const t = tempDir('kiln-taesd-preview-');
let app: FastifyInstance;
let decoderFile = '';
before(async () => {
  const config = testConfig(t.dir, { model: TINY, previewEvery: 2 });
  mkdirSync(join(config.modelsDir, 'vae-approx'), { recursive: true });
  decoderFile = join(config.modelsDir, 'vae-approx', 'taesd_decoder.safetensors');
  writeTaesd(decoderFile, tinyTaesd(8, 8, 1, 1));
  app = await buildApp(config);
  await app.ready();
  await app.kiln.engineReady;
});
after(async () => {
  await app.close();
  t.remove();
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

test('findTaesdDecoders: the published names in the A1111/ComfyUI/taesd folders, per latent space', () => {
  const dir = join(t.dir, 'find');
  assert.deepEqual(findTaesdDecoders(dir), {});
  mkdirSync(join(dir, 'taesd'), { recursive: true });
  writeTaesd(join(dir, 'taesd', 'taesdxl_decoder.safetensors'), tinyTaesd(4));
  assert.deepEqual(findTaesdDecoders(dir), { sdxl: join(dir, 'taesd', 'taesdxl_decoder.safetensors') });
});

test('native preview of a running job is the TAESD decode: full size, not the latent size', async () => {
  const sub = await app.inject({
    method: 'POST',
    url: '/v1/jobs',
    payload: { prompt: 'a blue car', steps: 30, width: 64, height: 80, seed: 9, sampler: 'Euler' },
  });
  assert.equal(sub.statusCode, 202, sub.body);
  const id = sub.json().id as string;
  let png: Buffer | undefined;
  for (const end = Date.now() + 60_000; !png && Date.now() < end; await sleep(20)) {
    const r = await app.inject(`/v1/jobs/${id}/preview`);
    if (r.statusCode === 200) png = r.rawPayload;
  }
  assert.ok(png, 'a preview while the job runs');
  const meta = await sharp(png).metadata();
  assert.deepEqual([meta.format, meta.width, meta.height], ['png', 64, 80], 'latent 32x40 decoded x2 by this TAESD (Approx cheap: 32x40)');
  const sse = (await app.inject(`/v1/jobs/${id}/events`)).body;
  assert.ok(sse.includes('event: succeeded'));
});

test('vae "taesd": the final image is decoded by TAESD; without the decoder file the request is a 400 on vae', async () => {
  const job = { prompt: 'a red apple', width: 64, height: 64, steps: 3, seed: 11, sampler: 'Euler' };
  const pixels = async (extra: Record<string, unknown>) => {
    const r = await app.inject({ method: 'POST', url: '/v1/generate', payload: { ...job, ...extra } });
    assert.equal(r.statusCode, 200, r.body);
    return sharp(Buffer.from(r.json().images[0].base64, 'base64')).raw().toBuffer({ resolveWithObject: true });
  };
  const full = await pixels({});
  const tiny = await pixels({ vae: 'TAESD' });
  assert.deepEqual([tiny.info.width, tiny.info.height], [64, 64]);
  assert.notDeepEqual(tiny.data, full.data, 'another decoder, other pixels');
  assert.deepEqual((await pixels({ vae: 'taesd' })).data, tiny.data, 'deterministic, any case');

  renameSync(decoderFile, `${decoderFile}.off`);
  try {
    const r = await app.inject({ method: 'POST', url: '/v1/generate', payload: { ...job, vae: 'taesd' } });
    assert.equal(r.statusCode, 400, r.body);
    assert.equal(r.json().error.field, 'vae');
    assert.match(r.json().error.message, /taesd_decoder\.safetensors.*models\/vae-approx/);
  } finally {
    renameSync(`${decoderFile}.off`, decoderFile);
  }
});
