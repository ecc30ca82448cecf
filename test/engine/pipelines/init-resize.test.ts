// img2img resize modes through the real engine on tiny SD1: modes 1 and 2 give exactly the pixels of an img2img
// whose init image was fitted beforehand by the Pillow reference (fixtures refs/hires/pil_resize, A1111's
// resize_image); mode 3 encodes at the image's own size and resizes the latent bilinearly, built here by hand.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createEngine } from '../../../src/engine/engine.ts';
import { KilnInputError, type GenerateRequest, type RawImage } from '../../../src/engine/api.ts';
import { imageToTensor } from '../../../src/engine/image.ts';
import { upscaleLatent } from '../../../src/engine/pipelines/latent-upscale.ts';
import { ModelSessions } from '../../../src/engine/pipelines/model-sessions.ts';
import { latentResizedInit } from '../../../src/engine/pipelines/init-fit.ts';
import { runSession } from '../../../src/engine/runtime.ts';
import { SafetensorsFile } from '../../../src/engine/weights/safetensors.ts';
import { FIXTURES } from '../nets/fixture-io.ts';

const cacheDir = mkdtempSync(join(tmpdir(), 'kiln-init-resize-'));
const engine = createEngine({ cacheDir });
after(async () => {
  await engine.close();
  rmSync(cacheDir, { recursive: true, force: true });
});

const file = SafetensorsFile.open(join(FIXTURES, 'refs', 'hires', 'pil_resize.safetensors'));
const source: RawImage = { data: file.readBytes('image'), width: 40, height: 32, channels: 3 };
const fixture = (key: string, width: number, height: number): RawImage => ({ data: file.readBytes(key), width, height, channels: 3 });

const req = (image: RawImage, width: number, height: number, resizeMode?: 0 | 1 | 2 | 3): GenerateRequest => ({
  model: { path: 'test/fixtures/tiny-sd1' },
  prompts: ['a painting of a harbour'],
  width,
  height,
  steps: 3,
  cfgScale: 7,
  sampler: 'Euler a',
  seed: 5,
  init: { image, strength: 0.6, resizeMode },
});

for (const [key, mode, w, h] of [
  ['crop_48x48', 1, 48, 48],
  ['fill_48x48', 2, 48, 48],
  ['fill_64x32', 2, 64, 32],
] as const) {
  test(`img2img resize_mode ${mode} at ${w}x${h} equals img2img on the init image fitted by A1111's resize_image (${key})`, async () => {
    const viaMode = await engine.generate(req(source, w, h, mode));
    const prefitted = await engine.generate(req(fixture(key, w, h), w, h));
    assert.deepEqual(viaMode.images[0]!.image.data, prefitted.images[0]!.image.data);
    // And it is not what "just resize" makes of the same image.
    const plain = await engine.generate(req(source, w, h, 0));
    assert.notDeepEqual(viaMode.images[0]!.image.data, plain.images[0]!.image.data);
  });
}

test('resize_mode 3: the init latent is the image encoded at its own size, its mean scaled and resized bilinearly', async () => {
  const ms = await ModelSessions.load({ path: 'test/fixtures/tiny-sd1' }, { device: 'cpu', cacheDir });
  try {
    const got = await latentResizedInit(ms, source, 64, 48, 2);
    const { mean } = await runSession(await ms.vaeEncoder(), { image: imageToTensor(source) });
    const scaled = { shape: mean!.shape, data: mean!.data.map((v) => v * ms.scalingFactor) };
    const expected = upscaleLatent(scaled, 24, 32, 'bilinear', false).data;
    assert.equal(got.length, 2 * expected.length);
    assert.deepEqual(got.subarray(0, expected.length), expected);
    assert.deepEqual(got.subarray(expected.length), expected);
  } finally {
    await ms.release();
  }
  const a = await engine.generate(req(source, 64, 48, 3));
  const b = await engine.generate(req(source, 64, 48, 3));
  assert.deepEqual([a.images[0]!.image.width, a.images[0]!.image.height], [64, 48]);
  assert.deepEqual(a.images[0]!.image.data, b.images[0]!.image.data, 'a fixed seed repeats');
  assert.notDeepEqual(a.images[0]!.image.data, (await engine.generate(req(source, 64, 48, 0))).images[0]!.image.data);
});

test('bad resize modes are refused naming resize_mode', async () => {
  await assert.rejects(engine.generate(req(source, 48, 48, 4 as 3)), (e: unknown) => e instanceof KilnInputError && e.field === 'resize_mode');
  const tiny: RawImage = { data: new Uint8Array(2 * 2 * 3), width: 2, height: 2, channels: 3 };
  await assert.rejects(engine.generate(req(tiny, 48, 48, 3)), (e: unknown) => e instanceof KilnInputError && e.field === 'init_images');
});
