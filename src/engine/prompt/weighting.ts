// A1111's emphasis (modules/sd_emphasis.py) applied to text-encoder outputs, and the joining of chunk outputs
// (torch.hstack in sd_hijack_clip.forward). Arithmetic follows torch's float32 steps: products and the mean ratio
// are rounded to float32; means are accumulated in float64, which differs from torch's float32 reduction by ~1 ulp.
import type { Tensor } from '../tensor.ts';
import { numel } from '../tensor.ts';
import type { EmphasisMode } from './chunks.ts';

function mean(data: Float32Array): number {
  let sum = 0;
  for (let i = 0; i < data.length; i++) sum += data[i]!;
  return Math.fround(sum / data.length);
}

/**
 * Applies per-token weights to hidden states `z` of shape [..., T, D] (one chunk: [1, 77, D] or [77, D]).
 * `weights` has T entries (shared by every leading index) or one per token row (numel / D entries).
 * - `original`: z * w, then scaled so the mean of the whole tensor is the mean before weighting (EmphasisOriginal);
 * - `no-norm`:  z * w only;
 * - `ignore` / `none`: z is returned unchanged (the same object).
 * A1111 takes the mean over everything it encoded in one call, which is one prompt's chunk; pass one chunk here.
 */
export function applyEmphasis(z: Tensor, weights: ArrayLike<number>, mode: EmphasisMode = 'original'): Tensor {
  if (mode === 'ignore' || mode === 'none') return z;
  if (z.shape.length < 2) throw new Error(`applyEmphasis: hidden states must be [..., tokens, dim], got [${z.shape}]`);
  const dim = z.shape[z.shape.length - 1]!;
  const tokens = z.shape[z.shape.length - 2]!;
  const rows = numel(z.shape) / dim;
  if (weights.length !== tokens && weights.length !== rows) {
    throw new Error(`applyEmphasis: ${weights.length} weights for hidden states [${z.shape}] (need ${tokens} or ${rows})`);
  }
  const out = new Float32Array(z.data.length);
  for (let r = 0; r < rows; r++) {
    const w = Math.fround(weights[weights.length === rows ? r : r % tokens]!);
    for (let k = r * dim; k < (r + 1) * dim; k++) out[k] = z.data[k]! * w;
  }
  if (mode === 'original') {
    const ratio = Math.fround(mean(z.data) / mean(out));
    for (let k = 0; k < out.length; k++) out[k]! *= ratio;
  }
  return { shape: [...z.shape], data: out };
}

/** Concatenates chunk outputs [..., T_i, D] along the token axis into [..., sum T_i, D]. */
export function concatChunks(chunks: readonly Tensor[]): Tensor {
  if (chunks.length === 0) throw new Error('concatChunks: no chunks');
  const first = chunks[0]!.shape;
  if (first.length < 2) throw new Error(`concatChunks: chunk outputs must be [..., tokens, dim], got [${first}]`);
  const lead = first.slice(0, -2);
  const dim = first[first.length - 1]!;
  for (const c of chunks) {
    const s = c.shape;
    if (s.length !== first.length || s[s.length - 1] !== dim || s.slice(0, -2).some((d, i) => d !== lead[i])) {
      throw new Error(`concatChunks: chunk of shape [${s}] does not match [${first}] outside the token axis`);
    }
  }
  const outer = numel(lead);
  const totalTokens = chunks.reduce((n, c) => n + c.shape[c.shape.length - 2]!, 0);
  const out = new Float32Array(outer * totalTokens * dim);
  let offset = 0;
  for (let o = 0; o < outer; o++) {
    for (const c of chunks) {
      const block = c.shape[c.shape.length - 2]! * dim;
      out.set(c.data.subarray(o * block, (o + 1) * block), offset);
      offset += block;
    }
  }
  return { shape: [...lead, totalTokens, dim], data: out };
}

/**
 * Runs `encodeChunk` (the text encoder on one row of 77 ids, giving [1, 77, D] or [77, D]) on every chunk in order,
 * applies the emphasis to each output with that chunk's weights, and joins them along the token axis, as A1111's
 * forward does. For SDXL, A1111 takes the pooled output from the first chunk only.
 */
export async function encodeWeightedChunks(
  chunks: { ids: number[][]; weights: number[][] },
  encodeChunk: (ids: number[], index: number) => Promise<Tensor>,
  mode: EmphasisMode = 'original',
): Promise<Tensor> {
  const outputs: Tensor[] = [];
  for (let i = 0; i < chunks.ids.length; i++) {
    outputs.push(applyEmphasis(await encodeChunk(chunks.ids[i]!, i), chunks.weights[i]!, mode));
  }
  return concatChunks(outputs);
}
