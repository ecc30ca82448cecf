// Build-time weight-only quantisation (`--quantize q8|q4`): a WeightSource that offers every Linear-shaped
// weight ([out, in] with at least one full block along `in`) in MatMulNBits form, quantised from the float
// weights one tensor at a time as the graph builder asks for it, so no more than one layer's float copy is
// ever held. Weights already stored quantised (GGUF) keep their own blocks. Everything else passes through.
import { type AccuracyLevel, bitsOf, DEFAULT_BLOCK_SIZE, type NBitsWeight, type QuantizeMode, QUANTIZE_MODES, quantizeNBits } from '../onnx/matmul-nbits.ts';
import type { Tensor } from '../tensor.ts';
import type { WeightDType, WeightSource } from './types.ts';

export { QUANTIZE_MODES, type QuantizeMode } from '../onnx/matmul-nbits.ts';

export function isQuantizeMode(v: unknown): v is QuantizeMode {
  return typeof v === 'string' && (QUANTIZE_MODES as readonly string[]).includes(v);
}

export interface QuantizeOptions {
  /** q8 / q4; undefined keeps float weights (stored-quantised GGUF blocks are still used as they are). */
  mode?: QuantizeMode;
  /** onnxruntime's accuracy_level for the emitted ops: 4 int8 activations (default), 0 exact weights-only. */
  accuracyLevel?: AccuracyLevel;
}

export class QuantizedWeights implements WeightSource {
  constructor(
    readonly inner: WeightSource,
    readonly opts: QuantizeOptions,
  ) {}

  names(): string[] {
    return this.inner.names();
  }
  has(name: string): boolean {
    return this.inner.has(name);
  }
  shape(name: string): number[] {
    return this.inner.shape(name);
  }
  dtype(name: string): WeightDType {
    return this.inner.dtype(name);
  }
  get(name: string): Tensor {
    return this.inner.get(name);
  }

  nbits(name: string): NBitsWeight | undefined {
    const stored = this.inner.nbits?.(name);
    const level = this.opts.accuracyLevel;
    if (stored) return level === undefined ? stored : { ...stored, accuracyLevel: level };
    const mode = this.opts.mode;
    if (!mode || !name.endsWith('.weight') || !this.inner.has(name)) return undefined;
    const shape = this.inner.shape(name);
    if (shape.length !== 2 || shape[1]! < DEFAULT_BLOCK_SIZE) return undefined;
    const [n, k] = shape as [number, number];
    const q = quantizeNBits(this.inner.get(name).data, n, k, bitsOf(mode));
    if (level !== undefined) q.accuracyLevel = level;
    return q;
  }
}

/** `source` with quantised Linears per `opts`; the source itself when there is nothing to do. */
export function withQuantize(source: WeightSource, opts: QuantizeOptions): WeightSource {
  return opts.mode || opts.accuracyLevel !== undefined ? new QuantizedWeights(source, opts) : source;
}

/** A short identity of the quantisation for graph cache keys ("" when none). */
export function quantizeIdentity(opts: QuantizeOptions): string {
  return opts.mode ? `${opts.mode}${opts.accuracyLevel ? `-acc${opts.accuracyLevel}` : ''}` : '';
}
