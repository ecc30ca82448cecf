// A tiny SD3.5-shaped model (QK RMS norm everywhere, MMDiT-X dual attention in block 0; random weights from
// test/engine/tiny-sd35-model.ts, as there is no SD3.5 fixture) through the engine end to end: the diffusers folder
// with the transformer in either layout (diffusers, or the original names) give the same latents, deterministically,
// and the all-in-one single file loads and generates. (The single file is not compared with the folder: its text
// encoders are configured from their weights, and already for plain SD3 that gives other latents than the folder's
// config.json files.)
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createEngine } from '../../../src/engine/engine.ts';
import type { GenerateRequest } from '../../../src/engine/api.ts';
import { inspectModel } from '../../../src/engine/inspect.ts';
import type { Tensor } from '../../../src/engine/tensor.ts';
import { writeTinySd3Folder, writeTinySd3SingleFile } from '../tiny-flow-models.ts';
import { TINY_SD35_DIFFUSERS_CONFIG, tinySd35Original, toDiffusersLayout, writeHostTensors } from '../tiny-sd35-model.ts';

const work = mkdtempSync(join(tmpdir(), 'kiln-sd35-pipe-'));
const engine = createEngine({ cacheDir: join(work, 'cache') });
after(async () => {
  await engine.close();
  rmSync(work, { recursive: true, force: true });
});

// The tiny SD3 folder's encoders, VAE and tokenizers with the SD3.5 transformer in place of SD3's.
const folder = writeTinySd3Folder(join(work, 'tiny-sd35'));
const original = tinySd35Original();
writeHostTensors(join(folder, 'transformer', 'diffusion_pytorch_model.safetensors'), toDiffusersLayout(original));
writeFileSync(join(folder, 'transformer', 'config.json'), JSON.stringify(TINY_SD35_DIFFUSERS_CONFIG));
// The same folder with the transformer stored under the original (Stability) names.
const originalFolder = join(work, 'tiny-sd35-original-names');
cpSync(folder, originalFolder, { recursive: true });
writeHostTensors(join(originalFolder, 'transformer', 'diffusion_pytorch_model.safetensors'), original);
const single = writeTinySd3SingleFile(join(work, 'tiny-sd35.safetensors'), folder, writeHostTensors(join(work, 'mmdit35.safetensors'), original));

const request = (model: GenerateRequest['model']): GenerateRequest => ({
  model,
  prompts: ['a photo of a red fox'],
  negativePrompt: 'blue',
  width: 64,
  height: 64,
  steps: 2,
  cfgScale: 5,
  sampler: 'Euler',
  seed: 35,
});

async function latentsOf(req: GenerateRequest): Promise<Tensor> {
  let latents: Tensor | undefined;
  const result = await engine.generate(req, {}, { onFinalLatents: (l) => (latents = l) });
  assert.equal(result.images.length, 1);
  return latents!;
}

test('tiny SD3.5: both transformer layouts generate the same latents, deterministically; the single file runs', async () => {
  const a = await latentsOf(request({ path: folder }));
  const again = await latentsOf(request({ path: folder }));
  assert.deepEqual(a.data, again.data);
  assert.ok(a.data.every(Number.isFinite));
  const b = await latentsOf(request({ path: originalFolder }));
  assert.deepEqual(b.data, a.data, 'diffusers and original layouts give the same latents');
  assert.equal((await inspectModel({ path: single })).family, 'sd3');
  const s = await latentsOf(request({ path: single, tokenizerDir: folder }));
  const s2 = await latentsOf(request({ path: single, tokenizerDir: folder }));
  assert.ok(s.data.every(Number.isFinite));
  assert.deepEqual(s.data, s2.data);
});
