// Full pipelines with LoRAs merged (refs/lora/*_txt2img_euler): kohya SD1 with LoCon, LoHa, and kohya SDXL on the
// single file, at m = 0.7 for UNet and text encoders, against diffusers with the merged weights. Also: the
// infotext "Lora hashes", weight 0 = base, and which combinations add graphs (low-rank ones share one branch graph).
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createEngine } from '../../../src/engine/engine.ts';
import type { GenerateRequest, LoraSettings } from '../../../src/engine/api.ts';
import type { Tensor } from '../../../src/engine/tensor.ts';
import { SafetensorsFile } from '../../../src/engine/weights/safetensors.ts';
import { assertClose } from './tolerance.ts';

const FIX = 'test/fixtures';
const cacheDir = mkdtempSync(join(tmpdir(), 'kiln-lora-'));
const engine = createEngine({ cacheDir });
after(async () => {
  await engine.close();
  rmSync(cacheDir, { recursive: true, force: true });
});

async function runLoraRef(name: string, model: GenerateRequest['model'], loras: LoraSettings[], schedule?: string) {
  const json = JSON.parse(readFileSync(`${FIX}/refs/lora/${name}.json`, 'utf8'));
  const file = SafetensorsFile.open(`${FIX}/refs/lora/${name}.safetensors`);
  const call = json.call;
  let finalLatents: Tensor | undefined;
  const result = await engine.generate(
    {
      model,
      prompts: Array.isArray(call.prompt) ? call.prompt : [call.prompt],
      negativePrompt: Array.isArray(call.negative_prompt) ? call.negative_prompt : [call.negative_prompt],
      width: call.width,
      height: call.height,
      steps: call.num_inference_steps,
      cfgScale: call.guidance_scale,
      sampler: 'Euler',
      schedule,
      seed: 1,
      loras,
    },
    {},
    { initialNoise: file.tensor('input_latents').data, onFinalLatents: (l) => (finalLatents = l) },
  );
  assertClose(finalLatents!.data, file.tensor('final_latents').data, 1e-3, 1e-3, `${name} final latents`);
  const expected = file.tensor('image');
  const per = expected.data.length / result.images.length;
  result.images.forEach((g, n) => {
    let worst = 0;
    for (let i = 0; i < per; i++) worst = Math.max(worst, Math.abs(g.image.data[i]! - expected.data[n * per + i]! * 255));
    assert.ok(worst <= 0.5 + 2e-3 * 255, `${name} image ${n}: max difference ${worst.toFixed(3)} levels`);
  });
  return result;
}

const lora = (file: string, m: number): LoraSettings => ({ name: file, path: `${FIX}/loras/${file}.safetensors`, te: m, unet: m });

test('kohya SD1 LoRA with LoCon at 0.7 matches the reference pipeline, and the infotext carries its hash', async () => {
  const result = await runLoraRef('sd1_kohya_txt2img_euler', { path: `${FIX}/tiny-sd1` }, [lora('tiny-sd1-kohya', 0.7)]);
  assert.match(result.images[0]!.infotext, /Lora hashes: "tiny-sd1-kohya: [0-9a-f]{12}"/);
  assert.equal(result.warnings, undefined);
});

test('LoHa at 0.7 matches the reference pipeline', async () => {
  await runLoraRef('sd1_loha_txt2img_euler', { path: `${FIX}/tiny-sd1` }, [lora('tiny-sd1-loha', 0.7)]);
});

test('kohya SDXL LoRA at 0.7 matches the reference pipeline on the single file', async () => {
  await runLoraRef(
    'sdxl_kohya_txt2img_euler',
    { path: `${FIX}/tiny-sdxl.safetensors`, tokenizerDir: `${FIX}/tiny-sdxl` },
    [lora('tiny-sdxl-kohya', 0.7)],
    'DDIM',
  );
});

test('a LoRA at weight 0 gives the base pixels; low-rank LoRAs share one branch UNet graph, merged formats add one per combination', async () => {
  // Its own cache folder, so the graph count does not depend on the tests before it.
  const dir = mkdtempSync(join(tmpdir(), 'kiln-lora-graphs-'));
  const own = createEngine({ cacheDir: dir });
  try {
    const req: GenerateRequest = {
      model: { path: `${FIX}/tiny-sd1` },
      prompts: ['a red apple'],
      width: 64,
      height: 64,
      steps: 2,
      cfgScale: 7,
      sampler: 'Euler',
      seed: 3,
    };
    const graphs = () => readdirSync(dir).filter((f) => f.startsWith('unet-')).length;
    const plain = await own.generate(req);
    const before = graphs();
    const zero = await own.generate({ ...req, loras: [lora('tiny-sd1-kohya', 0)] });
    assert.deepEqual(zero.images[0]!.image.data, plain.images[0]!.image.data);
    assert.equal(graphs(), before, 'weight 0 adds no graph');
    const unetOnly = await own.generate({ ...req, loras: [{ ...lora('tiny-sd1-kohya', 1), te: 0 }] });
    assert.notDeepEqual(unetOnly.images[0]!.image.data, plain.images[0]!.image.data);
    assert.equal(graphs(), before + 1, 'the first low-rank LoRA adds the branch graph');
    const other = await own.generate({ ...req, loras: [lora('tiny-sd1-kohya', -0.5)] });
    assert.notDeepEqual(other.images[0]!.image.data, unetOnly.images[0]!.image.data);
    assert.equal(graphs(), before + 1, 'another low-rank combination reuses it');
    await own.generate({ ...req, loras: [lora('tiny-sd1-loha', 0.7)] });
    assert.equal(graphs(), before + 2, 'a LoHa combination is merged: one more graph');
  } finally {
    await own.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('the engine refuses LoRA weights outside [-5, 5] naming the field', async () => {
  const req: GenerateRequest = { model: { path: `${FIX}/tiny-sd1` }, prompts: ['x'], width: 64, height: 64, steps: 1, cfgScale: 7, sampler: 'Euler', seed: 1 };
  await assert.rejects(engine.generate({ ...req, loras: [{ ...lora('tiny-sd1-kohya', 1), unet: 5.5 }] }), /loras\[0\]\.unet must be a number from -5 to 5/);
});
