// Live previews: the "Approx cheap" latent -> RGB map, and previews in the pipeline's progress events on the
// tiny SD1 model. The tiny model's VAE has random weights, so its decoded images have nothing to do with the
// real SD VAE's colours that the coefficients approximate; convergence is therefore checked against the
// same approximation of the final latents, which is what the previews must approach as sampling ends.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createEngine } from '../../src/engine/engine.ts';
import type { GenerateRequest, ProgressEvent } from '../../src/engine/api.ts';
import { approxCheapPreview } from '../../src/engine/preview.ts';
import { getFamily, SD_LATENTS, SDXL_LATENTS } from '../../src/engine/families/index.ts';

const cacheDir = mkdtempSync(join(tmpdir(), 'kiln-preview-'));
const engine = createEngine({ cacheDir });
after(async () => {
  await engine.close();
  rmSync(cacheDir, { recursive: true, force: true });
});

const base = (extra: Partial<GenerateRequest> = {}): GenerateRequest => ({
  model: { path: 'test/fixtures/tiny-sd1' },
  prompts: ['a red apple'],
  width: 64,
  height: 48,
  steps: 8,
  cfgScale: 7,
  sampler: 'Euler a',
  seed: 11,
  ...extra,
});

const meanAbsDiff = (a: Uint8Array, b: Uint8Array) => {
  assert.equal(a.length, b.length);
  let s = 0;
  for (let i = 0; i < a.length; i++) s += Math.abs(a[i]! - b[i]!);
  return s / a.length;
};

test('approx cheap: each latent channel maps through its row of the table; values clamp to 0..255', () => {
  // 2x1 latent, planar [C, h, w]: pixel 0 has only channel 0 = 1, pixel 1 only channel 3 = -1.
  const lat = new Float32Array([1, 0, 0, 0, 0, 0, 0, -1]);
  const img = approxCheapPreview(lat, 4, 1, 2, SD_LATENTS)!;
  assert.deepEqual([img.width, img.height, img.channels], [2, 1, 3]);
  const byte = (v: number) => Math.round((v * 0.5 + 0.5) * 255);
  assert.deepEqual([...img.data.subarray(0, 3)], [byte(0.298), byte(0.207), byte(0.208)]);
  assert.deepEqual([...img.data.subarray(3, 6)], [byte(0.184), byte(0.271), byte(0.473)]);
  const xl = approxCheapPreview(lat, 4, 1, 2, SDXL_LATENTS)!;
  assert.deepEqual([...xl.data.subarray(0, 3)], [byte(0.3448), byte(0.4168), byte(0.4395)]);
  // Planar [C, h, w]: pixel 0 is +10 in every channel, pixel 1 is -10.
  const big = approxCheapPreview(new Float32Array([10, -10, 10, -10, 10, -10, 10, -10]), 4, 1, 2, SD_LATENTS)!;
  assert.deepEqual([...big.data], [255, 255, 255, 0, 0, 0]);
  assert.equal(approxCheapPreview(new Float32Array(8), 8, 1, 1, SD_LATENTS), undefined, 'no table for 8-channel latents');
  assert.equal(getFamily('sdxl-refiner').latentSpace.name, 'sdxl');
  assert.equal(getFamily('sd2').latentSpace.name, 'sd');
});

test('previews every N evaluations at latent size; they converge to the final latent; none without the option', async () => {
  const events: ProgressEvent[] = [];
  let final: Float32Array | undefined;
  const res = await engine.generate(base(), { onProgress: (e) => events.push(e), preview: { everyEvals: 3 } }, { onFinalLatents: (t) => (final = t.data) });
  const previews = events.filter((e) => e.preview);
  assert.deepEqual(
    previews.map((e) => e.step),
    [3, 6, 8],
    'every 3rd evaluation and the last',
  );
  for (const e of previews) {
    assert.equal(e.phase, 'sampling');
    assert.deepEqual(
      [e.preview!.width, e.preview!.height, e.preview!.channels, e.preview!.data.length],
      [32, 24, 3, 32 * 24 * 3],
      'latent resolution (tiny latent factor 2)',
    );
  }
  assert.ok(new Set(previews[0]!.preview!.data).size > 20, 'a preview is an image, not a flat fill');
  const target = approxCheapPreview(final!, 4, 24, 32, SD_LATENTS)!.data;
  const first = meanAbsDiff(previews[0]!.preview!.data, target);
  const last = meanAbsDiff(previews.at(-1)!.preview!.data, target);
  assert.ok(last < first, `last preview (${last.toFixed(2)}) should be closer to the final latent's preview than the first (${first.toFixed(2)})`);
  assert.ok(last < 2, `the last preview is the final estimate (mean abs diff ${last.toFixed(2)})`);

  const plain: ProgressEvent[] = [];
  const again = await engine.generate(base(), { onProgress: (e) => plain.push(e) });
  assert.equal(plain.filter((e) => 'preview' in e).length, 0);
  assert.deepEqual(Buffer.from(again.images[0]!.image.data), Buffer.from(res.images[0]!.image.data), 'previews do not change the image');
  const off: ProgressEvent[] = [];
  await engine.generate(base({ steps: 2 }), { onProgress: (e) => off.push(e), preview: { everyEvals: 0 } });
  assert.equal(off.filter((e) => e.preview).length, 0, 'everyEvals 0 disables previews');
});

test('a batch previews its first image only', async () => {
  const single: ProgressEvent[] = [];
  await engine.generate(base({ steps: 4 }), { onProgress: (e) => single.push(e), preview: { everyEvals: 2 } });
  const batch: ProgressEvent[] = [];
  await engine.generate(base({ steps: 4, prompts: ['a red apple', 'a blue car'] }), { onProgress: (e) => batch.push(e), preview: { everyEvals: 2 } });
  const a = single.filter((e) => e.preview).map((e) => Buffer.from(e.preview!.data));
  const b = batch.filter((e) => e.preview).map((e) => Buffer.from(e.preview!.data));
  assert.equal(a.length, 2);
  assert.equal(b.length, 2);
  // Image 0 of a batch is the image its seed gives alone; its previews match within float noise of batching.
  for (let i = 0; i < a.length; i++) assert.ok(meanAbsDiff(a[i]!, b[i]!) < 1, `preview ${i} differs from the single run`);
});
