// Tucker (CP) factored LyCORIS modules, against the einsum definitions written out as loops: LoHa with
// hada_t1/hada_t2, LoKr with lokr_t2, and a LoCon with lora_mid both merged and as a branch (its mid composed into
// the down convolution gives the same ΔW).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Tensor } from '../../../src/engine/tensor.ts';
import { branchFeeds, type TensorDictionary } from '../../../src/engine/weights/lora/index.ts';
import type { LoraModule } from '../../../src/engine/weights/lora/formats.ts';
import { applyModule } from '../../../src/engine/weights/lora/math.ts';

function random(shape: number[], seed: number): Tensor {
  let s = seed;
  const data = Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32 - 0.5;
  });
  return { shape, data };
}

function dictOf(tensors: Record<string, Tensor>): TensorDictionary {
  return {
    file: 'synthetic.safetensors',
    names: () => Object.keys(tensors),
    shape: (n) => tensors[n]!.shape,
    get: (n) => ({ shape: tensors[n]!.shape, data: Float32Array.from(tensors[n]!.data) }),
    metadata: () => ({}),
  };
}

function moduleOf(algorithm: LoraModule['algorithm'], roles: string[]): LoraModule {
  return { key: 'x', algorithm, tensors: new Map(roles.map((r) => [r, r])) };
}

/** M[p, q, k] = Σ_i Σ_j t[i, j, k] · wa[i, p] · wb[j, q] (einsum 'i j k l, j r, i p -> p r k l'), kernel flattened. */
function tucker(t: Tensor, wa: Tensor, wb: Tensor): Float32Array {
  const [r, , kh, kw] = t.shape as [number, number, number, number];
  const out = wa.shape[1]!;
  const inn = wb.shape[1]!;
  const kk = kh * kw;
  const m = new Float32Array(out * inn * kk);
  for (let p = 0; p < out; p++)
    for (let q = 0; q < inn; q++)
      for (let k = 0; k < kk; k++) {
        let acc = 0;
        for (let i = 0; i < r; i++) for (let j = 0; j < r; j++) acc += t.data[(i * r + j) * kk + k]! * wa.data[i * out + p]! * wb.data[j * inn + q]!;
        m[(p * inn + q) * kk + k] = acc;
      }
  return m;
}

function assertClose(actual: Float32Array, expected: Float32Array, what: string): void {
  assert.equal(actual.length, expected.length);
  let worst = 0;
  for (let i = 0; i < actual.length; i++) worst = Math.max(worst, Math.abs(actual[i]! - expected[i]!) / Math.max(1, Math.abs(expected[i]!)));
  assert.ok(worst <= 1e-5, `${what}: ${worst}`);
}

test('LoHa with Tucker factors (hada_t1/t2) merges as (M1 ⊙ M2) · alpha / r', () => {
  const [out, inn, r] = [3, 2, 2];
  const t: Record<string, Tensor> = {
    hada_t1: random([r, r, 3, 3], 1),
    hada_w1_a: random([r, out], 2),
    hada_w1_b: random([r, inn], 3),
    hada_t2: random([r, r, 3, 3], 4),
    hada_w2_a: random([r, out], 5),
    hada_w2_b: random([r, inn], 6),
    alpha: { shape: [], data: Float32Array.from([1]) },
  };
  const w = random([out, inn, 3, 3], 7);
  const m = 0.7;
  const got = applyModule(dictOf(t), moduleOf('loha', Object.keys(t)), 'weight', { shape: w.shape, data: Float32Array.from(w.data) }, m);
  const m1 = tucker(t.hada_t1!, t.hada_w1_a!, t.hada_w1_b!);
  const m2 = tucker(t.hada_t2!, t.hada_w2_a!, t.hada_w2_b!);
  const expected = w.data.map((v, i) => v + m * (m1[i]! * m2[i]! * (1 / r)));
  assertClose(got, expected, 'LoHa Tucker');
});

test('LoKr with a Tucker w2 (lokr_t2) merges as kron(w1, M2) · alpha / r', () => {
  const [a, c, b, d, r] = [2, 3, 2, 2, 2]; // W [a·b, c·d, 3, 3]
  const t: Record<string, Tensor> = {
    lokr_w1: random([a, c], 11),
    lokr_t2: random([r, r, 3, 3], 12),
    lokr_w2_a: random([r, b], 13),
    lokr_w2_b: random([r, d], 14),
    alpha: { shape: [], data: Float32Array.from([4]) },
  };
  const w = random([a * b, c * d, 3, 3], 15);
  const got = applyModule(dictOf(t), moduleOf('lokr', Object.keys(t)), 'weight', { shape: w.shape, data: Float32Array.from(w.data) }, 1);
  const m2 = tucker(t.lokr_t2!, t.lokr_w2_a!, t.lokr_w2_b!); // [b, d, 9]
  const expected = Float32Array.from(w.data);
  for (let i = 0; i < a; i++)
    for (let j = 0; j < c; j++)
      for (let p = 0; p < b; p++)
        for (let q = 0; q < d; q++)
          for (let k = 0; k < 9; k++)
            expected[((i * b + p) * (c * d) + (j * d + q)) * 9 + k]! += (4 / r) * t.lokr_w1!.data[i * c + j]! * m2[(p * d + q) * 9 + k]!;
  assertClose(got, expected, 'LoKr Tucker');
});

test('a LoCon with lora_mid gives the same ΔW merged and as a branch (mid composed into the down conv)', () => {
  const [out, inn, r] = [4, 3, 2];
  const t: Record<string, Tensor> = {
    up: random([out, r, 1, 1], 21),
    mid: random([r, r, 3, 3], 22),
    down: random([r, inn, 1, 1], 23),
    alpha: { shape: [], data: Float32Array.from([1]) },
  };
  const module = moduleOf('lora', Object.keys(t));
  const merged = applyModule(dictOf(t), module, 'weight', { shape: [out, inn, 3, 3], data: new Float32Array(out * inn * 9) }, 0.5);
  const inputs = [
    { name: 'lora_down:x', shape: ['lora_rank:x', inn, 3, 3] },
    { name: 'lora_up:x', shape: [out, 'lora_rank:x', 1, 1] },
  ];
  const feeds = branchFeeds(inputs, new Map([['x', [{ dict: dictOf(t), module, multiplier: 0.5 }]]]));
  const down = feeds['lora_down:x']!;
  const up = feeds['lora_up:x']!;
  assert.deepEqual(down.shape, [r, inn, 3, 3]);
  const delta = new Float32Array(out * inn * 9);
  for (let o = 0; o < out; o++)
    for (let n = 0; n < r; n++) for (let x = 0; x < inn * 9; x++) delta[o * inn * 9 + x]! += up.data[o * r + n]! * down.data[n * inn * 9 + x]!;
  assertClose(delta, merged, 'branch ΔW vs merged ΔW');
});
