// Prompt -> text-encoder conditioning, as A1111 builds it: 75-token chunks encoded separately, emphasis
// applied per chunk, chunks concatenated along the token axis. SDXL runs both encoders and joins their
// penultimate states along the feature axis, with the bigG pooled projection as the extra embedding.
import { runSession, type Session } from '../runtime.ts';
import { concatChunks, encodeWeightedChunks, padChunks, promptToChunks } from '../prompt/index.ts';
import type { Tensor } from '../tensor.ts';
import type { ModelSessions } from './model-sessions.ts';

export interface Conditioning {
  /** [1, tokens, dim] */
  hidden: Tensor;
  /** SDXL: [1, projection_dim] pooled text embedding. */
  pooled?: Tensor;
}

export interface ConditioningOptions {
  /** A1111 clip skip (1 = last layer). */
  clipSkip: number;
  /** The request field the prompt came from, for error messages. */
  field: string;
}

async function encodeIds(session: Session, ids: number[]): Promise<Record<string, Tensor>> {
  return runSession(session, { input_ids: { int64: BigInt64Array.from(ids.map((i) => BigInt(i))), shape: [1, ids.length] } });
}

export async function encodePrompt(ms: ModelSessions, prompt: string, opts: ConditioningOptions): Promise<Conditioning> {
  const family = ms.model.family;
  if (family === 'sd1' || family === 'sd2') {
    const session = await ms.textEncoder(0, { clipSkip: opts.clipSkip });
    const chunks = promptToChunks(ms.tokenizers[0]!, prompt, { field: opts.field });
    const hidden = await encodeWeightedChunks(chunks, async (ids) => (await encodeIds(session, ids)).hidden!);
    return { hidden };
  }
  // SDXL base: [CLIP-L, bigG]; refiner: [bigG]. Both use the penultimate layer without the final norm.
  const parts = ms.model.textEncoders.map((_, i) => i);
  const lastIndex = parts.length - 1;
  const allChunks = parts.map((i) => promptToChunks(ms.tokenizers[i]!, prompt, { field: opts.field }));
  const count = Math.max(...allChunks.map((c) => c.ids.length));
  const hiddens: Tensor[] = [];
  let pooled: Tensor | undefined;
  for (const i of parts) {
    const withPooled = i === lastIndex;
    const session = await ms.textEncoder(i, { clipSkip: opts.clipSkip, penultimateWithoutNorm: true, textEmbeds: withPooled });
    const chunks = padChunks(allChunks[i]!, count);
    hiddens.push(
      await encodeWeightedChunks(chunks, async (ids, index) => {
        const out = await encodeIds(session, ids);
        // A1111 takes the pooled embedding of the first chunk.
        if (withPooled && index === 0) pooled = out.text_embeds;
        return out.hidden!;
      }),
    );
  }
  return { hidden: concatFeatures(hiddens), pooled };
}

/** Joins [1, T, Di] tensors into [1, T, sum Di]. */
export function concatFeatures(parts: Tensor[]): Tensor {
  if (parts.length === 1) return parts[0]!;
  const tokens = parts[0]!.shape[1]!;
  const dims = parts.map((p) => p.shape[2]!);
  const total = dims.reduce((a, b) => a + b, 0);
  const data = new Float32Array(tokens * total);
  for (let t = 0; t < tokens; t++) {
    let offset = 0;
    parts.forEach((p, i) => {
      data.set(p.data.subarray(t * dims[i]!, (t + 1) * dims[i]!), t * total + offset);
      offset += dims[i]!;
    });
  }
  return { shape: [1, tokens, total], data };
}

/** A conditioning of zeros shaped like `like` (SDXL's force_zeros_for_empty_prompt negative). */
export function zerosLike(like: Conditioning): Conditioning {
  return {
    hidden: { shape: [...like.hidden.shape], data: new Float32Array(like.hidden.data.length) },
    pooled: like.pooled ? { shape: [...like.pooled.shape], data: new Float32Array(like.pooled.data.length) } : undefined,
  };
}

/**
 * Stacks conditionings into one UNet batch. Longer prompts have more 77-token chunks; shorter ones are
 * extended with the encoding of an empty chunk (`filler`, [1, 77, dim]) until all have the same length.
 */
export function stackConditionings(conds: Conditioning[], filler: Tensor): { hidden: Tensor; pooled?: Tensor } {
  const dim = conds[0]!.hidden.shape[2]!;
  const tokens = Math.max(...conds.map((c) => c.hidden.shape[1]!));
  const per = tokens * dim;
  const data = new Float32Array(conds.length * per);
  conds.forEach((c, i) => {
    let h = c.hidden;
    while (h.shape[1]! < tokens) h = concatChunks([h, filler]);
    data.set(h.data, i * per);
  });
  const hidden = { shape: [conds.length, tokens, dim], data };
  if (!conds[0]!.pooled) return { hidden };
  const pdim = conds[0]!.pooled.shape[1]!;
  const pooled = new Float32Array(conds.length * pdim);
  conds.forEach((c, i) => pooled.set(c.pooled!.data, i * pdim));
  return { hidden, pooled: { shape: [conds.length, pdim], data: pooled } };
}
