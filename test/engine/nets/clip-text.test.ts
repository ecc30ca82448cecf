import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { getOrBuildGraph } from '../../../src/engine/onnx/cache.ts';
import type { AttentionKind, Precision } from '../../../src/engine/onnx/graph.ts';
import { buildClipTextEncoder, clipTextGraphOptions, type ClipTextOptions } from '../../../src/engine/nets/clip-text.ts';
import { createSession, runSession, type Feed } from '../../../src/engine/runtime.ts';
import type { Tensor } from '../../../src/engine/tensor.ts';
import type { TextEncoderPart } from '../../../src/engine/weights/model.ts';
import { assertClose, fixtureModel, recordingWeights, ref, type FixtureModel, skipMissingFp16Kernel } from './fixture-io.ts';

const ATOL = 1e-4,
  RTOL = 1e-4;
const cacheDir = mkdtempSync(join(tmpdir(), 'kiln-clip-'));
test.after(() => rmSync(cacheDir, { recursive: true, force: true }));

async function textEncoder(model: FixtureModel, component: TextEncoderPart['component']): Promise<TextEncoderPart> {
  const part = (await fixtureModel(model)).textEncoders.find((t) => t.component === component);
  if (!part) throw new Error(`${model} has no ${component}`);
  return part;
}

async function encode(model: FixtureModel, component: TextEncoderPart['component'], ids: Feed, opts: ClipTextOptions, precision: Precision = 'fp32') {
  const part = await textEncoder(model, component);
  const rec = recordingWeights(part.weights);
  const key = { network: `${model}-${component}`, weightsIdentity: model, precision, options: clipTextGraphOptions(opts) };
  const { modelPath } = getOrBuildGraph(cacheDir, key, (b) => buildClipTextEncoder(b, rec.source, part.config, opts));
  const out = await runSession(await createSession(modelPath, { device: 'cpu' }), { input_ids: ids });
  return { out, read: rec.read, part };
}

/** final_layer_norm computed directly, to build references for clip skip > 1 from stored hidden_states. */
function finalNorm(h: Tensor, part: TextEncoderPart): Tensor {
  const g = part.weights.get('text_model.final_layer_norm.weight').data;
  const bias = part.weights.get('text_model.final_layer_norm.bias').data;
  const eps = part.config.layer_norm_eps;
  const d = g.length;
  const out = new Float32Array(h.data.length);
  for (let r = 0; r < h.data.length / d; r++) {
    const row = h.data.subarray(r * d, (r + 1) * d);
    let mean = 0;
    for (const v of row) mean += v;
    mean /= d;
    let vr = 0;
    for (const v of row) vr += (v - mean) ** 2;
    const inv = 1 / Math.sqrt(vr / d + eps);
    for (let j = 0; j < d; j++) out[r * d + j] = (row[j]! - mean) * inv * g[j]! + bias[j]!;
  }
  return { shape: h.shape, data: out };
}

for (const [model, attention] of [
  ['tiny-sd1', 'contrib'],
  ['tiny-sd1', 'onnx'],
  ['tiny-sd1.safetensors', 'contrib'],
] as [FixtureModel, AttentionKind][]) {
  test(`sd1 text encoder from ${model} (${attention} attention): every hidden state, last_hidden_state, pooler_output`, async () => {
    const r = ref('sd1/text_encoder');
    const { out } = await encode(model, 'text_encoder', r.int64('input_ids'), { allHiddenStates: true, pooled: true, attention });
    for (let i = 0; i <= 5; i++) assertClose(out[`hidden_states.${i}`]!, r.float(`hidden_states.${i}`), ATOL, RTOL, `hidden_states.${i}`);
    assertClose(out.hidden!, r.float('last_hidden_state'), ATOL, RTOL, 'hidden (clip skip 1)');
    assertClose(out.pooled!, r.float('pooler_output'), ATOL, RTOL, 'pooled');
  });
}

test('sd1 clip skip 2 = final_layer_norm(hidden_states[-2]) and skips building the last layer', async () => {
  const r = ref('sd1/text_encoder');
  const { out, read, part } = await encode('tiny-sd1', 'text_encoder', r.int64('input_ids'), { clipSkip: 2 });
  assertClose(out.hidden!, finalNorm(r.float('hidden_states.4'), part), ATOL, RTOL, 'clip skip 2');
  assert.ok(read.has('text_model.encoder.layers.3.mlp.fc2.weight'));
  assert.ok(![...read.keys()].some((n) => n.startsWith('text_model.encoder.layers.4.')), 'layer 4 is not needed for clip skip 2');
  assert.deepEqual(Object.keys(out).sort(), ['hidden']);
});

test('sd1 clip skip 3 uses hidden_states[-3]', async () => {
  const r = ref('sd1/text_encoder');
  const { out, part } = await encode('tiny-sd1', 'text_encoder', r.int64('input_ids'), { clipSkip: 3 });
  assertClose(out.hidden!, finalNorm(r.float('hidden_states.3'), part), ATOL, RTOL, 'clip skip 3');
});

