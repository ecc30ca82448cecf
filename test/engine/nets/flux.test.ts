import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildFluxTransformer, FLUX_IO, FLUX1_DEV, fluxConfigFromWeights, fluxParameterShapes } from '../../../src/engine/nets/flux.ts';
import { getOrBuildGraph } from '../../../src/engine/onnx/cache.ts';
import type { AttentionKind } from '../../../src/engine/onnx/graph.ts';
import { createSession, runSession } from '../../../src/engine/runtime.ts';
import { DIFFUSION_MODEL_PREFIX, fluxLayoutOf, fluxWeightsAsBfl, transformerTensors } from '../../../src/engine/weights/flux-keys.ts';
import { type TensorToWrite, writeSafetensors } from '../../../src/engine/weights/safetensors.ts';
import { openTensorFile } from '../../../src/engine/weights/tensor-file.ts';
import { storedWeights } from '../../../src/engine/weights/sources.ts';
import { assertClose, FIXTURES, ref } from './fixture-io.ts';

// fixtures README: "T5, Flux and SD3 transformers: atol 1e-4, rtol 1e-3".
const ATOL = 1e-4,
  RTOL = 1e-3;
const AXES = [4, 6, 6];
const cacheDir = mkdtempSync(join(tmpdir(), 'kiln-flux-'));
test.after(() => rmSync(cacheDir, { recursive: true, force: true }));

const layouts = {
  bfl: join(FIXTURES, 'tiny-flux', 'flux-bfl.safetensors'),
  diffusers: join(FIXTURES, 'tiny-flux', 'transformer', 'diffusion_pytorch_model.safetensors'),
} as const;

async function forward(layout: keyof typeof layouts, attention: AttentionKind) {
  const stored = storedWeights(layout, [openTensorFile(layouts[layout])]);
  assert.equal(fluxLayoutOf(stored), layout);
  const w = fluxWeightsAsBfl(stored);
  const config = fluxConfigFromWeights(w, AXES);
  const r = ref('flux/transformer');
  const key = { network: `flux-${layout}`, weightsIdentity: layout, precision: 'fp32' as const, options: { attention } };
  const { modelPath } = getOrBuildGraph(cacheDir, key, (b) => buildFluxTransformer(b, w, config, { textTokens: 10, attention }));
  const session = await createSession(modelPath, { device: 'cpu' });
  const out = await runSession(session, {
    [FLUX_IO.img]: r.float('img'),
    [FLUX_IO.imgIds]: r.float('img_ids'),
    [FLUX_IO.txt]: r.float('txt'),
    [FLUX_IO.txtIds]: r.float('txt_ids'),
    [FLUX_IO.timesteps]: r.float('timestep'),
    [FLUX_IO.y]: r.float('y'),
    [FLUX_IO.guidance]: r.float('guidance'),
  });
  return { out: out[FLUX_IO.output]!, r, config };
}

for (const [layout, attention] of [
  ['bfl', 'contrib'],
  ['bfl', 'onnx'],
  ['diffusers', 'contrib'],
] as const) {
  test(`tiny Flux transformer from the ${layout} layout (${attention} attention) matches the reference`, async (t) => {
    const { out, r, config } = await forward(layout, attention);
    assert.deepEqual(
      { heads: config.heads, headDim: config.headDim, doubleBlocks: config.doubleBlocks, singleBlocks: config.singleBlocks, guidance: config.guidanceEmbed },
      { heads: 3, headDim: 16, doubleBlocks: 1, singleBlocks: 1, guidance: true },
    );
    const worst = assertClose(out, r.float(layout === 'bfl' ? 'output_bfl' : 'output'), ATOL, RTOL, `${layout} output`);
    t.diagnostic(`max abs diff ${worst}`);
  });
}

test('the diffusers layout maps onto every BFL weight with the same shapes', () => {
  const bfl = storedWeights('bfl', [openTensorFile(layouts.bfl)]);
  const mapped = fluxWeightsAsBfl(storedWeights('diffusers', [openTensorFile(layouts.diffusers)]));
  assert.deepEqual(mapped.names().sort(), bfl.names().sort());
  for (const n of bfl.names()) assert.deepEqual(mapped.shape(n), bfl.shape(n), n);
  // The fused tensors come back bit-exact (the converter only split, concatenated and swapped).
  for (const n of ['double_blocks.0.img_attn.qkv.weight', 'single_blocks.0.linear1.bias', 'final_layer.adaLN_modulation.1.weight']) {
    assert.deepEqual(mapped.get(n).data, bfl.get(n).data, n);
  }
});

