import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { GraphBuilder } from '../../../src/engine/onnx/graph.ts';
import {
  allocNBits,
  dequantizeNBits,
  emitMatMulNBits,
  kBlocksOf,
  type NBits,
  type NBitsWeight,
  quantizeNBits,
  setCode,
  setZeroPoint,
  sliceNBitsRows,
} from '../../../src/engine/onnx/matmul-nbits.ts';
import { createSession, runSession } from '../../../src/engine/runtime.ts';
import { pseudoRandom } from './pseudo-random.ts';

const dir = mkdtempSync(join(tmpdir(), 'kiln-nbits-'));
test.after(() => rmSync(dir, { recursive: true, force: true }));

let graphs = 0;
/** Runs x [M, K] through one MatMulNBits op (with bias). */
async function runNBits(w: NBitsWeight, x: Float32Array, m: number, bias: Float32Array): Promise<Float32Array> {
  const gdir = join(dir, `g${graphs++}`);
  mkdirSync(gdir);
  const b = new GraphBuilder('nbits', gdir);
  const input = b.input('x', [m, w.k]);
  // accuracy_level 0: fp32 activations, so the result is exactly x · dequant(W)^T up to float rounding.
  b.output(emitMatMulNBits(b, input, w, { shape: [w.n], data: bias }, 'lin', 0), 'y', [m, w.n]);
  const session = await createSession(b.finish(), { device: 'cpu', intraOpThreads: 1 });
  return (await runSession(session, { x: { shape: [m, w.k], data: x } })).y!.data;
}

/** x W^T + bias in float64. */
function matmulRef(x: Float32Array, w: Float32Array, bias: Float32Array, m: number, n: number, k: number): Float64Array {
  const y = new Float64Array(m * n);
  for (let i = 0; i < m; i++)
    for (let o = 0; o < n; o++) {
      let acc = bias[o]!;
      for (let j = 0; j < k; j++) acc += x[i * k + j]! * w[o * k + j]!;
      y[i * n + o] = acc;
    }
  return y;
}

for (const bits of [8, 4] as NBits[]) {
  test(`${bits}-bit quantisation: every weight within scale/2 of its value, and MatMulNBits within the bound that implies`, async (t) => {
    // K = 80: two full blocks of 32 and a zero-padded one of 16.
    const m = 6,
      n = 10,
      k = 80;
    const wf = pseudoRandom(n * k, 7 + bits, 0.3);
    for (let i = 0; i < k; i++) wf[i] = Math.abs(wf[i]!); // one row entirely positive (asymmetric blocks)
    const x = pseudoRandom(m * k, 99, 1);
    const bias = pseudoRandom(n, 5, 0.1);
    const q = quantizeNBits(wf, n, k, bits);
    const kb = kBlocksOf(k, 32);
    assert.equal(kb, 3);
    assert.equal(q.packed.byteLength, (n * kb * 32 * bits) / 8);
    const dq = dequantizeNBits(q);
    // Per element: |w - dq| <= scale/2 of its block (round to nearest; clamping never moves a value further).
    for (let o = 0; o < n; o++)
      for (let j = 0; j < k; j++) {
        const s = q.scales[o * kb + Math.floor(j / 32)]!;
        assert.ok(Math.abs(wf[o * k + j]! - dq[o * k + j]!) <= s / 2 + 1e-7, `w[${o},${j}]`);
      }
    const exact = matmulRef(x, wf, bias, m, n, k);
    const onDequant = matmulRef(x, dq, bias, m, n, k);
    const y = await runNBits(q, x, m, bias);
    let worstRatio = 0;
    for (let i = 0; i < m; i++)
      for (let o = 0; o < n; o++) {
        // Derived bound: sum_j |x_j| * scale(o, block j)/2, plus float32 accumulation slack.
        let bound = 0,
          mag = 0;
        for (let j = 0; j < k; j++) {
          bound += (Math.abs(x[i * k + j]!) * q.scales[o * kb + Math.floor(j / 32)]!) / 2;
          mag += Math.abs(x[i * k + j]! * dq[o * k + j]!);
        }
        const slack = 1e-5 * (mag + 1);
        const got = y[i * n + o]!;
        // The kernel computes with exactly the dequantised weights...
        assert.ok(Math.abs(got - onDequant[i * n + o]!) <= slack, `y[${i},${o}] vs dequantised: ${got} vs ${onDequant[i * n + o]}`);
        // ...so its distance from the exact float result stays within the quantisation bound.
        const err = Math.abs(got - exact[i * n + o]!);
        assert.ok(err <= bound + slack, `y[${i},${o}]: error ${err} > bound ${bound}`);
        worstRatio = Math.max(worstRatio, err / bound);
      }
    t.diagnostic(`worst error / derived bound = ${worstRatio.toFixed(3)}`);
  });
}

test('float zero points (GGUF Q4_K form) and row slices run as the dequantised weight says', async () => {
  const n = 4,
    k = 64;
  const w = allocNBits(n, k, 4, 32, 'float');
  const codes = pseudoRandom(n * k, 3, 1);
  for (let o = 0; o < n; o++)
    for (let blk = 0; blk < 2; blk++) {
      w.scales[o * 2 + blk] = 0.01 * (o + 1) * (blk + 1);
      setZeroPoint(w, o, blk, 2.75 + o - blk);
      for (let j = 0; j < 32; j++) setCode(w, o, blk, j, Math.floor((codes[o * k + blk * 32 + j]! + 1) * 7.99));
    }
  const dq = dequantizeNBits(w);
  assert.ok(Math.abs(dq[0]! - (Math.floor((codes[0]! + 1) * 7.99) - 2.75) * 0.01) < 1e-7);
  const x = pseudoRandom(3 * k, 11);
  const bias = new Float32Array(n);
  const y = await runNBits(w, x, 3, bias);
  const ref = matmulRef(x, dq, bias, 3, n, k);
  for (let i = 0; i < y.length; i++) assert.ok(Math.abs(y[i]! - ref[i]!) < 1e-4, `y[${i}]`);
  const lower = sliceNBitsRows(w, 2, 4);
  assert.deepEqual(dequantizeNBits(lower), dq.slice(2 * k, 4 * k));
});
