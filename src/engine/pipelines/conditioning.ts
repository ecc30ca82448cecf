// Stage 1, conditioning: every image's prompt and negative prompt through the model family's conditioning
// scheme, stacked in the batch layout classifier-free guidance uses (negatives first, then positives).
import type { Conditioning } from '../families/types.ts';
import { concatChunks } from '../prompt/index.ts';
import type { Tensor } from '../tensor.ts';
import type { ImageBatch } from './batch.ts';
import type { ModelSessions } from './model-sessions.ts';

export interface BatchConditioning {
  /** [2B, T, D]: the B negatives then the B positives, as diffusers batches CFG. */
  hidden: Tensor;
  /** [2B, D] pooled text embeddings, for families that have them. */
  pooled?: Tensor;
}

/** A1111 extra-network tags (`<lora:name:w>`, `<lyco:...>`): they choose LoRAs and are not encoded as text. */
const LORA_TAG = /<(?:lora|lyco):[^>]+>/gi;

export async function conditionBatch(ms: ModelSessions, batch: ImageBatch, clipSkip: number): Promise<BatchConditioning> {
  // A window of a larger batch: padded as in the whole batch (batch-window.ts), then its own rows.
  if (batch.window) return windowRows(await conditionBatch(ms, batch.window.whole, clipSkip), batch.window.whole.count, batch.window.start, batch.count);
  const scheme = ms.unetFamily.conditioning;
  const cache = new Map<string, Conditioning>();
  // Only a request with LoRAs strips tags (the infotext keeps them, as A1111's does, so it can be pasted back).
  const encode = async (prompt: string, field: string) => {
    const text = ms.loras ? prompt.replace(LORA_TAG, '') : prompt;
    let c = cache.get(text);
    if (!c) {
      c = await scheme.encode(ms, text, { clipSkip, field });
      cache.set(text, c);
    }
    return c;
  };
  const positives = [];
  for (const p of batch.prompts) positives.push(await encode(p, 'prompt'));
  const negs = [];
  for (const [i, n] of batch.negatives.entries()) {
    negs.push(n === '' && scheme.zeroEmptyNegative ? zerosLike(positives[i]!) : await encode(n, 'negative_prompt'));
  }
  const filler = (await encode('', 'negative_prompt')).hidden;
  return stackConditionings([...negs, ...positives], filler);
}

/** A conditioning of zeros shaped like `like` (SDXL's force_zeros_for_empty_prompt negative). */
export function zerosLike(like: Conditioning): Conditioning {
  return {
    hidden: { shape: [...like.hidden.shape], data: new Float32Array(like.hidden.data.length) },
    pooled: like.pooled ? { shape: [...like.pooled.shape], data: new Float32Array(like.pooled.data.length) } : undefined,
  };
}

/**
 * Stacks conditionings into one network batch. Longer prompts have more 77-token chunks; shorter ones are
 * extended with the encoding of an empty chunk (`filler`, [1, 77, dim]) until all have the same length.
 */
export function stackConditionings(conds: Conditioning[], filler: Tensor): BatchConditioning {
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

/** Rows start..start+count-1 of each half (negatives, positives) of a whole batch's conditioning. */
function windowRows(c: BatchConditioning, wholeCount: number, start: number, count: number): BatchConditioning {
  const pick = (t: Tensor): Tensor => {
    const per = t.data.length / t.shape[0]!;
    const data = new Float32Array(2 * count * per);
    data.set(t.data.subarray(start * per, (start + count) * per), 0);
    data.set(t.data.subarray((wholeCount + start) * per, (wholeCount + start + count) * per), count * per);
    return { shape: [2 * count, ...t.shape.slice(1)], data };
  };
  return { hidden: pick(c.hidden), ...(c.pooled ? { pooled: pick(c.pooled) } : {}) };
}
