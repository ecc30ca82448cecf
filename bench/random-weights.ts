// Seeded random weights of real model size, generated on demand from a name -> shape table, so the benchmark
// builds full-size graphs without any checkpoint on disk. Values are scaled like a standard initialisation
// (uniform with std 1/sqrt(fan_in), norm weights 1, small biases) so activations stay finite through the net.
import type { Tensor } from '../src/engine/tensor.ts';
import type { WeightDType, WeightSource } from '../src/engine/weights/types.ts';

export class RandomWeights implements WeightSource {
  constructor(
    readonly label: string,
    private readonly shapes: Map<string, number[]>,
    private readonly seed = 1,
  ) {}

  names(): string[] {
    return [...this.shapes.keys()];
  }
  has(name: string): boolean {
    return this.shapes.has(name);
  }
  shape(name: string): number[] {
    return [...this.lookup(name)];
  }
  dtype(name: string): WeightDType {
    return name.endsWith('position_ids') ? 'I64' : 'F32';
  }
  get(name: string): Tensor {
    const shape = this.lookup(name);
    const n = shape.reduce((a, b) => a * b, 1);
    const data = new Float32Array(n);
    if (name.endsWith('position_ids')) {
      for (let i = 0; i < n; i++) data[i] = i;
      return { shape, data };
    }
    // Per-name seed: the same name always gets the same values, whatever order the builder asks in.
    let s = (this.seed * 0x9e3779b1) ^ hashName(name);
    const next = () => {
      s ^= s << 13;
      s ^= s >>> 17;
      s ^= s << 5;
      return (s >>> 0) / 4294967296 - 0.5; // uniform in [-0.5, 0.5), std 1/sqrt(12)
    };
    if (shape.length === 1) {
      const isNormWeight = /norm[^.]*\.weight$|layer_norm\d?\.weight$/.test(name);
      for (let i = 0; i < n; i++) data[i] = isNormWeight ? 1 + 0.1 * next() : 0.02 * next();
    } else {
      const fanIn = n / shape[0]!;
      const a = Math.sqrt(12 / fanIn);
      for (let i = 0; i < n; i++) data[i] = a * next();
    }
    return { shape, data };
  }
  private lookup(name: string): number[] {
    const s = this.shapes.get(name);
    if (!s) throw new Error(`${this.label}: the random-weight table has no "${name}"`);
    return s;
  }
}

function hashName(name: string): number {
  let h = 2166136261;
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 16777619);
  return h | 1; // xorshift must not start at 0
}

/** Parameter count of a table. */
export function parameterCount(shapes: Map<string, number[]>): number {
  let total = 0;
  for (const s of shapes.values()) total += s.reduce((a, b) => a * b, 1);
  return total;
}

export interface ClipShapeConfig {
  hidden_size: number;
  intermediate_size: number;
  num_hidden_layers: number;
  vocab_size: number;
  max_position_embeddings: number;
  /** CLIPTextModelWithProjection's projection_dim; omitted for CLIPTextModel. */
  projection_dim?: number;
}

/** transformers CLIPTextModel(WithProjection) parameter names and shapes. */
export function clipTextParameterShapes(c: ClipShapeConfig): Map<string, number[]> {
  const m = new Map<string, number[]>();
  const h = c.hidden_size;
  const p = 'text_model';
  m.set(`${p}.embeddings.token_embedding.weight`, [c.vocab_size, h]);
  m.set(`${p}.embeddings.position_embedding.weight`, [c.max_position_embeddings, h]);
  m.set(`${p}.embeddings.position_ids`, [1, c.max_position_embeddings]);
  for (let i = 0; i < c.num_hidden_layers; i++) {
    const l = `${p}.encoder.layers.${i}`;
    for (const proj of ['q_proj', 'k_proj', 'v_proj', 'out_proj']) {
      m.set(`${l}.self_attn.${proj}.weight`, [h, h]);
      m.set(`${l}.self_attn.${proj}.bias`, [h]);
    }
    for (const ln of ['layer_norm1', 'layer_norm2']) {
      m.set(`${l}.${ln}.weight`, [h]);
      m.set(`${l}.${ln}.bias`, [h]);
    }
    m.set(`${l}.mlp.fc1.weight`, [c.intermediate_size, h]);
    m.set(`${l}.mlp.fc1.bias`, [c.intermediate_size]);
    m.set(`${l}.mlp.fc2.weight`, [h, c.intermediate_size]);
    m.set(`${l}.mlp.fc2.bias`, [h]);
  }
  m.set(`${p}.final_layer_norm.weight`, [h]);
  m.set(`${p}.final_layer_norm.bias`, [h]);
  if (c.projection_dim !== undefined) m.set('text_projection.weight', [c.projection_dim, h]);
  return m;
}
