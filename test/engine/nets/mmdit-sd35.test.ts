// SD3.5 MMDiT (QK RMS norm, MMDiT-X dual attention) checked against our own reading of the reference code (SAI's
// mmditx.py, diffusers' JointTransformerBlock): there is no SD3.5 fixture, so each joint block of a tiny SD3.5-shaped
// model (test/engine/tiny-sd35-model.ts) is compared with a plain, loop-by-loop JS implementation written here from
// that reading, and both weight layouts must give the same whole-model output.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildMmdit, buildMmditJointBlock, MMDIT_BLOCK_IO, MMDIT_IO, mmditConfigFromWeights } from '../../../src/engine/nets/mmdit.ts';
import { getOrBuildGraph } from '../../../src/engine/onnx/cache.ts';
import { createRng } from '../../../src/engine/rng.ts';
import { createSession, runSession } from '../../../src/engine/runtime.ts';
import { sd3LayoutOf, sd3WeightsAsOriginal } from '../../../src/engine/weights/sd3-keys.ts';
import { storedWeights } from '../../../src/engine/weights/sources.ts';
import { openTensorFile } from '../../../src/engine/weights/tensor-file.ts';
import { type HostTensor, TINY_SD35, tinySd35Original, toDiffusersLayout, writeHostTensors } from '../tiny-sd35-model.ts';

const work = mkdtempSync(join(tmpdir(), 'kiln-mmdit35-'));
test.after(() => rmSync(work, { recursive: true, force: true }));
const original = tinySd35Original();
const files = {
  original: writeHostTensors(join(work, 'original.safetensors'), original),
  diffusers: writeHostTensors(join(work, 'diffusers.safetensors'), toDiffusersLayout(original)),
};
const weightsOf = (layout: keyof typeof files) => sd3WeightsAsOriginal(storedWeights(layout, [openTensorFile(files[layout])]));

