// Image embeddings (seed 003's /img2embed): the CLIP image embedding and the checkpoint VAE's latent of an image.
// The seed's server fed the VAE raw 0-255 pixels and returned a random sample of the latent distribution; Kiln
// feeds [-1, 1] pixels (what the VAE was trained on) and returns the distribution's mean times the scaling
// factor: the latent img2img would start from, deterministic, so the same image always gives the same numbers.
import { KilnInputError, type RawImage } from '../api.ts';
import { imageToTensor } from '../image.ts';
import { runSession } from '../runtime.ts';
import type { ClipModel } from './clip-model.ts';
import type { ModelSessions } from './model-sessions.ts';
import { pilResize } from './pil-resize.ts';

export interface EmbedImageRequest {
  image: RawImage;
  /** A CLIP model folder or file (models/clip_vision/). */
  clip: { path: string; name?: string };
  /** The checkpoint whose VAE encodes the image; absent = no VAE latent. */
  model?: { path: string; vae?: string; tokenizerDir?: string };
  /**
   * The VAE input size: the image is resized to size x size (Pillow BICUBIC, aspect not kept, as the seed's 512).
   * Default: the checkpoint's native size (512 for SD1, which gives the seed's [4][64][64]).
   */
  vaeSize?: number;
  /**
   * Seed 003 compatibility: resize the image to this square (Pillow BICUBIC) before anything else, as the seed's
   * `image.resize((512, 512))`. The CLIP processor then works on that square, which reproduces its CLIP_embeddings.
   */
  squareResize?: number;
}

export interface EmbedImageResult {
  /** CLIP image_embeds (not normalised), projectionDim floats. */
  clip: Float32Array;
  clipModel: string;
  /** VAE latent mean x scaling_factor, [channels, h, w] flattened. */
  vae?: Float32Array;
  vaeShape?: [number, number, number];
}

export const MAX_VAE_EMBED_SIZE = 2048;

export async function embedImage(req: EmbedImageRequest, clip: ClipModel, checkpoint: ModelSessions | undefined): Promise<EmbedImageResult> {
  let image = req.image;
  const square = req.squareResize;
  if (square !== undefined) {
    if (!(Number.isInteger(square) && square >= 1 && square <= MAX_VAE_EMBED_SIZE))
      throw new KilnInputError(`must be 1 to ${MAX_VAE_EMBED_SIZE}`, 'square_resize');
    image = pilResize(image, square, square, 'bicubic');
  }
  const clipEmbeds = await clip.imageEmbeds(image);
  const out: EmbedImageResult = { clip: clipEmbeds, clipModel: req.clip.name ?? req.clip.path };
  if (!checkpoint) return out;
  const size = req.vaeSize ?? checkpoint.nativeSize;
  const f = checkpoint.latentFactor;
  if (!(Number.isInteger(size) && size >= f && size <= MAX_VAE_EMBED_SIZE && size % f === 0))
    throw new KilnInputError(`must be a multiple of ${f} from ${f} to ${MAX_VAE_EMBED_SIZE}, got ${size}`, 'vae_size');
  const pixels = pilResize(image, size, size, 'bicubic');
  const encoder = await checkpoint.vaeEncoder();
  const { mean } = await runSession(encoder, { image: imageToTensor(pixels) });
  const scale = checkpoint.scalingFactor;
  const latent = mean!.data.map((v) => v * scale);
  const [, c, h, w] = mean!.shape as [number, number, number, number];
  return { ...out, vae: latent, vaeShape: [c, h, w] };
}
