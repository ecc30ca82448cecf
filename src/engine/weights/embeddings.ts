// Textual inversion: an embedding file's vectors become extra rows of a text encoder's token table, and its
// name's token ids in a prompt are replaced by those rows' ids (what A1111 and diffusers' load_textual_inversion
// do). Formats: A1111 `string_to_param.*` (.pt through the pickle reader, or converted to safetensors), kohya
// `emb_params`, diffusers `{"<token>": [n, D]}`, SDXL pairs `clip_l` / `clip_g`.
import { ModelFileError } from '../api.ts';
import type { ClipTokenizer, TokenSubstitution } from '../prompt/tokenizer.ts';
import type { Tensor } from '../tensor.ts';
import { filesIdentity } from './hash.ts';
import { openTensorDictionary } from './lora/tensor-dictionary.ts';
import type { LoadedModel } from './model.ts';
import type { WeightDType, WeightSource } from './types.ts';

export interface EmbeddingRequest {
  /** The word that stands for it in prompts (A1111: the file stem). */
  name: string;
  path: string;
}

const TOKEN_TABLE = 'text_model.embeddings.token_embedding.weight';
const MAX_VECTORS = 75;

/** The vectors a file holds for each kind of encoder: 'clip_l' / 'clip_g' (SDXL pairs) or 'any'. */
function readVectors(path: string): Map<string, Tensor> {
  const dict = openTensorDictionary(path);
  const names = dict.names();
  const out = new Map<string, Tensor>();
  const as2d = (t: Tensor, key: string): Tensor => {
    const d = t.shape[t.shape.length - 1]!;
    const n = t.data.length / d;
    if (t.shape.length > 2 || !Number.isInteger(n) || n < 1 || n > MAX_VECTORS)
      throw new ModelFileError(path, `"${key}" has shape [${t.shape}]; an embedding holds 1 to ${MAX_VECTORS} vectors`);
    return { shape: [n, d], data: t.data };
  };
  if (names.includes('clip_l') || names.includes('clip_g')) {
    for (const k of ['clip_l', 'clip_g']) if (names.includes(k)) out.set(k, as2d(dict.get(k), k));
  } else {
    const key = names.find((k) => k === 'emb_params') ?? names.find((k) => k.startsWith('string_to_param')) ?? (names.length === 1 ? names[0] : undefined);
    if (!key)
      throw new ModelFileError(
        path,
        `is not a textual-inversion embedding (expected emb_params, string_to_param, clip_l/clip_g or one tensor; found ${names.slice(0, 5).join(', ')})`,
      );
    out.set('any', as2d(dict.get(key), key));
  }
  return out;
}

/** A text encoder's token table with extra rows appended (the embeddings' vectors). */
class ExtendedTokenTable implements WeightSource {
  constructor(
    private readonly base: WeightSource,
    private readonly rows: Tensor[],
  ) {}
  names(): string[] {
    return this.base.names();
  }
  has(name: string): boolean {
    return this.base.has(name);
  }
  shape(name: string): number[] {
    const s = this.base.shape(name);
    return name === TOKEN_TABLE ? [s[0]! + this.extra(), s[1]!] : s;
  }
  dtype(name: string): WeightDType {
    return this.base.dtype(name);
  }
  get(name: string): Tensor {
    const t = this.base.get(name);
    if (name !== TOKEN_TABLE) return t;
    const data = new Float32Array(t.data.length + this.extra() * t.shape[1]!);
    data.set(t.data);
    let o = t.data.length;
    for (const r of this.rows) {
      data.set(r.data, o);
      o += r.data.length;
    }
    return { shape: [t.shape[0]! + this.extra(), t.shape[1]!], data };
  }
  private extra(): number {
    return this.rows.reduce((n, r) => n + r.shape[0]!, 0);
  }
}

export interface AppliedEmbeddings {
  /** Per text encoder: its weights with the rows added, the tokenizer with the substitutions, and the graph-key part. */
  textEncoders: Array<{ weights: WeightSource; tokenizer: ClipTokenizer; key?: string }>;
  /** Embeddings skipped because their vectors do not fit this model (A1111 skips them too). */
  warnings: string[];
}

/** What an embedding file holds (header only): vector count and width per encoder kind. Throws ModelFileError. */
export function inspectEmbedding(path: string): { vectors: number; widths: Record<string, number> } {
  const vectors = readVectors(path);
  const first = [...vectors.values()][0]!;
  return { vectors: first.shape[0]!, widths: Object.fromEntries([...vectors].map(([k, t]) => [k, t.shape[1]!])) };
}

/** Adds each embedding to every text encoder it has vectors of the right width for; others are skipped with a warning. */
export function applyEmbeddings(
  model: LoadedModel,
  encoders: Array<{ weights: WeightSource; tokenizer: ClipTokenizer }>,
  embeddings: EmbeddingRequest[],
): AppliedEmbeddings {
  const loaded = embeddings.map((e) => ({ ...e, vectors: readVectors(e.path), identity: filesIdentity([e.path]) }));
  const sdxlPair = encoders.length === 2;
  const warnings: string[] = [];
  return {
    warnings,
    textEncoders: encoders.map((enc, i) => {
      const width = model.textEncoders[i]!.config.hidden_size;
      const vocab = enc.weights.shape(TOKEN_TABLE)[0]!;
      const rows: Tensor[] = [];
      const subs: TokenSubstitution[] = [];
      const keys: string[] = [];
      for (const e of loaded) {
        const kind = sdxlPair ? (i === 0 ? 'clip_l' : 'clip_g') : undefined;
        const v = (kind && e.vectors.get(kind)) ?? e.vectors.get('any') ?? [...e.vectors.values()].find((t) => t.shape[1] === width);
        if (!v) continue;
        if (v.shape[1] !== width) {
          warnings.push(
            `embedding "${e.name}" skipped: its vectors are ${v.shape[1]} wide, ${model.name} (${model.family}) text encoder ${i + 1} needs ${width} (made for another model family)`,
          );
          continue;
        }
        const first = vocab + rows.reduce((n, r) => n + r.shape[0]!, 0);
        rows.push(v);
        subs.push({ from: enc.tokenizer.encode(e.name), to: Array.from({ length: v.shape[0]! }, (_, k) => first + k) });
        keys.push(`${e.identity}:${e.name}`);
      }
      if (rows.length === 0) return enc;
      return { weights: new ExtendedTokenTable(enc.weights, rows), tokenizer: enc.tokenizer.withSubstitutions(subs), key: keys.join(',') };
    }),
  };
}
