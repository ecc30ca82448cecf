// Inpainting against diffusers 0.27.2's StableDiffusionInpaintPipeline (test/fixtures/refs/inpaint): the 9-channel
// tiny model (folder and single file) at strength 1.0 and 0.75, plain tiny-sd1 in diffusers mask mode, and the
// mask helpers. Same stored noise draws; final latents atol/rtol 1e-3, images within one 8-bit level.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createEngine } from '../../../src/engine/engine.ts';
import type { GenerateRequest, RawImage } from '../../../src/engine/api.ts';
import type { Tensor } from '../../../src/engine/tensor.ts';
import { binarize, cropRegion, diffusersBinary, expandCropRegion, maskPlane, nearestToLatent, resizePlane } from '../../../src/engine/pipelines/mask.ts';
import { assertClose, pipelineRef } from './tolerance.ts';

const FIX = 'test/fixtures';
const ref = (name: string) => pipelineRef('inpaint', name);
const cacheDir = mkdtempSync(join(tmpdir(), 'kiln-inpaint-'));
const engine = createEngine({ cacheDir });
after(async () => {
  await engine.close();
  rmSync(cacheDir, { recursive: true, force: true });
});

const inputs = ref('mask_processing');
const u8 = (t: Tensor) => Uint8Array.from(t.data, (v) => Math.round(v));
const image: RawImage = { data: u8(inputs.t('image_u8')), width: 64, height: 64, channels: 3 };
const maskGrey = u8(inputs.t('mask_u8'));
const mask: RawImage = { data: Uint8Array.from({ length: 64 * 64 * 3 }, (_, i) => maskGrey[Math.floor(i / 3)]!), width: 64, height: 64, channels: 3 };

async function runInpaint(name: string, model: GenerateRequest['model']): Promise<void> {
  const r = ref(name);
  const strength: number = r.json.strength;
  const draws: string[] = r.json.noise_draws_in_order;
  // The masked image is the last VAE sample diffusers draws; the init image (when encoded) the first.
  const vaeDraws = draws.filter((d) => d.startsWith('noise_vae_sample'));
  let finalLatents: Tensor | undefined;
  const result = await engine.generate(
    {
      model,
      prompts: [r.json.prompt],
      negativePrompt: r.json.negative_prompt,
      width: 64,
      height: 64,
      steps: 10,
      cfgScale: 7.5,
      sampler: 'DDIM',
      seed: 42,
      init: { image, strength },
      mask: { image: mask, mode: 'diffusers' },
    },
    {},
    {
      initialNoise: r.t('noise_latents').data,
      vaeSampleNoise: r.t(vaeDraws[0]!).data,
      maskedImageSampleNoise: r.t(vaeDraws[vaeDraws.length - 1]!).data,
      onFinalLatents: (l) => (finalLatents = l),
    },
  );
  assertClose(finalLatents!.data, r.t('final_latents').data, 1e-3, 1e-3, `${name} final latents`);
  const expected = r.t('image').data;
  const got = result.images[0]!.image.data;
  let worst = 0;
  for (let i = 0; i < expected.length; i++) worst = Math.max(worst, Math.abs(got[i]! - expected[i]! * 255));
  assert.ok(worst <= 0.5 + 2e-3 * 255, `${name} image: max difference ${worst.toFixed(3)} levels`);
  assert.match(result.images[0]!.infotext, /Mask mode: diffusers/);
}

test('9-channel inpainting UNet (folder), strength 1.0, matches diffusers', async () => {
  await runInpaint('sd1_inpaint_9ch_strength1.0', { path: `${FIX}/tiny-sd1-inpaint` });
});

test('9-channel inpainting UNet (folder), strength 0.75, matches diffusers', async () => {
  await runInpaint('sd1_inpaint_9ch_strength0.75', { path: `${FIX}/tiny-sd1-inpaint` });
});

test('9-channel inpainting UNet (single file, detected from the input conv), strength 1.0 and 0.75, matches diffusers', async () => {
  const model = { path: `${FIX}/tiny-sd1-inpaint.safetensors`, tokenizerDir: `${FIX}/tiny-sd1` };
  await runInpaint('sd1_inpaint_9ch_strength1.0', model);
  await runInpaint('sd1_inpaint_9ch_strength0.75', model);
});

test('4-channel model in diffusers mask mode (noised re-injection), strength 1.0 and 0.75, matches diffusers', async () => {
  await runInpaint('sd1_inpaint_4ch_strength1.0', { path: `${FIX}/tiny-sd1` });
  await runInpaint('sd1_inpaint_4ch_strength0.75', { path: `${FIX}/tiny-sd1` });
});

test('mask preprocessing matches diffusers: binarize, latent-size mask, crop region', async () => {
  const plane = maskPlane(mask);
  const bin = binarize(plane, diffusersBinary);
  assert.deepEqual(
    Array.from(bin.data, (v) => v / 255),
    Array.from(inputs.t('preprocess_binarized').data),
  );
  const r = ref('sd1_inpaint_9ch_strength1.0');
  assert.deepEqual(Array.from(nearestToLatent(bin, 32, 32)), Array.from(r.t('mask_latent').data));
  // Another size goes through a Lanczos resize first: the binarized result may differ only on the ramp's edge.
  const resized = binarize(await resizePlane(plane, 80, 48), diffusersBinary);
  const expected = inputs.t('preprocess_binarized_48x80').data;
  // libvips' and Pillow's Lanczos differ slightly, so a pixel may flip where the binarized reference has an edge
  // (a neighbour within one pixel of the other value), and nowhere else.
  const at = (x: number, y: number) => expected[Math.min(47, Math.max(0, y)) * 80 + Math.min(79, Math.max(0, x))]!;
  let offEdge = 0;
  let flipped = 0;
  for (let y = 0; y < 48; y++)
    for (let x = 0; x < 80; x++) {
      if (resized.data[y * 80 + x]! / 255 === at(x, y)) continue;
      flipped++;
      const nearEdge = [-1, 0, 1].some((dy) => [-1, 0, 1].some((dx) => at(x + dx, y + dy) !== at(x, y)));
      if (!nearEdge) offEdge++;
    }
  assert.equal(offEdge, 0, `48x80: ${offEdge} of ${flipped} flipped values are away from the mask's edge`);
  // diffusers' get_crop_region(pad=8) is A1111's padded box grown to the processing aspect ratio.
  assert.deepEqual(expandCropRegion(cropRegion(plane, 8)!, 64, 64, 64, 64), Array.from(inputs.t('crop_region').data));
});
