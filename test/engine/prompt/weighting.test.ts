import { test } from 'node:test';
import assert from 'node:assert/strict';
import { applyEmphasis, concatChunks, encodeWeightedChunks } from '../../../src/engine/prompt/weighting.ts';
import { tensor } from '../../../src/engine/tensor.ts';

function close(actual: Float32Array, expected: number[], atol = 1e-6) {
  assert.equal(actual.length, expected.length);
  expected.forEach((e, i) => assert.ok(Math.abs(actual[i]! - e) <= atol, `index ${i}: ${actual[i]} vs ${e}`));
}

// z = [[1,2],[3,4],[5,6]] (3 tokens, dim 2), weights [1, 2, 0.5].
const z = tensor([1, 3, 2], Float32Array.from([1, 2, 3, 4, 5, 6]));
const weights = [1, 2, 0.5];

test('original emphasis: z*w rescaled to the original mean (hand-computed)', () => {
  // z*w = [1,2, 6,8, 2.5,3]: mean 22.5/6 = 3.75; original mean 21/6 = 3.5; ratio 3.5/3.75 = 14/15.
  const out = applyEmphasis(z, weights, 'original');
  assert.deepEqual(out.shape, [1, 3, 2]);
  close(
    out.data,
    [1, 2, 6, 8, 2.5, 3].map((v) => (v * 14) / 15),
  );
  const mean = out.data.reduce((a, b) => a + b, 0) / out.data.length;
  assert.ok(Math.abs(mean - 3.5) < 1e-6);
  assert.deepEqual(Array.from(z.data), [1, 2, 3, 4, 5, 6], 'input untouched');
});

test('no-norm multiplies only; ignore and none leave z as it is', () => {
  close(applyEmphasis(z, weights, 'no-norm').data, [1, 2, 6, 8, 2.5, 3], 0);
  assert.equal(applyEmphasis(z, weights, 'ignore'), z);
  assert.equal(applyEmphasis(z, weights, 'none'), z);
});

test('weights of 1 reproduce z bit for bit under the original emphasis', () => {
  const h = tensor(
    [77, 4],
    Float32Array.from({ length: 308 }, (_, i) => Math.sin(i) * 3),
  );
  assert.deepEqual(applyEmphasis(h, new Array(77).fill(1)).data, h.data);
});

test('weights are per token row: shared across a leading batch or given for every row', () => {
  const zb = tensor([2, 2, 1], Float32Array.from([1, 2, 3, 4]));
  close(applyEmphasis(zb, [2, 3], 'no-norm').data, [2, 6, 6, 12], 0);
  close(applyEmphasis(zb, [1, 1, 1, 2], 'no-norm').data, [1, 2, 3, 8], 0);
  assert.throws(() => applyEmphasis(zb, [1, 2, 3]), /3 weights/);
});

test('concatChunks joins chunk outputs along the token axis', () => {
  const a = tensor([1, 2, 2], Float32Array.from([1, 2, 3, 4]));
  const b = tensor([1, 1, 2], Float32Array.from([5, 6]));
  const ab = concatChunks([a, b]);
  assert.deepEqual(ab.shape, [1, 3, 2]);
  assert.deepEqual(Array.from(ab.data), [1, 2, 3, 4, 5, 6]);
  // With a batch of 2 the token blocks of each batch entry stay together.
  const c = tensor([2, 1, 2], Float32Array.from([1, 2, 10, 20]));
  const d = tensor([2, 1, 2], Float32Array.from([3, 4, 30, 40]));
  const cd = concatChunks([c, d]);
  assert.deepEqual(cd.shape, [2, 2, 2]);
  assert.deepEqual(Array.from(cd.data), [1, 2, 3, 4, 10, 20, 30, 40]);
  assert.throws(() => concatChunks([a, tensor([1, 2, 3])]), /does not match/);
  assert.throws(() => concatChunks([]), /no chunks/);
});

test('encodeWeightedChunks weights each chunk with its own weights and joins them in order', async () => {
  // A fake encoder: token i of chunk c gets the value id + c (dim 1), so the order and weights can be traced.
  const seen: number[] = [];
  const out = await encodeWeightedChunks(
    {
      ids: [
        [1, 2],
        [3, 4],
      ],
      weights: [
        [1, 2],
        [3, 1],
      ],
    },
    async (ids, c) => {
      seen.push(c);
      return tensor([1, 2, 1], Float32Array.from(ids.map((id) => id + c)));
    },
    'no-norm',
  );
  assert.deepEqual(seen, [0, 1]);
  assert.deepEqual(out.shape, [1, 4, 1]);
  assert.deepEqual(Array.from(out.data), [1, 4, 12, 5]);
});
