// img2img's init image fitted to the requested size by A1111's resize_mode (StableDiffusionProcessingImg2Img.init):
// 0 "Just resize" (Lanczos, aspect ratio not kept), 1 "Crop and resize" and 2 "Resize and fill" through A1111's
// resize_image over the bit-exact Pillow resizes (a1111-resize.ts; img2img passes no upscaler, so every resize is
// one Lanczos), and 3 "Just resize (latent upscale)": the image is encoded at its own size and the latent resized
// bilinearly (F.interpolate, align_corners=False, no antialias) to the requested latent size.
import { KilnInputError, type InitResizeMode, type RawImage, type Tiling } from '../api.ts';
import { imageToTensor, resizeImage as justResize } from '../image.ts';
import { resizeImage } from './a1111-resize.ts';
import { upscaleLatent } from './latent-upscale.ts';
import type { ModelSessions } from './model-sessions.ts';
import { vaeEncode, vaeTilesFor } from './vae-tiles.ts';

export function checkResizeMode(mode: unknown): asserts mode is InitResizeMode | undefined {
  if (mode !== undefined && mode !== 0 && mode !== 1 && mode !== 2 && mode !== 3) {
    throw new KilnInputError(
      `resize_mode must be 0 (just resize), 1 (crop and resize), 2 (resize and fill) or 3 (latent upscale), got ${JSON.stringify(mode)}`,
      'resize_mode',
    );
  }
}

/** The image's RGB channels (alpha dropped, as the "Just resize" path does). */
function rgb(img: RawImage): RawImage {
  if (img.channels === 3) return img;
  const plane = img.width * img.height;
  const data = new Uint8Array(plane * 3);
  for (let p = 0; p < plane; p++) for (let c = 0; c < 3; c++) data[p * 3 + c] = img.data[p * img.channels + c]!;
  return { data, width: img.width, height: img.height, channels: 3 };
}

/** Modes 0-2: the init image at exactly width x height. */
export async function fitInitImage(img: RawImage, width: number, height: number, mode: 0 | 1 | 2): Promise<RawImage> {
  if (mode === 0) return justResize(img, width, height);
  return resizeImage(mode, rgb(img), width, height);
}

/**
 * Mode 3: the init image encoded at its own size (tiled when large), the distribution's mean scaled into latent
 * space, then resized bilinearly to the requested latent size and repeated for the batch. A1111 samples the
 * distribution with torch's unseeded global generator before resizing; the mean keeps a seed's result fixed.
 */
export async function latentResizedInit(
  ms: ModelSessions,
  img: RawImage,
  width: number,
  height: number,
  count: number,
  tiling?: Tiling,
): Promise<Float32Array> {
  const encoder = await ms.vaeEncoder(tiling);
  const { mean } = await vaeEncode(encoder, imageToTensor(rgb(img)), ms.latentFactor, tiling, vaeTilesFor(ms));
  const scaled = { shape: mean.shape, data: mean.data.map((v) => v * ms.scalingFactor) };
  const f = ms.latentFactor;
  const resized = upscaleLatent(scaled, Math.floor(height / f), Math.floor(width / f), 'bilinear', false).data;
  const out = new Float32Array(count * resized.length);
  for (let i = 0; i < count; i++) out.set(resized, i * resized.length);
  return out;
}