test('a Flux transformer without RoPE axes for its head dim is refused by name', () => {
  const w = storedWeights('bfl', [openTensorFile(layouts.bfl)]);
  assert.throws(() => fluxConfigFromWeights(w), /axes_dims_rope/);
  assert.throws(() => fluxConfigFromWeights(w, [4, 6, 4]), /sum to the head dim 16/);
});

test('a ComfyUI-style single file (model.diffusion_model. prefix) reads as the BFL layout', () => {
  const dir = mkdtempSync(join(tmpdir(), 'kiln-flux-prefixed-'));
  try {
    const bfl = openTensorFile(layouts.bfl);
    const file = join(dir, 'flux-comfy.safetensors');
    const tensors: Record<string, TensorToWrite> = {};
    for (const n of bfl.names()) tensors[`${DIFFUSION_MODEL_PREFIX}${n}`] = { dtype: 'F32', shape: bfl.entry(n).shape, bytes: bfl.readBytes(n) };
    tensors['vae.decoder.conv_in.weight'] = { dtype: 'F32', shape: [1], bytes: new Uint8Array(4) };
    writeSafetensors(file, tensors);
    const w = fluxWeightsAsBfl(transformerTensors('comfy', [openTensorFile(file)]));
    assert.deepEqual(w.get('single_blocks.0.linear1.weight'), bfl.tensor('single_blocks.0.linear1.weight'));
    assert.equal(fluxConfigFromWeights(w, AXES).doubleBlocks, 1);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('schnell-style weights (no guidance_in) build a graph without a guidance input', async () => {
  const full = storedWeights('bfl', [openTensorFile(layouts.bfl)]);
  const names = full.names().filter((n) => !n.startsWith('guidance_in.'));
  const schnell = {
    ...full,
    names: () => names,
    has: (n: string) => names.includes(n),
    shape: (n: string) => full.shape(n),
    dtype: (n: string) => full.dtype(n),
    get: (n: string) => full.get(n),
  };
  const config = fluxConfigFromWeights(schnell, AXES);
  assert.equal(config.guidanceEmbed, false);
  const { modelPath } = getOrBuildGraph(cacheDir, { network: 'flux-schnell', weightsIdentity: 'schnell', precision: 'fp32' }, (b) =>
    buildFluxTransformer(b, schnell, config, { textTokens: 10 }),
  );
  const session = await createSession(modelPath, { device: 'cpu' });
  assert.ok(!session.inputNames.includes(FLUX_IO.guidance));
  const r = ref('flux/transformer');
  const out = await runSession(session, {
    [FLUX_IO.img]: r.float('img'),
    [FLUX_IO.imgIds]: r.float('img_ids'),
    [FLUX_IO.txt]: r.float('txt'),
    [FLUX_IO.txtIds]: r.float('txt_ids'),
    [FLUX_IO.timesteps]: r.float('timestep'),
    [FLUX_IO.y]: r.float('y'),
  });
  // Without the guidance term the conditioning vector, and so the output, differs from the dev reference.
  assert.equal(out[FLUX_IO.output]!.data.length, 16 * 64);
  assert.ok(out[FLUX_IO.output]!.data.every(Number.isFinite));
  assert.throws(() => assertClose(out[FLUX_IO.output]!, r.float('output_bfl'), ATOL, RTOL, 'schnell'));
});

test('the parameter table matches the tiny checkpoint exactly and puts FLUX.1-dev at 11.9 B parameters', () => {
  const bfl = storedWeights('bfl', [openTensorFile(layouts.bfl)]);
  const table = fluxParameterShapes(fluxConfigFromWeights(bfl, AXES));
  assert.deepEqual([...table.keys()].sort(), bfl.names().sort());
  for (const [n, shape] of table) assert.deepEqual(shape, bfl.shape(n), n);
  const count = (c: typeof FLUX1_DEV) => [...fluxParameterShapes(c).values()].reduce((a, s) => a + s.reduce((x, d) => x * d, 1), 0);
  const dev = count(FLUX1_DEV);
  assert.ok(Math.abs(dev - 11.9e9) < 0.05e9, `FLUX.1-dev has ${dev} parameters`);
  assert.ok(count({ ...FLUX1_DEV, guidanceEmbed: false }) < dev);
});
