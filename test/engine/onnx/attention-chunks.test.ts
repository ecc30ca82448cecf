// Plain-ONNX attention slices its queries past CHUNK_THRESHOLD tokens (graph.ts queryChunks): at and below the
// threshold the graph computes the whole score matrix as before; above it, 32 query slices. Both must give the
// attention a direct float64 computation gives, and agree with onnxruntime's fused MultiHeadAttention.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CHUNK_THRESHOLD, GraphBuilder, type AttentionKind } from '../../../src/engine/onnx/graph.ts';
import { createSession, runSession } from '../../../src/engine/runtime.ts';
import type { Tensor } from '../../../src/engine/tensor.ts';

const dir = mkdtempSync(join(tmpdir(), 'kiln-attn-chunks-'));
after(() => rmSync(dir, { recursive: true, force: true }));

const HEADS = 2;
const HEAD_DIM = 4;
const C = HEADS * HEAD_DIM;

async function attentionSession(kind: AttentionKind) {
  const b = new GraphBuilder(`attn-${kind}`, mkdtempSync(join(dir, `${kind}-`)), 'fp32');
  const q = b.input('q', [1, 'seq', C]);
  const k = b.input('k', [1, 'kv', C]);
  const v = b.input('v', [1, 'kv', C]);
  b.output(b.attention(q, k, v, { heads: HEADS, headDim: HEAD_DIM, kind }), 'y', [1, 'seq', C]);
  return createSession(b.finish(), { device: 'cpu' });
}

function filled(n: number, seed: number): Float32Array {
  let s = seed >>> 0;
  return Float32Array.from({ length: n }, () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return (s / 2 ** 32 - 0.5) * 3;
  });
}

/** softmax(q k^T / sqrt(d)) v per head, in float64, for query rows `rowsToCheck`. */
function reference(q: Tensor, k: Tensor, v: Tensor, rowsToCheck: number[]): Map<number, Float64Array> {
  const kv = k.shape[1]!;
  const out = new Map<number, Float64Array>();
  for (const r of rowsToCheck) {
    const row = new Float64Array(C);
    for (let h = 0; h < HEADS; h++) {
      const scores = new Float64Array(kv);
      let max = -Infinity;
      for (let t = 0; t < kv; t++) {
        let s = 0;
        for (let d = 0; d < HEAD_DIM; d++) s += q.data[r * C + h * HEAD_DIM + d]! * k.data[t * C + h * HEAD_DIM + d]!;
        scores[t] = s / Math.sqrt(HEAD_DIM);
        max = Math.max(max, scores[t]!);
      }
      let sum = 0;
      for (let t = 0; t < kv; t++) sum += scores[t] = Math.exp(scores[t]! - max);
      for (let d = 0; d < HEAD_DIM; d++) {
        let acc = 0;
        for (let t = 0; t < kv; t++) acc += scores[t]! * v.data[t * C + h * HEAD_DIM + d]!;
        row[h * HEAD_DIM + d] = acc / sum;
      }
    }
    out.set(r, row);
  }
  return out;
}

for (const seq of [CHUNK_THRESHOLD, CHUNK_THRESHOLD + 77]) {
  test(`plain-ONNX attention over ${seq} query tokens (${seq > CHUNK_THRESHOLD ? '32 slices' : 'whole'}) matches float64 and the fused kernel`, async () => {
    const kvLen = 300;
    const q = { shape: [1, seq, C], data: filled(seq * C, 1) };
    const k = { shape: [1, kvLen, C], data: filled(kvLen * C, 2) };
    const v = { shape: [1, kvLen, C], data: filled(kvLen * C, 3) };
    const plain = (await runSession(await attentionSession('onnx'), { q, k, v })).y!;
    const fused = (await runSession(await attentionSession('contrib'), { q, k, v })).y!;
    assert.deepEqual(plain.shape, [1, seq, C]);
    let worst = 0;
    for (let i = 0; i < plain.data.length; i++) worst = Math.max(worst, Math.abs(plain.data[i]! - fused.data[i]!));
    assert.ok(worst < 1e-5, `plain vs fused max difference ${worst}`);
    // Rows at the start, at slice borders and at the very end.
    const slice = Math.ceil(seq / 32);
    const rows = [0, 1, slice - 1, slice, 5 * slice + 3, seq - 2, seq - 1];
    for (const [r, want] of reference(q, k, v, rows)) {
      for (let c = 0; c < C; c++)
        assert.ok(Math.abs(plain.data[r * C + c]! - want[c]!) < 1e-5, `row ${r} channel ${c}: ${plain.data[r * C + c]} vs ${want[c]}`);
    }
  });
}
