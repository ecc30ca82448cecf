// Weight-only quantised Linear layers as onnxruntime's com.microsoft `MatMulNBits`: Y = A · dequant(B)^T (+ bias),
// B an [N, K] weight (torch.nn.Linear layout: out x in) cut along K into blocks of `blockSize`, each block with
// its own scale and zero point, dequantised as (q - zp) · scale. Layout (onnxruntime ContribOperators.md and
// its CPU kernel): B is uint8 [N, kBlocks, blockSize·bits/8] with codes packed low bits first along K (4-bit:
// element 2i in the low nibble of byte i); scales are [N, kBlocks] in A's type; zero points are either uint8
// codes packed the same way per row ([N, ceil(kBlocks·bits/8)]) or floats [N, kBlocks] in A's type; without
// them the zero point is 2^(bits-1). K need not be a multiple of the block size: the last block is zero-padded.
import type { Tensor } from '../tensor.ts';
import { f32ToF16Bits } from '../weights/float.ts';
import type { GraphBuilder, Value } from './graph.ts';
import { OnnxDType } from './proto.ts';

export type NBits = 4 | 8;

/** Quantisation levels a user can ask for (`--quantize`): 8-bit or 4-bit weights in blocks of 32. */
export type QuantizeMode = 'q8' | 'q4';
export const QUANTIZE_MODES: readonly QuantizeMode[] = ['q8', 'q4'];

/** The block size Kiln quantises with: GGUF's Q8_0/Q4_0 block (so error figures compare), ORT's smallest fast one. */
export const DEFAULT_BLOCK_SIZE = 32;

/** An [N, K] weight in MatMulNBits form. */
export interface NBitsWeight {
  /** Output features (rows of the torch weight). */
  n: number;
  /** Input features (the reduction axis). */
  k: number;
  bits: NBits;
  blockSize: number;
  /** uint8 [N, kBlocks, blockSize·bits/8]. */
  packed: Uint8Array;
  /** [N, kBlocks]. */
  scales: Float32Array;
  /**
   * Per-block zero points: absent = 2^(bits-1) (symmetric); uint8 = codes packed per row as onnxruntime wants
   * them ([N, ceil(kBlocks·bits/8)]); float = [N, kBlocks] exact zero points (GGUF Q4_K's mins).
   */
  zeroPoints?: { kind: 'packed'; data: Uint8Array } | { kind: 'float'; data: Float32Array };
  /** How onnxruntime may compute with it (see AccuracyLevel); default DEFAULT_ACCURACY_LEVEL. */
  accuracyLevel?: AccuracyLevel;
}

export function kBlocksOf(k: number, blockSize: number): number {
  return Math.ceil(k / blockSize);
}

export function bitsOf(mode: QuantizeMode): NBits {
  return mode === 'q8' ? 8 : 4;
}

/** An empty NBitsWeight to fill block by block (codes zero, scales zero). */
export function allocNBits(n: number, k: number, bits: NBits, blockSize: number, zeroPoints?: 'packed' | 'float'): NBitsWeight {
  const kb = kBlocksOf(k, blockSize);
  const w: NBitsWeight = { n, k, bits, blockSize, packed: new Uint8Array((n * kb * blockSize * bits) / 8), scales: new Float32Array(n * kb) };
  if (zeroPoints === 'packed') w.zeroPoints = { kind: 'packed', data: new Uint8Array(n * Math.ceil((kb * bits) / 8)) };
  if (zeroPoints === 'float') w.zeroPoints = { kind: 'float', data: new Float32Array(n * kb) };
  return w;
}

/** Writes code `q` of element `j` (0-based within the block) of block `blk` of row `row`. */
export function setCode(w: NBitsWeight, row: number, blk: number, j: number, q: number): void {
  const blob = (w.blockSize * w.bits) / 8;
  const base = (row * kBlocksOf(w.k, w.blockSize) + blk) * blob;
  if (w.bits === 8) w.packed[base + j] = q;
  else {
    const i = base + (j >> 1);
    w.packed[i] = j & 1 ? (w.packed[i]! & 0x0f) | (q << 4) : (w.packed[i]! & 0xf0) | q;
  }
}

export function getCode(w: NBitsWeight, row: number, blk: number, j: number): number {
  const blob = (w.blockSize * w.bits) / 8;
  const byte = w.packed[(row * kBlocksOf(w.k, w.blockSize) + blk) * blob + (w.bits === 8 ? j : j >> 1)]!;
  return w.bits === 8 ? byte : j & 1 ? byte >> 4 : byte & 0x0f;
}

