import { test } from 'node:test';
import assert from 'node:assert/strict';
import { unetFlops, unetParameterShapes } from '../../../src/engine/nets/unet.ts';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { clipTextParameterShapes, parameterCount, RandomWeights, type ClipShapeConfig } from '../../../bench/random-weights.ts';
import { vaeParameterShapes } from '../../../src/engine/nets/vae.ts';
import { SD15, SDXL } from '../../../bench/specs.ts';
import { SafetensorsFile, storedWeights } from '../../../src/engine/weights/index.ts';
import { FIXTURES, loadUnetFixture } from './unet-fixtures.ts';

for (const model of ['tiny-sd1', 'tiny-sd2', 'tiny-sdxl'] as const) {
  test(`${model}: the UNet parameter table equals the checkpoint's names and shapes`, async () => {
    const { weights, config } = await loadUnetFixture(model);
    const table = unetParameterShapes(config);
    const stored = new Map(weights.names().map((n) => [n, weights.shape(n)]));
    assert.deepEqual([...table.keys()].sort(), [...stored.keys()].sort());
    for (const [name, shape] of table) assert.deepEqual(shape, stored.get(name), name);
  });
}

test('UNet FLOP count: SD1.5 at 64x64 latents is the well-known ~0.8 TFLOP per image', () => {
  const one = unetFlops(SD15.unet, { batch: 1, height: 64, width: 64, tokens: 77 });
  assert.ok(one > 0.7e12 && one < 0.9e12, `${one}`);
  assert.equal(unetFlops(SD15.unet, { batch: 2, height: 64, width: 64, tokens: 77 }), 2 * one);
  // Long prompts (154 tokens) only add cross-attention work.
  const long = unetFlops(SD15.unet, { batch: 1, height: 64, width: 64, tokens: 154 });
  assert.ok(long > one && long < one * 1.05);
});

// The benchmark's random-weight tables must name exactly what real checkpoints hold, or it would build
// different graphs than real models get.
for (const [dir, file, withProjection] of [
  ['tiny-sd1/text_encoder', 'model.safetensors', false],
  ['tiny-sdxl/text_encoder_2', 'model.safetensors', true],
  ['tiny-sd1/vae', 'diffusion_pytorch_model.safetensors', false],
  ['tiny-sdxl/vae', 'diffusion_pytorch_model.safetensors', false],
] as const) {
  test(`benchmark random-weight table matches ${dir}`, () => {
    const config = JSON.parse(readFileSync(join(FIXTURES, dir, 'config.json'), 'utf8'));
    const table = dir.endsWith('vae')
      ? vaeParameterShapes(config)
      : clipTextParameterShapes({ ...config, projection_dim: withProjection ? config.projection_dim : undefined });
    const stored = storedWeights(dir, [SafetensorsFile.open(join(FIXTURES, dir, file))]);
    assert.deepEqual([...table.keys()].sort(), stored.names().sort());
    for (const [name, shape] of table) assert.deepEqual(shape, stored.shape(name), name);
    const w = new RandomWeights('t', table);
    const some = [...table.keys()].find((n) => n.endsWith('.weight') && table.get(n)!.length === 2)!;
    assert.deepEqual(w.get(some).data, w.get(some).data, 'same name, same values');
  });
}

test('benchmark model specs have the real architectures (known parameter counts)', () => {
  assert.equal(parameterCount(unetParameterShapes(SD15.unet)), 859520964);
  assert.equal(parameterCount(unetParameterShapes(SDXL.unet)), 2567463684);
  assert.equal(parameterCount(vaeParameterShapes(SD15.vae)), 83653863);
  const withoutPositionIds = (c: ClipShapeConfig) => parameterCount(clipTextParameterShapes(c)) - c.max_position_embeddings;
  assert.equal(withoutPositionIds(SD15.textEncoders[0]!.config), 123060480); // CLIP ViT-L/14 text model
  assert.equal(withoutPositionIds(SDXL.textEncoders[1]!.config), 694659840); // OpenCLIP bigG + projection
});
