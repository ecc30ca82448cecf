import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { getOrBuildGraph } from '../../../src/engine/onnx/cache.ts';
import { buildUnet, parseUnetConfig, unetGraphOptions, type UnetAttentionKind } from '../../../src/engine/nets/unet.ts';
import { createSession, runSession, type Feed } from '../../../src/engine/runtime.ts';
import type { Tensor } from '../../../src/engine/tensor.ts';
import { FIXTURES, loadUnetFixture, maxViolation, readSafetensors } from './unet-fixtures.ts';

const ATOL = 1e-4;
const RTOL = 1e-3;

type Fixture = Parameters<typeof loadUnetFixture>[0];

async function unetSession(model: Fixture, attention: UnetAttentionKind, cache: string) {
  const { weights, config } = await loadUnetFixture(model);
  const { modelPath } = getOrBuildGraph(cache, { network: 'unet', weightsIdentity: model, precision: 'fp32', options: unetGraphOptions({ attention }) }, (b) =>
    buildUnet(b, weights, config, { attention }),
  );
  return createSession(modelPath, { device: 'cpu' });
}

function timesteps(value: Tensor, batch: number): Tensor {
  // References pass 0-d timesteps (broadcast to the batch) or one per sample.
  const data = value.data.length === 1 ? new Float32Array(batch).fill(value.data[0]!) : Float32Array.from(value.data);
  return { shape: [batch], data };
}

function assertClose(actual: Tensor, expected: Tensor, label: string): void {
  assert.deepEqual(actual.shape, expected.shape, `${label} shape`);
  const v = maxViolation(actual.data, expected.data, ATOL, RTOL);
  assert.ok(v.worst <= 0, `${label}: max |diff| ${v.maxAbs}, worst at ${v.index}: ${actual.data[v.index]} vs ${expected.data[v.index]}`);
}

for (const attention of ['contrib', 'onnx'] as const) {
  test(`SD1 UNet (${attention} attention) matches diffusers for shared and per-sample timesteps`, async () => {
    const cache = mkdtempSync(join(tmpdir(), 'kiln-unet-'));
    try {
      const ref = readSafetensors(join(FIXTURES, 'refs/sd1/unet.safetensors'));
      const session = await unetSession('tiny-sd1', attention, cache);
      for (const c of ['t500', 't1', 't500_1']) {
        const feeds: Record<string, Feed> = {
          sample: ref.get('sample')!,
          timestep: timesteps(ref.get(`timestep_${c}`)!, 2),
          encoder_hidden_states: ref.get('encoder_hidden_states')!,
        };
        const { out } = await runSession(session, feeds);
        assertClose(out!, ref.get(`out_${c}`)!, `sd1 out_${c}`);
      }
    } finally {
      rmSync(cache, { recursive: true, force: true });
    }
  });
}

for (const attention of ['contrib', 'onnx'] as const) {
  test(`SD2 UNet (${attention}; linear projections, per-block heads) matches diffusers`, async () => {
    const cache = mkdtempSync(join(tmpdir(), 'kiln-unet-'));
    try {
      const ref = readSafetensors(join(FIXTURES, 'refs/sd2/unet.safetensors'));
      const session = await unetSession('tiny-sd2', attention, cache);
      const { out } = await runSession(session, {
        sample: ref.get('sample')!,
        timestep: timesteps(ref.get('timestep')!, 2),
        encoder_hidden_states: ref.get('encoder_hidden_states')!,
      });
      assertClose(out!, ref.get('out')!, 'sd2 out');
    } finally {
      rmSync(cache, { recursive: true, force: true });
    }
  });

  test(`SDXL UNet (${attention}; text_time embedding, 2 transformer layers) matches diffusers`, async () => {
    const cache = mkdtempSync(join(tmpdir(), 'kiln-unet-'));
    try {
      const ref = readSafetensors(join(FIXTURES, 'refs/sdxl/unet.safetensors'));
      const session = await unetSession('tiny-sdxl', attention, cache);
      const { out } = await runSession(session, {
        sample: ref.get('sample')!,
        timestep: timesteps(ref.get('timestep')!, 2),
        encoder_hidden_states: ref.get('encoder_hidden_states')!,
        text_embeds: ref.get('text_embeds')!,
        time_ids: ref.get('time_ids')!,
      });
      assertClose(out!, ref.get('out')!, 'sdxl out');
    } finally {
      rmSync(cache, { recursive: true, force: true });
    }
  });
}

test('UNet takes long prompts: 154 tokens repeating the 77 give the 77-token output', async () => {
  // Cross-attention over [K; K] and [V; V] weighs every duplicate half as much, so the result is unchanged.
  const cache = mkdtempSync(join(tmpdir(), 'kiln-unet-'));
  try {
    const ref = readSafetensors(join(FIXTURES, 'refs/sd1/unet.safetensors'));
    const session = await unetSession('tiny-sd1', 'contrib', cache);
    const ctx = ref.get('encoder_hidden_states')!;
    const [batch, tokens, dim] = ctx.shape as [number, number, number];
    const doubled = new Float32Array(batch * tokens * 2 * dim);
    for (let bi = 0; bi < batch; bi++) {
      const one = ctx.data.subarray(bi * tokens * dim, (bi + 1) * tokens * dim);
      doubled.set(one, bi * 2 * tokens * dim);
      doubled.set(one, (bi * 2 + 1) * tokens * dim);
    }
    const { out } = await runSession(session, {
      sample: ref.get('sample')!,
      timestep: timesteps(ref.get('timestep_t500')!, 2),
      encoder_hidden_states: { shape: [batch, 2 * tokens, dim], data: doubled },
    });
    assertClose(out!, ref.get('out_t500')!, 'sd1 with 154 tokens');
  } finally {
    rmSync(cache, { recursive: true, force: true });
  }
});

