// The `embed-image` operation (seed 003 /img2embed, POST /v1/embeddings/image): CLIP image embedding and the VAE
// encoder's deterministic latent mean (pipelines/embed-image.ts).
import { embedImage, type EmbedImageRequest, type EmbedImageResult } from '../pipelines/embed-image.ts';
import type { EngineOp } from './types.ts';

export const embedImageOp: EngineOp<EmbedImageRequest, EmbedImageResult> = {
  name: 'embed-image',
  run: async (req, ctx) => {
    ctx.onProgress?.({ phase: 'encoding', step: 0, totalSteps: 0, fraction: 0 });
    const clip = await ctx.models.clipModel(req.clip.path);
    return ctx.models.using([req.model], ([checkpoint]) => embedImage(req, clip, checkpoint));
  },
};
