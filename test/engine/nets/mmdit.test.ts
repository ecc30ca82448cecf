import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildMmdit, MMDIT_IO, mmditConfigFromWeights } from '../../../src/engine/nets/mmdit.ts';
import { getOrBuildGraph } from '../../../src/engine/onnx/cache.ts';
import { createRng } from '../../../src/engine/rng.ts';
import { createSession, runSession } from '../../../src/engine/runtime.ts';
import { flowSchedule, SD3_SCHEDULE, sampleFlowEuler } from '../../../src/engine/samplers/flow.ts';
import { sd3LayoutOf, sd3WeightsAsOriginal } from '../../../src/engine/weights/sd3-keys.ts';
import { storedWeights } from '../../../src/engine/weights/sources.ts';
import { openTensorFile } from '../../../src/engine/weights/tensor-file.ts';
import { assertClose, FIXTURES, ref } from './fixture-io.ts';

// fixtures README: "T5, Flux and SD3 transformers: atol 1e-4, rtol 1e-3".
const ATOL = 1e-4,
  RTOL = 1e-3;
const cacheDir = mkdtempSync(join(tmpdir(), 'kiln-mmdit-'));
test.after(() => rmSync(cacheDir, { recursive: true, force: true }));

const layouts = {
  original: join(FIXTURES, 'tiny-sd3', 'sd3-original.safetensors'),
  diffusers: join(FIXTURES, 'tiny-sd3', 'transformer', 'diffusion_pytorch_model.safetensors'),
} as const;

for (const [layout, attention] of [
  ['original', 'contrib'],
  ['original', 'onnx'],
  ['diffusers', 'contrib'],
] as const) {
  test(`tiny SD3 MMDiT from the ${layout} layout (${attention} attention) matches the reference`, async (t) => {
    const stored = storedWeights(layout, [openTensorFile(layouts[layout])]);
    assert.equal(sd3LayoutOf(stored), layout);
    const w = sd3WeightsAsOriginal(stored);
    const config = mmditConfigFromWeights(w);
    assert.deepEqual(
      { depth: config.depth, heads: config.heads, hidden: config.hidden, posEmbedMaxSize: config.posEmbedMaxSize },
      { depth: 2, heads: 2, hidden: 128, posEmbedMaxSize: 8 },
    );
    const key = { network: `mmdit-${layout}`, weightsIdentity: layout, precision: 'fp32' as const, options: { attention } };
    const { modelPath } = getOrBuildGraph(cacheDir, key, (b) => buildMmdit(b, w, config, { attention }));
    const r = ref('sd3/transformer');
    const out = await runSession(await createSession(modelPath, { device: 'cpu' }), {
      [MMDIT_IO.x]: r.float('latents'),
      [MMDIT_IO.timestep]: r.float('timestep'),
      [MMDIT_IO.context]: r.float('context'),
      [MMDIT_IO.y]: r.float('pooled'),
    });
    const expected = r.float(layout === 'original' ? 'output_original' : 'output');
    t.diagnostic(`max abs diff ${assertClose(out[MMDIT_IO.output]!, expected, ATOL, RTOL, `${layout} output`)}`);
  });
}

test('the diffusers SD3 layout maps onto every original weight, bit-exact', () => {
  const original = storedWeights('original', [openTensorFile(layouts.original)]);
  const mapped = sd3WeightsAsOriginal(storedWeights('diffusers', [openTensorFile(layouts.diffusers)]));
  assert.deepEqual(mapped.names().sort(), original.names().sort());
  for (const n of original.names()) assert.deepEqual(mapped.get(n), original.get(n), n);
});

test('a tiny 4-step SD3 flow run from seed 6101 is deterministic (noise = the reference latents, shift-3 schedule)', async () => {
  const w = sd3WeightsAsOriginal(storedWeights('original', [openTensorFile(layouts.original)]));
  const key = { network: 'mmdit-original', weightsIdentity: 'original', precision: 'fp32' as const, options: { attention: 'contrib' } };
  const { modelPath } = getOrBuildGraph(cacheDir, key, (b) => buildMmdit(b, w, mmditConfigFromWeights(w), { attention: 'contrib' }));
  const session = await createSession(modelPath, { device: 'cpu' });
  const r = ref('sd3/transformer');
  const noise = createRng('cpu', 6101).randn(16 * 8 * 8);
  assertClose({ shape: [1, 16, 8, 8], data: noise }, r.float('latents'), 1e-6, 0, 'seed 6101 noise');
  // SD3 feeds the timestep as sigma * 1000 (scheduler.timesteps).
  const velocity = async (x: Float32Array, sigma: number) =>
    (
      await runSession(session, {
        [MMDIT_IO.x]: { shape: [1, 16, 8, 8], data: x },
        [MMDIT_IO.timestep]: { shape: [1], data: Float32Array.of(Math.fround(sigma * 1000)) },
        [MMDIT_IO.context]: r.float('context'),
        [MMDIT_IO.y]: r.float('pooled'),
      })
    )[MMDIT_IO.output]!.data;
  const { sigmas } = flowSchedule(4, SD3_SCHEDULE, { spacing: 'sd3' });
  const a = await sampleFlowEuler(velocity, noise, sigmas);
  const b = await sampleFlowEuler(velocity, createRng('cpu', 6101).randn(16 * 8 * 8), sigmas);
  assert.deepEqual(a, b);
  assert.ok(a.every(Number.isFinite));
});
