// img2img resize_mode through A1111's /sdapi/v1/img2img and the native /v1 job on the real engine (tiny SD1):
// modes 1-3 run (no longer 501), the result has the requested size, modes differ from "just resize", and an
// unknown mode is a 4xx naming resize_mode.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import sharp from 'sharp';
import { compatServerForFile } from './helpers.ts';

const { post } = compatServerForFile();

test('A1111 img2img resize_mode 0-3: 200 at the requested size, 1-3 unlike 0; resize_mode 7 is refused naming the field', async () => {
  const raw = Buffer.alloc(80 * 48 * 3);
  for (let i = 0; i < raw.length; i++) raw[i] = (i * 7 + Math.floor(i / 240) * 13) % 256;
  const src = (
    await sharp(raw, { raw: { width: 80, height: 48, channels: 3 } })
      .png()
      .toBuffer()
  ).toString('base64');
  const body = { init_images: [src], prompt: 'a boat', steps: 2, width: 64, height: 64, denoising_strength: 0.5, seed: 3, sampler_name: 'Euler' };
  const raws: Buffer[] = [];
  for (const mode of [0, 1, 2, 3]) {
    const r = await post('/sdapi/v1/img2img', { ...body, resize_mode: mode });
    assert.equal(r.statusCode, 200, `mode ${mode}: ${r.body}`);
    const img = sharp(Buffer.from(r.json().images[0], 'base64'));
    const meta = await img.metadata();
    assert.deepEqual([meta.width, meta.height], [64, 64]);
    raws.push(await img.raw().toBuffer());
  }
  for (const i of [1, 2, 3]) assert.ok(!raws[i]!.equals(raws[0]!), `mode ${i} differs from mode 0`);
  const bad = await post('/sdapi/v1/img2img', { ...body, resize_mode: 7 });
  assert.ok(bad.statusCode >= 400 && bad.statusCode < 500, `${bad.statusCode} ${bad.body}`);
  assert.match(bad.body, /resize_mode/);
});
