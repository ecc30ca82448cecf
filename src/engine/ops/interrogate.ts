// The `interrogate` operation (A1111 /sdapi/v1/interrogate model "clip", seed 003 /img2prompt): A1111's CLIP
// interrogator over phrase lists (pipelines/interrogate.ts).
import { interrogate, type InterrogateRequest, type InterrogateResult } from '../pipelines/interrogate.ts';
import type { TextTower } from '../pipelines/clip-model.ts';
import type { ModelSessions } from '../pipelines/model-sessions.ts';
import { runSession } from '../runtime.ts';
import type { EngineOp } from './types.ts';

export const interrogateOp: EngineOp<InterrogateRequest, InterrogateResult> = {
  name: 'interrogate',
  run: async (req, ctx) => {
    ctx.onProgress?.({ phase: 'encoding', step: 0, totalSteps: 0, fraction: 0 });
    const clip = await ctx.models.clipModel(req.clip.path);
    return ctx.models.using([clip.textTower() ? undefined : req.model], ([checkpoint]) =>
      interrogate(req, clip, async (dim) => (checkpoint ? checkpointTextTower(checkpoint, dim) : undefined), ctx.models.cacheDir),
    );
  },
};

/**
 * A checkpoint's text encoder as the interrogator's text tower: the first one with a text projection as wide as
 * the image embedding (SDXL's OpenCLIP bigG beside a CLIP-ViT-bigG-14 vision model). SD1/SD2 text encoders have
 * no projection, so they never qualify.
 */
function checkpointTextTower(ms: ModelSessions, projectionDim: number): TextTower | undefined {
  const index = ms.model.textEncoders.findIndex(
    (te) => te.weights.has('text_projection.weight') && te.weights.shape('text_projection.weight')[0] === projectionDim,
  );
  if (index < 0) return undefined;
  return {
    identity: `${ms.model.identity}:text-encoder-${index}`,
    tokenizer: ms.tokenizer(index),
    dim: projectionDim,
    embed: async (ids, sequenceLength) => {
      const session = await ms.textEncoder(index, { hidden: false, textEmbeds: true, sequenceLength });
      const flat = BigInt64Array.from(ids.flat().map((i) => BigInt(i)));
      const out = await runSession(session, { input_ids: { int64: flat, shape: [ids.length, sequenceLength] } });
      return { data: out.text_embeds!.data, dim: projectionDim };
    },
  };
}
