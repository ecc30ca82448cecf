// The two ways the SD families turn a prompt into conditioning with CLIP text encoders, as A1111 does it:
// 75-token chunks encoded separately, emphasis applied per chunk, chunks joined along the token axis.
import { encodeWeightedChunks, padChunks, promptToChunks } from '../prompt/index.ts';
import { runSession, type Session } from '../runtime.ts';
import type { Tensor } from '../tensor.ts';
import type { Conditioning, ConditioningScheme, TextEncoders } from './types.ts';

async function encodeIds(session: Session, ids: number[]): Promise<Record<string, Tensor>> {
  return runSession(session, { input_ids: { int64: BigInt64Array.from(ids.map((i) => BigInt(i))), shape: [1, ids.length] } });
}

/** SD1/SD2: one encoder's last layer (or an earlier one with clip skip), after its final norm. */
export const singleClipConditioning: ConditioningScheme = {
  zeroEmptyNegative: false,
  async encode(encoders: TextEncoders, prompt, opts): Promise<Conditioning> {
    const session = await encoders.textEncoder(0, { clipSkip: opts.clipSkip });
    const chunks = promptToChunks(encoders.tokenizer(0), prompt, { field: opts.field });
    const hidden = await encodeWeightedChunks(chunks, async (ids) => (await encodeIds(session, ids)).hidden!);
    return { hidden };
  },
};

/**
 * SDXL (base: CLIP-L + bigG; refiner: bigG): every encoder's penultimate layer without the final norm, joined
 * along the feature axis, and the last encoder's pooled projection of the first chunk. `zeroEmptyNegative`:
 * diffusers' force_zeros_for_empty_prompt (true for the base, false for the refiner).
 */
export function penultimateClipConditioning(zeroEmptyNegative: boolean): ConditioningScheme {
  return {
    zeroEmptyNegative,
    async encode(encoders: TextEncoders, prompt, opts): Promise<Conditioning> {
      const parts = Array.from({ length: encoders.textEncoderCount }, (_, i) => i);
      const lastIndex = parts.length - 1;
      const allChunks = parts.map((i) => promptToChunks(encoders.tokenizer(i), prompt, { field: opts.field }));
      const count = Math.max(...allChunks.map((c) => c.ids.length));
      const hiddens: Tensor[] = [];
      let pooled: Tensor | undefined;
      for (const i of parts) {
        const withPooled = i === lastIndex;
        const session = await encoders.textEncoder(i, { clipSkip: opts.clipSkip, penultimateWithoutNorm: true, textEmbeds: withPooled });
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
    },
  };
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
