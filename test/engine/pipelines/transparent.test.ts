// LayerDiffuse txt2img on tiny-sdxl (refs/layerdiffuse/sdxl_transparent_txt2img_euler): the attention patch in
// its frozen-patcher format merged at weight 1 through the adapter machinery, the 8x VAE, 10 Euler steps, then
// the transparent decode with TTA -> straight RGBA. Also the `::diff::0` (conv-file) spelling of the same patch,
// the checkerboard preview, and the refusals (another family, inpainting).
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createEngine } from '../../../src/engine/engine.ts';
import type { GenerateRequest, TransparentSettings } from '../../../src/engine/api.ts';
import { checkerboardPreview } from '../../../src/engine/pipelines/transparent.ts';
import type { Planes } from '../../../src/engine/pipelines/transparent-tta.ts';
import type { Tensor } from '../../../src/engine/tensor.ts';
import { SafetensorsFile, writeSafetensors } from '../../../src/engine/weights/safetensors.ts';
import { loadModel } from '../../../src/engine/weights/model.ts';
import type { MappedWeights } from '../../../src/engine/weights/sources.ts';
import { assertClose } from './tolerance.ts';

const FIX = 'test/fixtures';
const LD = `${FIX}/layerdiffuse`;
const cacheDir = mkdtempSync(join(tmpdir(), 'kiln-layerdiffuse-'));
const engine = createEngine({ cacheDir });
after(async () => {
  await engine.close();
  rmSync(cacheDir, { recursive: true, force: true });
});

const ref = SafetensorsFile.open(`${FIX}/refs/layerdiffuse/sdxl_transparent_txt2img_euler.safetensors`);
const call = JSON.parse(readFileSync(`${FIX}/refs/layerdiffuse/sdxl_transparent_txt2img_euler.json`, 'utf8')).call;
const transparent: TransparentSettings = {
  decoder: `${LD}/tiny-transparent-decoder.safetensors`,
  patch: `${LD}/tiny-layer-xl-transparent-attn.safetensors`,
  family: 'sdxl',
};
const request = (t: TransparentSettings): GenerateRequest => ({
  model: { path: `${FIX}/tiny-sdxl.safetensors`, tokenizerDir: `${FIX}/tiny-sdxl`, vae: `${LD}/tiny-sdxl-vae-f8` },
  prompts: [call.prompt],
  negativePrompt: call.negative_prompt,
  width: call.width,
  height: call.height,
  steps: call.num_inference_steps,
  cfgScale: call.guidance_scale,
  sampler: 'Euler',
  // tiny-sdxl's EulerDiscreteScheduler config is SDXL base's: "leading" timesteps (901 ... 1), A1111's DDIM schedule.
  schedule: 'DDIM',
  seed: 1,
  transparent: t,
});

/** Fraction of values beyond atol. */
function fractionBeyond(a: ArrayLike<number>, e: ArrayLike<number>, atol: number): number {
  let n = 0;
  for (let i = 0; i < a.length; i++) if (Math.abs(a[i]! - e[i]!) > atol) n++;
  return n / a.length;
}

async function runReference(t: TransparentSettings) {
  let finalLatents: Tensor | undefined;
  let rgba: Planes | undefined;
  const result = await engine.generate(
    request(t),
    {},
    { initialNoise: ref.tensor('input_latents').data, onFinalLatents: (l) => (finalLatents = l), onTransparentFloat: (_i, p) => (rgba = p) },
  );
  assertClose(finalLatents!.data, ref.tensor('final_latents').data, 1e-3, 1e-3, 'final latents');
  const img = result.images[0]!.image;
  assert.equal(img.channels, 4);
  assert.deepEqual([img.width, img.height], [call.width, call.height]);
  // rgba_float: atol 1e-4 with at most 0.1 % beyond (a pass near the clip or near another pass flips the median).
  const beyond = fractionBeyond(rgba!.data, ref.tensor('rgba_float').data, 1e-4);
  assert.ok(beyond <= 0.001, `rgba_float: ${(beyond * 100).toFixed(3)}% beyond 1e-4`);
  // rgba_u8: HWC R,G,B,A, +-1.
  const u8 = ref.tensor('rgba_u8').data;
  let worst = 0;
  for (let i = 0; i < u8.length; i++) worst = Math.max(worst, Math.abs(img.data[i]! - u8[i]!));
  assert.ok(worst <= 1, `rgba_u8 differs by ${worst} levels`);
  return { result, rgba: rgba! };
}

