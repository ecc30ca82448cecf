// Hires fix on tiny-sd1 through the engine: sizes, infotext, progress, determinism, and A1111's size rules.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createEngine, KilnInputError, type GenerateRequest, type ProgressEvent } from '../../../src/engine/index.ts';
import { hiresTarget } from '../../../src/engine/pipelines/hires.ts';
import { FIXTURES } from '../nets/fixture-io.ts';

const cacheDir = mkdtempSync(join(tmpdir(), 'kiln-hires-'));
const engine = createEngine({ cacheDir, threads: 1 });
after(async () => {
  await engine.close();
  rmSync(cacheDir, { recursive: true, force: true });
});

// tiny-sd1's VAE has a latent factor of 2: a 32x32 first pass is a 16x16 latent.
const req: GenerateRequest = {
  model: { path: join(FIXTURES, 'tiny-sd1') },
  prompts: ['a red apple'],
  width: 32,
  height: 32,
  steps: 3,
  cfgScale: 7,
  sampler: 'Euler',
  seed: 9,
  hires: { scale: 2, upscaler: 'Latent', steps: 2, denoisingStrength: 0.5 },
};

test('a latent hires fix doubles the size, writes the Hires infotext fields, reports monotonic progress in two phases, and repeats exactly', async () => {
  const events: ProgressEvent[] = [];
  const r = await engine.generate(req, { onProgress: (e) => events.push(e) });
  const img = r.images[0]!;
  assert.deepEqual([img.image.width, img.image.height], [64, 64]);
  assert.match(img.infotext, /Size: 32x32/);
  assert.match(img.infotext, /Denoising strength: 0\.5, .*Hires upscale: 2, Hires steps: 2, Hires upscaler: Latent/);
  const fractions = events.map((e) => e.fraction);
  for (let i = 1; i < fractions.length; i++) assert.ok(fractions[i]! >= fractions[i - 1]!, `progress went back at event ${i}: ${fractions}`);
  // 3 first-pass steps, then hr_second_pass_steps 2 (the tail of an int(2 / 0.5) = 4-step schedule).
  assert.equal(Math.max(...events.map((e) => e.totalSteps)), 5);
  const phases = [...new Set(events.map((e) => e.phase))];
  assert.deepEqual(phases, ['encoding', 'sampling', 'upscaling', 'decoding']);
  assert.ok(events.filter((e) => e.phase === 'sampling').every((e) => e.fraction <= 0.5));
  assert.ok(events.filter((e) => e.phase === 'upscaling').every((e) => e.fraction >= 0.5));
  const again = await engine.generate(req);
  assert.deepEqual(Buffer.from(again.images[0]!.image.data), Buffer.from(img.image.data));
  // The second pass changes the result: not just the first pass upscaled.
  const other = await engine.generate({ ...req, hires: { ...req.hires!, denoisingStrength: 0.9 } });
  assert.notDeepEqual(Buffer.from(other.images[0]!.image.data), Buffer.from(img.image.data));
});

test('pixel-space hires: Lanczos and an ESRGAN-family model (Compact x4) upscale to the hires size', async () => {
  for (const hires of [
    { scale: 1.5, upscaler: 'Lanczos', denoisingStrength: 0.6 },
    { scale: 2, upscaler: 'compact-x4', upscalerPath: join(FIXTURES, 'tiny-upscalers', 'compact-x4.safetensors'), steps: 1, denoisingStrength: 0.5 },
  ]) {
    const r = await engine.generate({ ...req, hires });
    const size = Math.trunc(32 * hires.scale);
    assert.deepEqual([r.images[0]!.image.width, r.images[0]!.image.height], [size, size], hires.upscaler);
    assert.match(r.images[0]!.infotext, new RegExp(`Hires upscaler: ${hires.upscaler}`));
  }
});

test('hr_resize_x and hr_resize_y together: cover, then the latent is centre-cropped (A1111 truncate_x/y)', async () => {
  assert.deepEqual(hiresTarget(32, 32, { resizeX: 64, resizeY: 48 }, 2), { width: 64, height: 64, truncateX: 0, truncateY: 8 });
  assert.deepEqual(hiresTarget(512, 768, { resizeX: 1024 }), { width: 1024, height: 1536, truncateX: 0, truncateY: 0 });
  assert.deepEqual(hiresTarget(512, 768, { resizeY: 1000 }), { width: 666, height: 1000, truncateX: 0, truncateY: 0 });
  assert.deepEqual(hiresTarget(512, 512, { scale: 1.7 }), { width: 870, height: 870, truncateX: 0, truncateY: 0 });
  const r = await engine.generate({ ...req, hires: { resizeX: 64, resizeY: 48, upscaler: 'Latent (nearest-exact)', steps: 1, denoisingStrength: 0.5 } });
  assert.deepEqual([r.images[0]!.image.width, r.images[0]!.image.height], [64, 48]);
  assert.match(r.images[0]!.infotext, /Hires resize: 64x48/);
});

test('an unknown hires upscaler is a KilnInputError listing the valid names', async () => {
  await assert.rejects(
    engine.generate({ ...req, hires: { ...req.hires!, upscaler: 'Bogus' } }),
    (e: unknown) => e instanceof KilnInputError && e.field === 'hr_upscaler' && /Latent \(bicubic antialiased\)/.test(e.message) && /Lanczos/.test(e.message),
  );
});

test('hires fix on tiny SD2 and SDXL (size conditioning at the hires size) gives the hires size', async () => {
  for (const model of ['tiny-sd2', 'tiny-sdxl']) {
    const r = await engine.generate({
      ...req,
      model: { path: join(FIXTURES, model) },
      hires: { scale: 2, upscaler: 'Latent (bicubic antialiased)', steps: 1, denoisingStrength: 0.5 },
    });
    assert.deepEqual([r.images[0]!.image.width, r.images[0]!.image.height], [64, 64], model);
  }
});
