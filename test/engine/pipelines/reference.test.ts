// Full pipelines against diffusers 0.27.2 references (test/fixtures/refs/pipelines): the same prompts, the
// same starting noise, and the final latents and decoded images must agree within the fixture tolerances.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createEngine } from '../../../src/engine/engine.ts';
import type { GenerateRequest } from '../../../src/engine/api.ts';
import type { Tensor } from '../../../src/engine/tensor.ts';
import { assertClose, pipelineRef } from './tolerance.ts';

const FIX = 'test/fixtures';
const ref = (name: string) => pipelineRef('pipelines', name);
const cacheDir = mkdtempSync(join(tmpdir(), 'kiln-pipe-'));
const engine = createEngine({ cacheDir });
after(async () => {
  await engine.close();
  rmSync(cacheDir, { recursive: true, force: true });
});

/** Decoded 8-bit images vs the reference [0,1] NHWC floats: within one level (image atol 2e-3 plus rounding). */
function assertImagesClose(images: Uint8Array[], expected: Tensor, what: string): void {
  const per = expected.data.length / images.length;
  images.forEach((img, n) => {
    let worst = 0;
    for (let i = 0; i < per; i++) worst = Math.max(worst, Math.abs(img[i]! - expected.data[n * per + i]! * 255));
    assert.ok(worst <= 0.5 + 2e-3 * 255, `${what} image ${n}: max difference ${worst.toFixed(3)} levels`);
  });
}

async function runTxt2img(name: string, model: GenerateRequest['model'], sampler: string, schedule?: string) {
  const r = ref(name);
  const call = r.json.call;
  const prompts: string[] = Array.isArray(call.prompt) ? call.prompt : [call.prompt];
  const negatives: string[] = Array.isArray(call.negative_prompt) ? call.negative_prompt : [call.negative_prompt];
  let finalLatents: Tensor | undefined;
  const result = await engine.generate(
    {
      model,
      prompts,
      negativePrompt: negatives,
      width: call.width,
      height: call.height,
      steps: call.num_inference_steps,
      cfgScale: call.guidance_scale,
      sampler,
      schedule,
      seed: 1,
    },
    {},
    { initialNoise: r.t('input_latents').data, onFinalLatents: (l) => (finalLatents = l) },
  );
  assertClose(finalLatents!.data, r.t('final_latents').data, 1e-3, 1e-3, `${name} final latents`);
  assertImagesClose(
    result.images.map((i) => i.image.data),
    r.t('image'),
    name,
  );
  return result;
}

test('SD1 txt2img with DDIM matches diffusers (2 prompts, negative prompts, CFG 7.5)', async () => {
  const result = await runTxt2img('sd1_txt2img_ddim', { path: `${FIX}/tiny-sd1` }, 'DDIM');
  assert.equal(result.images.length, 2);
  assert.deepEqual(
    result.images.map((i) => i.seed),
    [1, 2],
    'image i uses seed + i',
  );
});

test('SD1 txt2img with Euler matches diffusers', async () => {
  await runTxt2img('sd1_txt2img_euler', { path: `${FIX}/tiny-sd1` }, 'Euler');
});

test('SD1 txt2img with DPM++ 2M Karras matches diffusers', async () => {
  await runTxt2img('sd1_txt2img_dpmpp_2m_karras', { path: `${FIX}/tiny-sd1` }, 'DPM++ 2M Karras');
});

test('SD2 v-prediction txt2img with DDIM matches diffusers', async () => {
  await runTxt2img('sd2_txt2img_ddim_vpred', { path: `${FIX}/tiny-sd2` }, 'DDIM');
});

test('SDXL txt2img with Euler (leading timesteps) matches diffusers', async () => {
  await runTxt2img('sdxl_txt2img_euler', { path: `${FIX}/tiny-sdxl` }, 'Euler', 'DDIM');
});

test('SD1 img2img with DDIM (strength 0.6) matches diffusers', async () => {
  const r = ref('sd1_img2img_ddim');
  const init = r.t('init_image');
  const pixels = { shape: init.shape, data: init.data.map((v) => v * 2 - 1) };
  let finalLatents: Tensor | undefined;
  const result = await engine.generate(
    {
      model: { path: `${FIX}/tiny-sd1` },
      prompts: [r.json.call.prompt],
      negativePrompt: r.json.call.negative_prompt,
      width: 64,
      height: 64,
      steps: 10,
      cfgScale: 7.5,
      sampler: 'DDIM',
      seed: 42,
      init: { image: { data: new Uint8Array(64 * 64 * 3), width: 64, height: 64, channels: 3 }, strength: 0.6 },
    },
    {},
    {
      initialNoise: r.t('add_noise_noise').data,
      vaeSampleNoise: r.t('vae_sample_noise').data,
      initImagePixels: pixels,
      onFinalLatents: (l) => (finalLatents = l),
    },
  );
  assertClose(finalLatents!.data, r.t('final_latents').data, 1e-3, 1e-3, 'img2img final latents');
  assertImagesClose([result.images[0]!.image.data], r.t('image'), 'img2img');
});

test('the single-file checkpoint gives the same image as the diffusers folder', async () => {
  const req = (path: string): GenerateRequest => ({
    model: { path, tokenizerDir: `${FIX}/tiny-sd1` },
    prompts: ['a red apple on a table'],
    negativePrompt: 'blurry',
    width: 64,
    height: 64,
    steps: 6,
    cfgScale: 7,
    sampler: 'Euler a',
    seed: 1234,
  });
  const folder = await engine.generate(req(`${FIX}/tiny-sd1`));
  const single = await engine.generate(req(`${FIX}/tiny-sd1.safetensors`));
  assert.deepEqual(Buffer.from(single.images[0]!.image.data), Buffer.from(folder.images[0]!.image.data));
});
