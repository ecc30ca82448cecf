// TAESD live previews end to end: a decoder file in models/vae-approx/ (A1111's folder, published name) makes
// the running job's native preview a full-size image instead of the latent-size "Approx cheap" one.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
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
before(async () => {
  const config = testConfig(t.dir, { model: TINY, previewEvery: 2 });
  mkdirSync(join(config.modelsDir, 'vae-approx'), { recursive: true });
  writeTaesd(join(config.modelsDir, 'vae-approx', 'taesd_decoder.safetensors'), tinyTaesd(8));
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

test('native preview of a running job is the TAESD decode: 8x the latent size', async () => {
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
  assert.deepEqual([meta.format, meta.width, meta.height], ['png', 256, 320], 'latent 32x40 (tiny VAE halves) decoded x8 by TAESD');
  const sse = (await app.inject(`/v1/jobs/${id}/events`)).body;
  assert.ok(sse.includes('event: succeeded'));
});
