// WeightSource implementations: a table from diffusers names to "recipes" that say which stored tensor to read
// and how to reshape it (split fused q/k/v, transpose, squeeze 1x1 convs). Nothing is read until get().
import { ModelFileError } from '../api.ts';
import type { NBitsWeight } from '../onnx/matmul-nbits.ts';
import type { Tensor } from '../tensor.ts';
import type { TensorFile } from './tensor-file.ts';
import type { WeightDType, WeightSource } from './types.ts';

export type Recipe =
  /** A stored tensor as-is, optionally with another shape of the same size (e.g. [C,C,1,1] -> [C,C]). */
  | { kind: 'tensor'; file: TensorFile; key: string; shape?: number[] }
  /** Part `part` of `parts` equal slices along dim 0 (OpenCLIP's fused in_proj -> q, k, v). Reads only that slice. */
  | { kind: 'rows'; file: TensorFile; key: string; part: number; parts: number }
  /** A stored 2-D tensor transposed (OpenCLIP text_projection is stored [hidden, proj]). */
  | { kind: 'transpose'; file: TensorFile; key: string }
  /** int64 0..n-1 (CLIP position_ids, a constant buffer some files omit or store damaged). */
  | { kind: 'arange'; shape: number[] };

export class MappedWeights implements WeightSource {
  /** `label` names the source in errors (a file, or "file (unet)"). */
  constructor(
    readonly label: string,
    private readonly recipes: Map<string, Recipe>,
  ) {}

  names(): string[] {
    return [...this.recipes.keys()];
  }

  has(name: string): boolean {
    return this.recipes.has(name);
  }

  /** The recipe behind a name: lets callers see which file and key a weight comes from. */
  recipe(name: string): Recipe {
    const r = this.recipes.get(name);
    if (!r) throw new ModelFileError(this.label, `has no weight "${name}"`);
    return r;
  }

  shape(name: string): number[] {
    const r = this.recipe(name);
    switch (r.kind) {
      case 'tensor':
        return [...(r.shape ?? r.file.entry(r.key).shape)];
      case 'rows': {
        const s = r.file.entry(r.key).shape;
        return [s[0]! / r.parts, ...s.slice(1)];
      }
      case 'transpose': {
        const s = r.file.entry(r.key).shape;
        return [s[1]!, s[0]!];
      }
      case 'arange':
        return [...r.shape];
    }
  }

  dtype(name: string): WeightDType {
    const r = this.recipe(name);
    return r.kind === 'arange' ? 'I64' : r.file.entry(r.key).dtype;
  }

  get(name: string): Tensor {
    const r = this.recipe(name);
    const shape = this.shape(name);
    switch (r.kind) {
      case 'tensor':
        return { shape, data: r.file.readFloat32(r.key) };
      case 'rows': {
        const count = shape.reduce((a, d) => a * d, 1);
        return { shape, data: r.file.readFloat32(r.key, r.part * count, count) };
      }
      case 'transpose': {
        const [rows, cols] = r.file.entry(r.key).shape as [number, number];
        const src = r.file.readFloat32(r.key);
        const out = new Float32Array(src.length);
        for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) out[j * rows + i] = src[i * cols + j]!;
        return { shape, data: out };
      }
      case 'arange': {
        const n = shape.reduce((a, d) => a * d, 1);
        const data = new Float32Array(n);
        for (let i = 0; i < n; i++) data[i] = i % shape[shape.length - 1]!;
        return { shape, data };
      }
    }
  }

  /** A stored tensor's quantised blocks as they are (GGUF), for a plain 'tensor' recipe of the stored shape. */
  nbits(name: string): NBitsWeight | undefined {
    const r = this.recipes.get(name);
    if (r?.kind !== 'tensor' || r.shape || !r.file.nbits) return undefined;
    return r.file.nbits(r.key);
  }

  /** The distinct files this source reads from. */
  files(): TensorFile[] {
    const out = new Set<TensorFile>();
    for (const r of this.recipes.values()) if (r.kind !== 'arange') out.add(r.file);
    return [...out];
  }
}

/** Every tensor of one or more files under its stored name, minus an optional prefix (only names with it). */
export function storedWeights(label: string, files: TensorFile[], prefix = ''): MappedWeights {
  const recipes = new Map<string, Recipe>();
  for (const file of files) {
    for (const key of file.names()) {
      if (!key.startsWith(prefix)) continue;
      const name = key.slice(prefix.length);
      if (recipes.has(name)) throw new ModelFileError(file.file, `tensor "${key}" also appears in another shard`);
      recipes.set(name, { kind: 'tensor', file, key });
    }
  }
  return new MappedWeights(label, recipes);
}