// ---- The plain reference: row-major [rows, width] matrices, one sample. ----
const { hidden, heads, headDim } = TINY_SD35;
const param = (n: string): Float32Array => {
  const t = original.get(n);
  if (!t) throw new Error(`missing ${n}`);
  return t.data;
};
function linearRef(x: Float32Array, n: number, name: string): Float32Array {
  const w = param(`${name}.weight`);
  const bias = param(`${name}.bias`);
  const outDim = bias.length;
  const inDim = w.length / outDim;
  const y = new Float32Array(n * outDim);
  for (let r = 0; r < n; r++)
    for (let o = 0; o < outDim; o++) {
      let s = bias[o]!;
      for (let i = 0; i < inDim; i++) s += x[r * inDim + i]! * w[o * inDim + i]!;
      y[r * outDim + o] = s;
    }
  return y;
}
const silu = (v: number) => v / (1 + Math.exp(-v));
const gelu = (v: number) => 0.5 * v * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (v + 0.044715 * v ** 3)));
/** LayerNorm without affine (eps 1e-6), then x * (1 + scale) + shift. */
function modulateRef(x: Float32Array, n: number, shift: Float32Array, scale: Float32Array): Float32Array {
  const y = new Float32Array(x.length);
  for (let r = 0; r < n; r++) {
    let mean = 0;
    for (let i = 0; i < hidden; i++) mean += x[r * hidden + i]!;
    mean /= hidden;
    let variance = 0;
    for (let i = 0; i < hidden; i++) variance += (x[r * hidden + i]! - mean) ** 2;
    variance /= hidden;
    for (let i = 0; i < hidden; i++) y[r * hidden + i] = ((x[r * hidden + i]! - mean) / Math.sqrt(variance + 1e-6)) * (1 + scale[i]!) + shift[i]!;
  }
  return y;
}
/** RMSNorm over each head's 64 values (eps 1e-6) times the learned scale. */
function headRmsRef(x: Float32Array, n: number, scale: Float32Array): Float32Array {
  const y = new Float32Array(x.length);
  for (let r = 0; r < n; r++)
    for (let h = 0; h < heads; h++) {
      const at = r * hidden + h * headDim;
      let ms = 0;
      for (let d = 0; d < headDim; d++) ms += x[at + d]! ** 2;
      const inv = 1 / Math.sqrt(ms / headDim + 1e-6);
      for (let d = 0; d < headDim; d++) y[at + d] = x[at + d]! * inv * scale[d]!;
    }
  return y;
}
function attentionRef(q: Float32Array, k: Float32Array, v: Float32Array, n: number): Float32Array {
  const out = new Float32Array(n * hidden);
  for (let h = 0; h < heads; h++)
    for (let i = 0; i < n; i++) {
      const logits = new Float64Array(n);
      for (let j = 0; j < n; j++) {
        let s = 0;
        for (let d = 0; d < headDim; d++) s += q[i * hidden + h * headDim + d]! * k[j * hidden + h * headDim + d]!;
        logits[j] = s / Math.sqrt(headDim);
      }
      const max = Math.max(...logits);
      let sum = 0;
      for (let j = 0; j < n; j++) sum += logits[j] = Math.exp(logits[j]! - max);
      for (let d = 0; d < headDim; d++) {
        let s = 0;
        for (let j = 0; j < n; j++) s += logits[j]! * v[j * hidden + h * headDim + d]!;
        out[i * hidden + h * headDim + d] = s / sum;
      }
    }
  return out;
}
const chunk = (m: Float32Array, i: number) => m.subarray(i * hidden, (i + 1) * hidden);
function qkvRef(p: string, input: Float32Array, n: number) {
  const qkv = linearRef(input, n, `${p}.qkv`);
  const part = (k: number) => {
    const t = new Float32Array(n * hidden);
    for (let r = 0; r < n; r++) t.set(qkv.subarray(r * 3 * hidden + k * hidden, r * 3 * hidden + (k + 1) * hidden), r * hidden);
    return t;
  };
  let q: Float32Array = part(0);
  let k: Float32Array = part(1);
  if (original.has(`${p}.ln_q.weight`)) {
    q = headRmsRef(q, n, param(`${p}.ln_q.weight`));
    k = headRmsRef(k, n, param(`${p}.ln_k.weight`));
  }
  return { q, k, v: part(2) };
}
const addGated = (x: Float32Array, gate: Float32Array, y: Float32Array) => x.map((v, i) => v + gate[i % hidden]! * y[i]!);
/** One joint block as mmditx.py's block_mixing reads (context first in the joint sequence). */
function jointBlockRef(i: number, context: Float32Array, x: Float32Array, cond: Float32Array, T: number, L: number) {
  const cAct = cond.map(silu);
  const cp = `joint_blocks.${i}.context_block`;
  const xp = `joint_blocks.${i}.x_block`;
  const cMod = linearRef(cAct, 1, `${cp}.adaLN_modulation.1`);
  const xMod = linearRef(cAct, 1, `${xp}.adaLN_modulation.1`);
  const preOnly = !original.has(`${cp}.attn.proj.weight`);
  const dual = original.has(`${xp}.attn2.qkv.weight`);
  assert.equal(xMod.length, (dual ? 9 : 6) * hidden);
  const cq = qkvRef(`${cp}.attn`, modulateRef(context, T, chunk(cMod, 0), chunk(cMod, 1)), T);
  const xq = qkvRef(`${xp}.attn`, modulateRef(x, L, chunk(xMod, 0), chunk(xMod, 1)), L);
  const joined = (a: Float32Array, b: Float32Array) => Float32Array.of(...a, ...b);
  const attn = attentionRef(joined(cq.q, xq.q), joined(cq.k, xq.k), joined(cq.v, xq.v), T + L);
  const mlpRef = (p: string, h: Float32Array, n: number, mod: Float32Array) =>
    linearRef(linearRef(modulateRef(h, n, chunk(mod, 3), chunk(mod, 4)), n, `${p}.mlp.fc1`).map(gelu), n, `${p}.mlp.fc2`);
  let nextContext = context;
  if (!preOnly) {
    nextContext = addGated(context, chunk(cMod, 2), linearRef(attn.subarray(0, T * hidden), T, `${cp}.attn.proj`));
    nextContext = addGated(nextContext, chunk(cMod, 5), mlpRef(cp, nextContext, T, cMod));
  }
  let nextX = addGated(x, chunk(xMod, 2), linearRef(attn.subarray(T * hidden), L, `${xp}.attn.proj`));
  if (dual) {
    const x2 = qkvRef(`${xp}.attn2`, modulateRef(x, L, chunk(xMod, 6), chunk(xMod, 7)), L);
    nextX = addGated(nextX, chunk(xMod, 8), linearRef(attentionRef(x2.q, x2.k, x2.v, L), L, `${xp}.attn2.proj`));
  }
  nextX = addGated(nextX, chunk(xMod, 5), mlpRef(xp, nextX, L, xMod));
  return { context: nextContext, x: nextX };
}

