// How a network emits a Linear whose weight its source offers block-quantised (a GGUF file's Q8_0/Q4_0/Q4_K
// blocks, or a build-time --quantize): one com.microsoft MatMulNBits instead of MatMul(+Add) on float weights.
// Networks ask here first and build the float Linear when the answer is undefined, so the plain path is unchanged.
import type { GraphBuilder, Value } from '../onnx/graph.ts';
import { emitMatMulNBits, scaleNBits, sliceNBitsRows } from '../onnx/matmul-nbits.ts';
import type { Tensor } from '../tensor.ts';
import type { NetWeights } from './blocks.ts';

export interface QuantizedLinearOptions {
  /** Output multiplied by this (folded into the scales and the bias). */
  scale?: number;
  /** Only output rows [start, end) of the weight (one half of a fused projection). */
  rows?: [number, number];
  /** Add the layer's bias inside the op (default); false leaves it to the caller (a later fused op). */
  bias?: boolean;
  /** Initializer name prefix; defaults to `prefix`. */
  name?: string;
}

/**
 * `prefix`.weight as MatMulNBits on x [..., in] when the weights have a quantised form; returns the output and
 * the weight's full [out, in] shape (what LoRA branches are sized by), or undefined for a float Linear.
 */
export function quantizedLinear(
  b: GraphBuilder,
  w: NetWeights,
  prefix: string,
  x: Value,
  opts: QuantizedLinearOptions = {},
): { y: Value; shape: number[] } | undefined {
  const full = w.source.nbits?.(`${prefix}.weight`);
  if (!full) return undefined;
  const scale = opts.scale ?? 1;
  const [start, end] = opts.rows ?? [0, full.n];
  const q = scaleNBits(opts.rows ? sliceNBitsRows(full, start, end) : full, scale);
  let bias: Tensor | undefined;
  if (opts.bias !== false && w.has(`${prefix}.bias`)) {
    const all = w.param(`${prefix}.bias`).data.subarray(start, end);
    bias = { shape: [end - start], data: scale === 1 ? all : all.map((v) => v * scale) };
  }
  return { y: emitMatMulNBits(b, x, q, bias, opts.name ?? prefix), shape: [full.n, full.k] };
}
