// SDXL base + refiner (A1111 semantics: the base runs the first refiner_switch_at of the steps, the refiner
// the rest on the same sigmas). No tiny refiner exists in the fixtures, so one is derived from tiny-sdxl:
// bigG text encoder only, UNet cross-attention and add_embedding narrowed to the refiner's shapes.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createEngine } from '../../../src/engine/engine.ts';
import type { GenerateRequest } from '../../../src/engine/api.ts';
import { makeTinyRefiner } from './tiny-refiner.ts';

const FIX = 'test/fixtures/tiny-sdxl';
const work = mkdtempSync(join(tmpdir(), 'kiln-refiner-'));
const engine = createEngine({ cacheDir: join(work, 'cache') });
after(async () => {
  await engine.close();
  rmSync(work, { recursive: true, force: true });
});

const refinerPath = makeTinyRefiner(join(work, 'tiny-refiner'));

const request = (extra: Partial<GenerateRequest> = {}): GenerateRequest => ({
  model: { path: FIX },
  prompts: ['a lighthouse at dusk'],
  negativePrompt: 'blurry',
  width: 64,
  height: 64,
  steps: 8,
  cfgScale: 5,
  sampler: 'DPM++ 2M',
  seed: 77,
  ...extra,
});

test('the derived refiner loads as an SDXL refiner with one (bigG) text encoder', async () => {
  const info = await engine.load({ path: refinerPath });
  assert.equal(info.family, 'sdxl-refiner');
});

test('base then refiner is deterministic, differs from base only, and switch at 1.0 equals base only', async () => {
  const baseOnly = await engine.generate(request());
  const refined1 = await engine.generate(request({ refiner: { model: { path: refinerPath }, switchAt: 0.5 } }));
  const refined2 = await engine.generate(request({ refiner: { model: { path: refinerPath }, switchAt: 0.5 } }));
  const switchAtEnd = await engine.generate(request({ refiner: { model: { path: refinerPath }, switchAt: 1.0 } }));
  const px = (r: typeof baseOnly) => Buffer.from(r.images[0]!.image.data);
  assert.deepEqual(px(refined1), px(refined2), 'same seed, same refined image');
  assert.notDeepEqual(px(refined1), px(baseOnly), 'the refiner changed the image');
  assert.deepEqual(px(switchAtEnd), px(baseOnly), 'switching at 1.0 never runs the refiner');
  assert.match(refined1.images[0]!.infotext, /Refiner: tiny-refiner, Refiner switch at: 0.5/);
});

test('the refiner also works as img2img on an existing image', async () => {
  const base = await engine.generate(request());
  const img2img = await engine.generate({
    ...request({ model: { path: refinerPath } }),
    init: { image: base.images[0]!.image, strength: 0.3 },
  });
  assert.equal(img2img.images[0]!.image.width, 64);
  assert.notDeepEqual(Buffer.from(img2img.images[0]!.image.data), Buffer.from(base.images[0]!.image.data));
});

test('with tiling the refiner pass tiles too: noise rolled by half the image gives the image rolled by half', async () => {
  const latent = 32;
  const noise = Float32Array.from({ length: 4 * latent * latent }, (_, i) => Math.sin(i * 12.9898) * 1.7);
  const rolled = noise.slice();
  for (let c = 0; c < 4; c++)
    for (let y = 0; y < latent; y++)
      for (let x = 0; x < latent; x++) rolled[(c * latent + y) * latent + ((x + latent / 2) % latent)] = noise[(c * latent + y) * latent + x]!;
  const req = request({ refiner: { model: { path: refinerPath }, switchAt: 0.25 }, tiling: 'xy' });
  const a = (await engine.generate(req, {}, { initialNoise: noise })).images[0]!.image;
  const b = (await engine.generate(req, {}, { initialNoise: rolled })).images[0]!.image;
  let worst = 0;
  for (let y = 0; y < 64; y++)
    for (let x = 0; x < 64; x++)
      for (let c = 0; c < 3; c++) worst = Math.max(worst, Math.abs(b.data[(y * 64 + ((x + 32) % 64)) * 3 + c]! - a.data[(y * 64 + x) * 3 + c]!));
  assert.ok(worst <= 2, `the rolled generation is the rolled image (max difference ${worst} levels)`);
});

test('with hires fix the refiner joins the second pass only (A1111 hires_fix_refiner_pass "second pass")', async () => {
  const hires = { scale: 1.5, upscaler: 'Latent', steps: 4, denoisingStrength: 0.6 };
  const req = request({ steps: 6, hires });
  const withRefiner = { ...req, refiner: { model: { path: refinerPath }, switchAt: 0.5 } };
  /** The first pass's previews (sampling phase) and the final image. */
  const run = async (r: GenerateRequest) => {
    const previews: Buffer[] = [];
    const out = await engine.generate(r, {
      preview: { everyEvals: 1 },
      onProgress: (e) => e.phase === 'sampling' && e.preview && previews.push(Buffer.from(e.preview.data)),
    });
    return { previews, image: Buffer.from(out.images[0]!.image.data), infotext: out.images[0]!.infotext };
  };
  const plain = await run(req);
  const refined = await run(withRefiner);
  assert.ok(plain.previews.length >= 6);
  assert.deepEqual(refined.previews, plain.previews, 'the first pass is the base model alone');
  assert.notDeepEqual(refined.image, plain.image, 'the refiner ran in the hires pass');
  assert.deepEqual((await run(withRefiner)).image, refined.image, 'deterministic');
  assert.match(refined.infotext, /Refiner: tiny-refiner, Refiner switch at: 0.5/);
  assert.match(refined.infotext, /Hires upscale: 1.5/);
});
