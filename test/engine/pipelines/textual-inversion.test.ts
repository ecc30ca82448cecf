// Textual inversion against refs/ti/sd1_txt2img_euler_ti: "tiny-ti" in the prompts expands to the embedding's 3
// vectors (kohya `emb_params`, diffusers `{"<tiny-ti>": ...}` and A1111's pickled .pt files give the same result), final latents and
// images within the README's pipeline tolerances. A prompt without the name is unchanged by the embedding.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createEngine } from '../../../src/engine/engine.ts';
import type { GenerateRequest } from '../../../src/engine/api.ts';
import type { Tensor } from '../../../src/engine/tensor.ts';
import { SafetensorsFile } from '../../../src/engine/weights/safetensors.ts';
import { assertClose } from './tolerance.ts';

const FIX = 'test/fixtures';
const cacheDir = mkdtempSync(join(tmpdir(), 'kiln-ti-'));
const engine = createEngine({ cacheDir });
after(async () => {
  await engine.close();
  rmSync(cacheDir, { recursive: true, force: true });
});

const json = JSON.parse(readFileSync(`${FIX}/refs/ti/sd1_txt2img_euler_ti.json`, 'utf8'));
const ref = SafetensorsFile.open(`${FIX}/refs/ti/sd1_txt2img_euler_ti.safetensors`);
const request: GenerateRequest = {
  model: { path: `${FIX}/tiny-sd1` },
  prompts: json.call.prompt,
  negativePrompt: json.call.negative_prompt,
  width: 64,
  height: 64,
  steps: json.call.num_inference_steps,
  cfgScale: json.call.guidance_scale,
  sampler: 'Euler',
  seed: 1,
};

for (const file of ['tiny-ti.safetensors', 'tiny-ti-diffusers.safetensors', 'tiny-ti.pt']) {
  test(`textual inversion (${file}) matches the reference pipeline`, async () => {
    let latents: Tensor | undefined;
    const result = await engine.generate(
      { ...request, embeddings: [{ name: 'tiny-ti', path: `${FIX}/embeddings/${file}` }] },
      {},
      { initialNoise: ref.tensor('input_latents').data, onFinalLatents: (l) => (latents = l) },
    );
    assertClose(latents!.data, ref.tensor('final_latents').data, 1e-3, 1e-3, 'final latents within atol/rtol 1e-3');
    const image = ref.tensor('image');
    const per = image.data.length / result.images.length;
    result.images.forEach((g, n) => {
      let worst = 0;
      for (let i = 0; i < per; i++) worst = Math.max(worst, Math.abs(g.image.data[i]! - image.data[n * per + i]! * 255));
      assert.ok(worst <= 0.5 + 2e-3 * 255, `image ${n}: ${worst}`);
    });
    assert.match(result.images[0]!.prompt, /tiny-ti/);
  });
}

test('an embedding changes only prompts that name it', async () => {
  const plain = { ...request, prompts: ['a photo of a horse'], negativePrompt: '', steps: 2 };
  const a = await engine.generate(plain);
  const b = await engine.generate({ ...plain, embeddings: [{ name: 'tiny-ti', path: `${FIX}/embeddings/tiny-ti.safetensors` }] });
  assert.deepEqual(b.images[0]!.image.data, a.images[0]!.image.data);
  const c = await engine.generate({
    ...plain,
    prompts: ['a photo of tiny-ti'],
    embeddings: [{ name: 'tiny-ti', path: `${FIX}/embeddings/tiny-ti.safetensors` }],
  });
  const d = await engine.generate({ ...plain, prompts: ['a photo of tiny-ti'] });
  assert.notDeepEqual(c.images[0]!.image.data, d.images[0]!.image.data);
});