function maxDiff(a: Float32Array, b: Float32Array): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

for (const layout of ['original', 'diffusers'] as const) {
  test(`SD3.5 joint blocks (QK RMS norm; block 0 with dual attention, block 1 pre-only) match the plain reference (${layout} layout)`, async (t) => {
    const w = weightsOf(layout);
    assert.equal(sd3LayoutOf(storedWeights(layout, [openTensorFile(files[layout])])), layout);
    const config = mmditConfigFromWeights(w);
    const T = 5,
      L = 6;
    const rng = createRng('cpu', 77);
    const context = rng.randn(T * hidden);
    const x = rng.randn(L * hidden);
    const cond = rng.randn(hidden);
    for (const index of [0, 1]) {
      const key = { network: `mmdit35-block${index}`, weightsIdentity: layout, precision: 'fp32' as const };
      const { modelPath } = getOrBuildGraph(join(work, 'cache'), key, (b) => buildMmditJointBlock(b, w, config, index, { attention: 'onnx' }));
      const out = await runSession(await createSession(modelPath, { device: 'cpu' }), {
        [MMDIT_BLOCK_IO.context]: { shape: [1, T, hidden], data: context },
        [MMDIT_BLOCK_IO.x]: { shape: [1, L, hidden], data: x },
        [MMDIT_BLOCK_IO.cond]: { shape: [1, hidden], data: cond },
      });
      const ref = jointBlockRef(index, context, x, cond, T, L);
      const dx = maxDiff(out[MMDIT_BLOCK_IO.xOut]!.data as Float32Array, ref.x);
      const dc = maxDiff(out[MMDIT_BLOCK_IO.contextOut]!.data as Float32Array, ref.context);
      t.diagnostic(`block ${index}: max abs diff x ${dx.toExponential(2)}, context ${dc.toExponential(2)}`);
      assert.ok(dx < 1e-4 && dc < 1e-4, `block ${index}: ${dx}, ${dc}`);
      // The new parts matter: without them the block would give something else.
      assert.ok(maxDiff(ref.x, x) > 1e-2);
    }
  });
}

test('the tiny SD3.5 MMDiT gives the same output from both layouts, and its QK norm and attn2 change that output', async () => {
  const rng = createRng('cpu', 78);
  const feeds = {
    [MMDIT_IO.x]: { shape: [1, 16, 8, 8], data: rng.randn(16 * 64) },
    [MMDIT_IO.timestep]: { shape: [1], data: Float32Array.of(750) },
    [MMDIT_IO.context]: { shape: [1, 7, 32], data: rng.randn(7 * 32) },
    [MMDIT_IO.y]: { shape: [1, 32], data: rng.randn(32) },
  };
  const run = async (name: string, w: ReturnType<typeof weightsOf>) => {
    const key = { network: `mmdit35-${name}`, weightsIdentity: name, precision: 'fp32' as const };
    const { modelPath } = getOrBuildGraph(join(work, 'cache'), key, (b) => buildMmdit(b, w, mmditConfigFromWeights(w)));
    return (await runSession(await createSession(modelPath, { device: 'cpu' }), feeds))[MMDIT_IO.output]!.data as Float32Array;
  };
  const a = await run('original', weightsOf('original'));
  const b = await run('diffusers', weightsOf('diffusers'));
  assert.ok(a.every(Number.isFinite));
  assert.deepEqual(a, b);
  const plainSd3 = new Map<string, HostTensor>([...original].filter(([n]) => !/\.ln_[qk]\.|\.attn2\./.test(n)));
  plainSd3.set('joint_blocks.0.x_block.adaLN_modulation.1.weight', {
    shape: [6 * hidden, hidden],
    data: param('joint_blocks.0.x_block.adaLN_modulation.1.weight').slice(0, 6 * hidden * hidden),
  });
  plainSd3.set('joint_blocks.0.x_block.adaLN_modulation.1.bias', {
    shape: [6 * hidden],
    data: param('joint_blocks.0.x_block.adaLN_modulation.1.bias').slice(0, 6 * hidden),
  });
  const sd3File = writeHostTensors(join(work, 'plain.safetensors'), plainSd3);
  const c = await run('plain', sd3WeightsAsOriginal(storedWeights('original', [openTensorFile(sd3File)])));
  assert.ok(maxDiff(a, c) > 1e-3, 'the SD3.5 parts change the output');
});