test('sd2 (gelu) prompt embeds: clip skip none and diffusers clip_skip=1 (A1111 clip skip 2)', async () => {
  const r = ref('sd2/text_encoder');
  const ids = r.int64('input_ids');
  const one = await encode('tiny-sd2', 'text_encoder', ids, { clipSkip: 1, pooled: true });
  assertClose(one.out.hidden!, r.float('prompt_embeds_clip_skip_none'), ATOL, RTOL, 'sd2 clip skip 1');
  assertClose(one.out.pooled!, r.float('pooler_output'), ATOL, RTOL, 'sd2 pooled');
  const two = await encode('tiny-sd2', 'text_encoder', ids, { clipSkip: 2 });
  assertClose(two.out.hidden!, r.float('prompt_embeds_clip_skip_1'), ATOL, RTOL, 'sd2 clip skip 2');
});

for (const model of ['tiny-sdxl', 'tiny-sdxl.safetensors'] as FixtureModel[]) {
  test(`sdxl from ${model}: both encoders penultimate without norm, te2 text_embeds, concatenated prompt_embeds`, async () => {
    const r = ref('sdxl/text_encoders');
    const te1 = await encode(model, 'text_encoder', r.int64('te1_input_ids'), { penultimateWithoutNorm: true });
    const te2 = await encode(model, 'text_encoder_2', r.int64('te2_input_ids'), { penultimateWithoutNorm: true, textEmbeds: true });
    assertClose(te1.out.hidden!, r.float('te1_hidden_states.4'), ATOL, RTOL, 'te1 hidden_states[-2]');
    assertClose(te2.out.hidden!, r.float('te2_hidden_states.4'), ATOL, RTOL, 'te2 hidden_states[-2]');
    assertClose(te2.out.text_embeds!, r.float('te2_text_embeds'), ATOL, RTOL, 'te2 text_embeds');
    assertClose(te2.out.text_embeds!, r.float('pooled_prompt_embeds'), ATOL, RTOL, 'pooled_prompt_embeds');
    // prompt_embeds = cat([te1, te2], -1)
    const [, seq, d1] = te1.out.hidden!.shape as [number, number, number];
    const d2 = te2.out.hidden!.shape[2]!;
    const cat = new Float32Array(seq * (d1 + d2));
    for (let s = 0; s < seq; s++) {
      cat.set(te1.out.hidden!.data.subarray(s * d1, (s + 1) * d1), s * (d1 + d2));
      cat.set(te2.out.hidden!.data.subarray(s * d2, (s + 1) * d2), s * (d1 + d2) + d1);
    }
    assertClose({ shape: [1, seq, d1 + d2], data: cat }, r.float('prompt_embeds'), ATOL, RTOL, 'prompt_embeds');
  });
}

test('option errors name the problem', async () => {
  const { weights, config } = await textEncoder('tiny-sd1', 'text_encoder');
  const build = (opts: ClipTextOptions) => () =>
    getOrBuildGraph(cacheDir, { network: 'bad', weightsIdentity: String(Math.random()), precision: 'fp32' }, (b) =>
      buildClipTextEncoder(b, weights, config, opts),
    );
  assert.throws(build({ clipSkip: 7 }), /clipSkip 7 is out of range/);
  assert.throws(build({ clipSkip: 0 }), /clipSkip 0/);
  assert.throws(build({ textEmbeds: true }), /text_projection/);
  assert.throws(build({ sequenceLength: 78 }), /sequenceLength 78 exceeds max_position_embeddings 77/);
  assert.throws(() => buildClipTextEncoder(null as never, weights, { ...config, hidden_act: 'relu' }), /hidden_act "relu"/);
});

test('fp16 text encoder graph type-checks and onnxruntime CPU creates a session', async (t) => {
  const r = ref('sd1/text_encoder');
  for (const attention of ['contrib', 'onnx'] as AttentionKind[]) {
    const opts: ClipTextOptions = { pooled: true, clipSkip: 2, attention };
    let half: Awaited<ReturnType<typeof encode>>;
    try {
      half = await encode('tiny-sd1', 'text_encoder', r.int64('input_ids'), opts, 'fp16');
    } catch (e) {
      if (skipMissingFp16Kernel(t, attention, e)) continue;
      throw e;
    }
    const { out: full } = await encode('tiny-sd1', 'text_encoder', r.int64('input_ids'), opts);
    // fp16 carries ~3 significant digits; this checks the graph computes the same thing, not fp32 accuracy.
    assertClose(half.out.hidden!, full.hidden!, 0.05, 0.02, `fp16 ${attention} hidden`);
    assertClose(half.out.pooled!, full.pooled!, 0.05, 0.02, `fp16 ${attention} pooled`);
  }
});
