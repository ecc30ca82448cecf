import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { getOrBuildGraph } from '../../../src/engine/onnx/cache.ts';
import { toFloat16Bytes, type GraphBuilder } from '../../../src/engine/onnx/graph.ts';
import { createSession, runSession } from '../../../src/engine/runtime.ts';
import type { Tensor } from '../../../src/engine/tensor.ts';

function seededRandom(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32 - 0.5;
  };
}
function randTensor(shape: number[], rnd: () => number): Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  return { shape, data: Float32Array.from({ length: n }, rnd) };
}

test('linear + layer norm + gelu graph matches a direct computation', async () => {
  const cache = mkdtempSync(join(tmpdir(), 'kiln-graph-'));
  try {
    const rnd = seededRandom(1);
    const w = randTensor([6, 5], rnd); // torch Linear [out, in]
    const bias = randTensor([6], rnd);
    const lnW = randTensor([6], rnd);
    const lnB = randTensor([6], rnd);
    const x = randTensor([2, 3, 5], rnd);
    const build = (b: GraphBuilder) => {
      const input = b.input('x', ['batch', 3, 5]);
      const h = b.linear(input, w, bias, 'fc');
      const n = b.layerNorm(h, lnW, lnB, 1e-5, 'ln');
      b.output(b.gelu(n), 'y', ['batch', 3, 6]);
    };
    const first = getOrBuildGraph(cache, { network: 'toy', weightsIdentity: 'toy-1', precision: 'fp32' }, build);
    assert.equal(first.built, true);
    const second = getOrBuildGraph(cache, { network: 'toy', weightsIdentity: 'toy-1', precision: 'fp32' }, build);
    assert.equal(second.built, false, 'second request must come from the cache');
    assert.equal(second.modelPath, first.modelPath);
    const other = getOrBuildGraph(cache, { network: 'toy', weightsIdentity: 'toy-2', precision: 'fp32' }, build);
    assert.notEqual(other.modelPath, first.modelPath, 'different weights identity, different entry');

    const session = await createSession(first.modelPath, { device: 'cpu' });
    const { y } = await runSession(session, { x });
    assert.deepEqual(y!.shape, [2, 3, 6]);
    for (let r = 0; r < 6; r++) {
      const h = new Array<number>(6);
      for (let o = 0; o < 6; o++) {
        let s = bias.data[o]!;
        for (let i = 0; i < 5; i++) s += x.data[r * 5 + i]! * w.data[o * 5 + i]!;
        h[o] = s;
      }
      const mean = h.reduce((a, b) => a + b, 0) / 6;
      const variance = h.reduce((a, b) => a + (b - mean) ** 2, 0) / 6;
      for (let o = 0; o < 6; o++) {
        const n = ((h[o]! - mean) / Math.sqrt(variance + 1e-5)) * lnW.data[o]! + lnB.data[o]!;
        const g = 0.5 * n * (1 + erf(n / Math.SQRT2));
        assert.ok(Math.abs(y!.data[r * 6 + o]! - g) < 1e-5, `row ${r} col ${o}: ${y!.data[r * 6 + o]} vs ${g}`);
      }
    }
  } finally {
    rmSync(cache, { recursive: true, force: true });
  }
});

test('group norm + conv graph matches a direct computation, weights stored externally', async () => {
  const cache = mkdtempSync(join(tmpdir(), 'kiln-graph-'));
  try {
    const rnd = seededRandom(2);
    const C = 8,
      G = 2,
      H = 6,
      W = 5;
    const gw = randTensor([C], rnd),
      gb = randTensor([C], rnd);
    const cw = randTensor([4, C, 3, 3], rnd),
      cb = randTensor([4], rnd);
    const x = randTensor([1, C, H, W], rnd);
    const { modelPath } = getOrBuildGraph(cache, { network: 'toy-conv', weightsIdentity: 'x', precision: 'fp32' }, (b) => {
      const n = b.groupNorm(b.input('x', [1, C, 'h', 'w']), G, gw, gb, 1e-6, 'gn');
      b.output(b.conv(b.silu(n), cw, cb, 'conv', { pad: 1 }), 'y', [1, 4, 'h', 'w']);
    });
    assert.ok(existsSync(join(modelPath, '..', 'weights.bin')), 'conv weight (1152 bytes) goes to the external file');
    const { y } = await runSession(await createSession(modelPath, { device: 'cpu' }), { x });
    // reference
    const per = (C / G) * H * W;
    const normed = new Float32Array(x.data.length);
    for (let g = 0; g < G; g++) {
      const seg = x.data.subarray(g * per, (g + 1) * per);
      const mean = seg.reduce((a, b) => a + b, 0) / per;
      const v = seg.reduce((a, b) => a + (b - mean) ** 2, 0) / per;
      for (let i = 0; i < per; i++) {
        const c = g * (C / G) + Math.floor(i / (H * W));
        const n = ((seg[i]! - mean) / Math.sqrt(v + 1e-6)) * gw.data[c]! + gb.data[c]!;
        normed[g * per + i] = n / (1 + Math.exp(-n));
      }
    }
    let maxErr = 0;
    for (let o = 0; o < 4; o++)
      for (let i = 0; i < H; i++)
        for (let j = 0; j < W; j++) {
          let s = cb.data[o]!;
          for (let c = 0; c < C; c++)
            for (let di = -1; di <= 1; di++)
              for (let dj = -1; dj <= 1; dj++) {
                const ii = i + di,
                  jj = j + dj;
                if (ii < 0 || jj < 0 || ii >= H || jj >= W) continue;
                s += normed[c * H * W + ii * W + jj]! * cw.data[((o * C + c) * 3 + di + 1) * 3 + dj + 1]!;
              }
          maxErr = Math.max(maxErr, Math.abs(s - y!.data[(o * H + i) * W + j]!));
        }
    assert.ok(maxErr < 1e-4, `max error ${maxErr}`);
  } finally {
    rmSync(cache, { recursive: true, force: true });
  }
});

test('float16 conversion rounds to nearest even and handles specials', () => {
  const h = new Uint16Array(toFloat16Bytes(Float32Array.from([0, 1, -2, 65504, 1e6, 2 ** -24, 1 + 2 ** -11, 1 + 3 * 2 ** -11, NaN])).buffer);
  assert.deepEqual(Array.from(h.slice(0, 8)), [0x0000, 0x3c00, 0xc000, 0x7bff, 0x7c00, 0x0001, 0x3c00, 0x3c02]);
  assert.equal(h[8]! & 0x7c00, 0x7c00);
  assert.ok((h[8]! & 0x3ff) !== 0, 'NaN stays NaN');
});

function erf(x: number): number {
  // Abramowitz-Stegun 7.1.26 is too coarse for 1e-5; use a series/continued fraction split.
  const t = Math.abs(x);
  if (t < 2.5) {
    let sum = t,
      term = t;
    for (let n = 1; n < 60; n++) {
      term *= (-t * t) / n;
      sum += term / (2 * n + 1);
    }
    return Math.sign(x) * (2 / Math.sqrt(Math.PI)) * sum;
  }
  let f = 0;
  for (let n = 60; n >= 1; n--) f = n / 2 / (t + f);
  return Math.sign(x) * (1 - Math.exp(-t * t) / Math.sqrt(Math.PI) / (t + f));
}
