// A WeightSource under another layout's names: each name is one stored tensor, several stacked along dim 0 (a
// fused qkv from split q/k/v), or one with its two halves along dim 0 swapped (adaLN (scale, shift) <-> (shift,
// scale)). Used to read diffusers transformer folders under the original checkpoints' names (Flux, SD3).
import { ModelFileError } from '../api.ts';
import type { Tensor } from '../tensor.ts';
import type { WeightDType, WeightSource } from './types.ts';

/** How one name is made from stored tensors. */
export type RenameSource = { kind: 'same'; key: string } | { kind: 'stack'; keys: string[] } | { kind: 'swapHalves'; key: string };

export class RenamedWeights implements WeightSource {
  constructor(
    private readonly source: WeightSource,
    private readonly table: Map<string, RenameSource>,
    /** The network's name in errors. */
    private readonly net: string,
  ) {}

  names(): string[] {
    return [...this.table.keys()];
  }

  has(name: string): boolean {
    return this.table.has(name);
  }

  private entry(name: string): RenameSource {
    const s = this.table.get(name);
    if (!s) throw new ModelFileError(name, `missing ${this.net} weight (no stored tensor maps onto it)`);
    return s;
  }

  shape(name: string): number[] {
    const s = this.entry(name);
    if (s.kind !== 'stack') return this.source.shape(s.key);
    const shapes = s.keys.map((k) => this.source.shape(k));
    return [shapes.reduce((a, sh) => a + sh[0]!, 0), ...shapes[0]!.slice(1)];
  }

  dtype(name: string): WeightDType {
    const s = this.entry(name);
    return this.source.dtype(s.kind === 'stack' ? s.keys[0]! : s.key);
  }

  get(name: string): Tensor {
    const s = this.entry(name);
    if (s.kind === 'same') return this.source.get(s.key);
    if (s.kind === 'swapHalves') {
      const t = this.source.get(s.key);
      const half = t.data.length / 2;
      const data = new Float32Array(t.data.length);
      data.set(t.data.subarray(half), 0);
      data.set(t.data.subarray(0, half), half);
      return { shape: t.shape, data };
    }
    const parts = s.keys.map((k) => this.source.get(k).data);
    const data = new Float32Array(parts.reduce((a, d) => a + d.length, 0));
    let at = 0;
    for (const d of parts) {
      data.set(d, at);
      at += d.length;
    }
    return { shape: this.shape(name), data };
  }
}