/** Sets the uint8 zero point of a block (packed per row, low bits first). */
export function setZeroPoint(w: NBitsWeight, row: number, blk: number, zp: number): void {
  const z = w.zeroPoints;
  if (z?.kind === 'float') {
    z.data[row * kBlocksOf(w.k, w.blockSize) + blk] = zp;
    return;
  }
  if (z?.kind !== 'packed') throw new Error('setZeroPoint: this weight has no zero points');
  const perRow = Math.ceil((kBlocksOf(w.k, w.blockSize) * w.bits) / 8);
  if (w.bits === 8) z.data[row * perRow + blk] = zp;
  else {
    const i = row * perRow + (blk >> 1);
    z.data[i] = blk & 1 ? (z.data[i]! & 0x0f) | (zp << 4) : (z.data[i]! & 0xf0) | zp;
  }
}

export function zeroPointOf(w: NBitsWeight, row: number, blk: number): number {
  const z = w.zeroPoints;
  if (!z) return 1 << (w.bits - 1);
  const kb = kBlocksOf(w.k, w.blockSize);
  if (z.kind === 'float') return z.data[row * kb + blk]!;
  const perRow = Math.ceil((kb * w.bits) / 8);
  if (w.bits === 8) return z.data[row * perRow + blk]!;
  const byte = z.data[row * perRow + (blk >> 1)]!;
  return blk & 1 ? byte >> 4 : byte & 0x0f;
}

/**
 * Quantises a float [N, K] weight (row-major, torch Linear layout) block-wise along K. 8-bit: symmetric, scale =
 * absmax/127, codes q+128 with the default zero point 128 (GGUF Q8_0's scheme). 4-bit: asymmetric, scale =
 * (max-min)/15 with a uint8 zero point round(-min/scale), which fits blocks that are not centred on zero better
 * than Q4_0's symmetric codes. Either way every element is within scale/2 of its dequantised value (the bound the
 * tests check), except that 8-bit codes are clamped to [1, 255], which only matters for -absmax exactly.
 */
export function quantizeNBits(data: Float32Array, n: number, k: number, bits: NBits, blockSize = DEFAULT_BLOCK_SIZE): NBitsWeight {
  if (data.length !== n * k) throw new Error(`quantizeNBits: ${data.length} values for an [${n}, ${k}] weight`);
  const kb = kBlocksOf(k, blockSize);
  const w = allocNBits(n, k, bits, blockSize, bits === 4 ? 'packed' : undefined);
  const blob = (blockSize * bits) / 8;
  const packed = w.packed;
  // Written straight into the packed bytes (not through setCode): a 12 B-parameter model is quantised at build time.
  for (let row = 0; row < n; row++) {
    const rowBase = row * k;
    for (let blk = 0; blk < kb; blk++) {
      const start = blk * blockSize;
      const end = Math.min(start + blockSize, k);
      let lo = 0;
      let hi = 0;
      for (let i = start; i < end; i++) {
        const v = data[rowBase + i]!;
        if (v < lo) lo = v;
        if (v > hi) hi = v;
      }
      const out = (row * kb + blk) * blob;
      if (bits === 8) {
        const scale = Math.fround(Math.max(-lo, hi) / 127);
        w.scales[row * kb + blk] = scale;
        const inv = scale === 0 ? 0 : 1 / scale;
        for (let i = start; i < end; i++) packed[out + i - start] = clamp(Math.round(data[rowBase + i]! * inv) + 128, 1, 255);
        for (let i = end; i < start + blockSize; i++) packed[out + i - start] = 128;
      } else {
        // The range always includes 0 (lo <= 0 <= hi) so zero-padding and all-positive blocks stay exact at 0.
        const scale = Math.fround((hi - lo) / 15);
        w.scales[row * kb + blk] = scale;
        const inv = scale === 0 ? 0 : 1 / scale;
        const zp = scale === 0 ? 8 : clamp(Math.round(-lo * inv), 0, 15);
        setZeroPoint(w, row, blk, zp);
        for (let j = 0; j < blockSize; j += 2) {
          const i = start + j;
          const q0 = i < end ? clamp(Math.round(data[rowBase + i]! * inv) + zp, 0, 15) : zp;
          const q1 = i + 1 < end ? clamp(Math.round(data[rowBase + i + 1]! * inv) + zp, 0, 15) : zp;
          packed[out + (j >> 1)] = q0 | (q1 << 4);
        }
      }
    }
  }
  return w;
}

/** The float [N, K] weight an NBitsWeight stands for: (q - zp) · scale, as the kernel computes it. */
export function dequantizeNBits(w: NBitsWeight): Float32Array {
  const out = new Float32Array(w.n * w.k);
  const kb = kBlocksOf(w.k, w.blockSize);
  for (let row = 0; row < w.n; row++) {
    for (let blk = 0; blk < kb; blk++) {
      const scale = w.scales[row * kb + blk]!;
      const zp = zeroPointOf(w, row, blk);
      const start = blk * w.blockSize;
      const end = Math.min(start + w.blockSize, w.k);
      for (let i = start; i < end; i++) out[row * w.k + i] = (getCode(w, row, blk, i - start) - zp) * scale;
    }
  }
  return out;
}