test('tiny SDXL with the LayerDiffuse attention patch gives the reference RGBA (straight alpha)', async () => {
  const { result, rgba } = await runReference(transparent);
  const alpha = [...result.images[0]!.image.data.filter((_, i) => i % 4 === 3)];
  assert.ok(Math.min(...alpha) < 128 && Math.max(...alpha) > 128, 'a real matte');
  assert.doesNotMatch(result.images[0]!.infotext, /Lora hashes/, 'the patch is not a user LoRA');
  const vis = checkerboardPreview(rgba);
  const expected = ref.tensor('vis_u8').data;
  let worst = 0;
  for (let i = 0; i < expected.length; i++) worst = Math.max(worst, Math.abs(vis.data[i]! - expected[i]!));
  assert.ok(worst <= 1, `checkerboard preview differs by ${worst} levels`);
});

/** The tiny patch's up @ down per module ("diffusion_model.<SGM path>.weight" -> its offset). */
function patchProducts(): Map<string, Tensor> {
  const patch = SafetensorsFile.open(transparent.patch);
  const out = new Map<string, Tensor>();
  for (const name of patch.names()) {
    if (!name.endsWith('::lora::0')) continue;
    const module = name.slice(0, -'.weight::lora::0'.length);
    const up = patch.tensor(name);
    const down = patch.tensor(`${module}.weight::lora::1`);
    const [rows, rank] = up.shape as [number, number];
    const cols = down.shape[1]!;
    const diff = new Float32Array(rows * cols);
    for (let o = 0; o < rows; o++)
      for (let i = 0; i < cols; i++) {
        let s = 0;
        for (let r = 0; r < rank; r++) s += up.data[o * rank + r]! * down.data[r * cols + i]!;
        diff[o * cols + i] = s;
      }
    out.set(module, { shape: [rows, cols], data: diff });
  }
  return out;
}

test('the same patch as `::diff::0` offsets (the conv file spelling) gives the same reference', async () => {
  const tensors: Record<string, { dtype: 'F32'; shape: number[]; bytes: Uint8Array }> = {};
  for (const [module, diff] of patchProducts()) {
    tensors[`${module}.weight::diff::0`] = { dtype: 'F32', shape: diff.shape, bytes: new Uint8Array(diff.data.buffer) };
  }
  const file = join(cacheDir, 'tiny-layer-xl-transparent-diff.safetensors');
  writeSafetensors(file, tensors);
  await runReference({ ...transparent, patch: file });
});

test('the diffusers release spelling (a full offset under diffusers UNet names) gives the same reference', async () => {
  // The SGM key -> diffusers name of every UNet weight, as the single-file loader maps them.
  const model = await loadModel({ path: `${FIX}/tiny-sdxl.safetensors`, tokenizerDir: `${FIX}/tiny-sdxl` }, { hashCacheFile: null });
  const unet = model.unet as MappedWeights;
  const diffusersName = new Map<string, string>();
  for (const name of unet.names()) {
    const r = unet.recipe(name);
    if (r.kind === 'tensor') diffusersName.set(r.key.replace(/^model\./, ''), name);
  }
  const tensors: Record<string, { dtype: 'F32'; shape: number[]; bytes: Uint8Array }> = {};
  for (const [module, diff] of patchProducts()) {
    const name = diffusersName.get(`${module}.weight`);
    assert.ok(name, `${module} has a diffusers name`);
    tensors[name] = { dtype: 'F32', shape: diff.shape, bytes: new Uint8Array(diff.data.buffer) };
  }
  const file = join(cacheDir, 'ld_diffusers_tiny_sdxl_attn.safetensors');
  writeSafetensors(file, tensors);
  await runReference({ ...transparent, patch: file });
});

test('transparent on a non-SDXL model, or with a mask, is refused naming the field', async () => {
  const sd1: GenerateRequest = { ...request(transparent), model: { path: `${FIX}/tiny-sd1` } };
  await assert.rejects(engine.generate(sd1), (e: Error & { field?: string }) => e.field === 'transparent' && /for sdxl models.*is sd1/.test(e.message));
  const image = { data: new Uint8Array(64 * 64 * 3).fill(128), width: 64, height: 64, channels: 3 as const };
  const masked: GenerateRequest = { ...request(transparent), init: { image, strength: 0.5 }, mask: { image } };
  await assert.rejects(engine.generate(masked), (e: Error & { field?: string }) => e.field === 'transparent' && /inpainting/.test(e.message));
});
