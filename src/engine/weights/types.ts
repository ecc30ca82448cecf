// How networks see weights: by their diffusers/transformers parameter name, whatever file layout they came from.
import type { Tensor } from '../tensor.ts';

export type WeightDType = 'F32' | 'F16' | 'BF16' | 'F64' | 'I64' | 'I32' | 'I16' | 'I8' | 'U8' | 'BOOL';

export interface WeightSource {
  /** Diffusers-style names ("down_blocks.0.resnets.0.conv1.weight", "text_model.encoder.layers.0..."). */
  names(): string[];
  has(name: string): boolean;
  shape(name: string): number[];
  /** Stored dtype, before conversion. */
  dtype(name: string): WeightDType;
  /** The tensor converted to float32 (F16/BF16 widened exactly). Throws ModelFileError naming the file if missing. */
  get(name: string): Tensor;
}