test('UNet accepts latent sizes that do not halve evenly (upsampling follows the skip sizes)', async () => {
  const cache = mkdtempSync(join(tmpdir(), 'kiln-unet-'));
  try {
    const session = await unetSession('tiny-sd1', 'contrib', cache);
    const [h, w] = [13, 10]; // 13 -> 7 on the way down, so the way up must return to 13, not 14
    const sample = { shape: [1, 4, h, w], data: Float32Array.from({ length: 4 * h * w }, (_, i) => Math.sin(i)) };
    const ctx = { shape: [1, 77, 32], data: Float32Array.from({ length: 77 * 32 }, (_, i) => Math.cos(i)) };
    const { out } = await runSession(session, { sample, timestep: { shape: [1], data: Float32Array.from([10]) }, encoder_hidden_states: ctx });
    assert.deepEqual(out!.shape, [1, 4, h, w]);
    assert.ok(out!.data.every(Number.isFinite));
  } finally {
    rmSync(cache, { recursive: true, force: true });
  }
});

// Single-file checkpoints go through the LDM/SGM key maps and config inference; same references.
for (const [file, refName] of [
  ['tiny-sd1.safetensors', 'sd1'],
  ['tiny-sdxl.safetensors', 'sdxl'],
] as const) {
  test(`UNet from the single-file ${file} matches diffusers`, async () => {
    const cache = mkdtempSync(join(tmpdir(), 'kiln-unet-'));
    try {
      const ref = readSafetensors(join(FIXTURES, `refs/${refName}/unet.safetensors`));
      const session = await unetSession(file, 'contrib', cache);
      const feeds: Record<string, Feed> = {
        sample: ref.get('sample')!,
        timestep: timesteps(ref.get(refName === 'sd1' ? 'timestep_t500' : 'timestep')!, 2),
        encoder_hidden_states: ref.get('encoder_hidden_states')!,
      };
      if (refName === 'sdxl') Object.assign(feeds, { text_embeds: ref.get('text_embeds')!, time_ids: ref.get('time_ids')! });
      const { out } = await runSession(session, feeds);
      assertClose(out!, ref.get(refName === 'sd1' ? 'out_t500' : 'out')!, `${file} out`);
    } finally {
      rmSync(cache, { recursive: true, force: true });
    }
  });
}

test('unsupported UNet configs are refused naming the field', async () => {
  const { config } = await loadUnetFixture('tiny-sd1');
  assert.throws(() => parseUnetConfig({ ...config, class_embed_type: 'timestep' }), /class_embed_type/);
  assert.throws(() => parseUnetConfig({ ...config, down_block_types: ['DownBlock2D', 'SimpleCrossAttnDownBlock2D'] }), /down_block_types/);
  assert.throws(() => parseUnetConfig({ ...config, attention_head_dim: [8, 8, 8] }), /attention_head_dim/);
  const sdxl = parseUnetConfig((await loadUnetFixture('tiny-sdxl')).config);
  assert.deepEqual(sdxl.heads, [2, 4]);
  assert.deepEqual(sdxl.transformerLayers, [1, 2]);
  assert.deepEqual(sdxl.upTransformerLayers, [2, 1]);
  assert.deepEqual(sdxl.textTime, { timeEmbedDim: 8, projectionInputDim: 80 });
});

test('fp16 UNet graph type-checks and runs where onnxruntime CPU has the kernels', async (t) => {
  const ref = readSafetensors(join(FIXTURES, 'refs/sdxl/unet.safetensors'));
  const { weights, config } = await loadUnetFixture('tiny-sdxl');
  const feeds: Record<string, Feed> = {
    sample: ref.get('sample')!,
    timestep: timesteps(ref.get('timestep')!, 2),
    encoder_hidden_states: ref.get('encoder_hidden_states')!,
    text_embeds: ref.get('text_embeds')!,
    time_ids: ref.get('time_ids')!,
  };
  for (const attention of ['contrib', 'onnx'] as const) {
    for (const upcast of [false, true]) {
      const cache = mkdtempSync(join(tmpdir(), 'kiln-unet-'));
      try {
        const cfg = { ...config, upcast_attention: upcast };
        const { modelPath } = getOrBuildGraph(
          cache,
          { network: 'unet', weightsIdentity: 'tiny-sdxl', precision: 'fp16', options: unetGraphOptions({ attention }) },
          (b) => buildUnet(b, weights, cfg, { attention }),
        );
        let session: Awaited<ReturnType<typeof createSession>>;
        try {
          session = await createSession(modelPath, { device: 'cpu' });
        } catch (e) {
          // A missing CPU fp16 kernel is a runtime limitation, not a graph error; type errors still fail the test.
          const missing = /Could not find an implementation for (\w+)/.exec((e as Error).message);
          if (missing) {
            t.diagnostic(`${attention}${upcast ? ' upcast' : ''}: onnxruntime CPU has no float16 kernel for ${missing[1]}`);
            continue;
          }
          throw e;
        }
        const { out } = await runSession(session, feeds);
        // fp16 keeps ~3 significant digits: this checks the graph computes the same function, not fp32 accuracy.
        const v = maxViolation(out!.data, ref.get('out')!.data, 0.05, 0.02);
        assert.ok(v.worst <= 0, `fp16 ${attention}: max |diff| ${v.maxAbs}`);
      } finally {
        rmSync(cache, { recursive: true, force: true });
      }
    }
  }
});