/** Multiplies the scales (and float zero points stay as they are): the weight times `s`. */
export function scaleNBits(w: NBitsWeight, s: number): NBitsWeight {
  if (s === 1) return w;
  return { ...w, scales: w.scales.map((x) => x * s) };
}

/** Rows [start, end) of the weight (output features), e.g. one half of a fused projection. */
export function sliceNBitsRows(w: NBitsWeight, start: number, end: number): NBitsWeight {
  const kb = kBlocksOf(w.k, w.blockSize);
  const blob = (kb * w.blockSize * w.bits) / 8;
  const out: NBitsWeight = { ...w, n: end - start, packed: w.packed.subarray(start * blob, end * blob), scales: w.scales.subarray(start * kb, end * kb) };
  const z = w.zeroPoints;
  if (z?.kind === 'float') out.zeroPoints = { kind: 'float', data: z.data.subarray(start * kb, end * kb) };
  if (z?.kind === 'packed') {
    const perRow = Math.ceil((kb * w.bits) / 8);
    out.zeroPoints = { kind: 'packed', data: z.data.subarray(start * perRow, end * perRow) };
  }
  return out;
}

/** Bytes an NBitsWeight occupies (codes, scales as fp32, zero points). */
export function nbitsBytes(w: NBitsWeight): number {
  return w.packed.byteLength + w.scales.byteLength + (w.zeroPoints?.data.byteLength ?? 0);
}

/**
 * onnxruntime's accuracy_level: 0 computes with fp32 activations against the dequantised weights (exact); 4
 * quantises each block of A to int8 on the fly and uses integer dot products, as stable-diffusion.cpp's quantised
 * matmuls do (q8 activations). Measured on Flux shapes (bench/flux-bench.ts): 8-bit weights run ~3x faster with
 * ~30% less peak memory at level 4, 4-bit ones ~1.3x faster; so 4 is Kiln's default, and 0 is there for checks.
 */
export type AccuracyLevel = 0 | 1 | 4;
export const DEFAULT_ACCURACY_LEVEL: AccuracyLevel = 4;

/** Emits Y = x · dequant(w)^T (+ bias) for x [..., K]: the MatMulNBits equivalent of GraphBuilder.linear. */
export function emitMatMulNBits(
  b: GraphBuilder,
  x: Value,
  w: NBitsWeight,
  bias: Tensor | undefined,
  name: string,
  accuracyLevel = w.accuracyLevel ?? DEFAULT_ACCURACY_LEVEL,
): Value {
  const kb = kBlocksOf(w.k, w.blockSize);
  const fp16 = b.precision === 'fp16';
  const floatType = fp16 ? OnnxDType.FLOAT16 : OnnxDType.FLOAT;
  const floats = (a: Float32Array) => (fp16 ? halfBytes(a) : new Uint8Array(a.buffer, a.byteOffset, a.byteLength));
  // The kernel wants K, N, scales and codes to agree; a mismatch would crash onnxruntime at load, not here.
  if (w.packed.byteLength !== (w.n * kb * w.blockSize * w.bits) / 8 || w.scales.length !== w.n * kb) {
    throw new Error(
      `MatMulNBits ${name}: ${w.packed.byteLength} code bytes / ${w.scales.length} scales do not fit [${w.n}, ${w.k}] in blocks of ${w.blockSize}`,
    );
  }
  const packed = b.initializer(`${name}.qweight`, [w.n, kb, (w.blockSize * w.bits) / 8], OnnxDType.UINT8, w.packed);
  const scales = b.initializer(`${name}.scales`, [w.n, kb], floatType, floats(w.scales));
  let zp: Value | null = null;
  if (w.zeroPoints?.kind === 'packed') zp = b.initializer(`${name}.zero_points`, [w.n, Math.ceil((kb * w.bits) / 8)], OnnxDType.UINT8, w.zeroPoints.data);
  if (w.zeroPoints?.kind === 'float') zp = b.initializer(`${name}.zero_points`, [w.n, kb], floatType, floats(w.zeroPoints.data));
  const biasValue = bias ? b.weight(`${name}.bias`, bias) : null;
  return b.msOp('MatMulNBits', [x, packed, scales, zp, null, biasValue], {
    K: w.k,
    N: w.n,
    bits: w.bits,
    block_size: w.blockSize,
    accuracy_level: accuracyLevel,
  });
}

function halfBytes(a: Float32Array): Uint8Array {
  const out = new Uint16Array(a.length);
  for (let i = 0; i < a.length; i++) out[i] = f32ToF16Bits(a[i]!);
  return new Uint8Array(out.buffer);
}

function clamp(x: number, lo: number, hi: number): number {
  return Math.max(lo, Math.min(hi, x));
}
