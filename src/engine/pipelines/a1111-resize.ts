// A1111's image resizes (modules/images.py resize_image, modules/upscaler.py Upscaler.upscale) over Pillow's
// resize: the order of resamples and the rounding of sizes decide the pixels, so both are copied exactly.
import type { RawImage } from '../api.ts';
import { pilPaste, pilResize } from './pil-resize.ts';

/** One step of an upscaler (do_upscale): Lanczos/Nearest resize by the requested scale, or a model's pass. */
export type UpscaleStep = (img: RawImage, scale: number) => Promise<RawImage>;

/** The built-in upscalers besides "None": a single PIL resize to int(size * scale). */
export const PIL_UPSCALERS: Record<'Lanczos' | 'Nearest', UpscaleStep> = {
  Lanczos: async (img, s) => pilResize(img, Math.trunc(img.width * s), Math.trunc(img.height * s), 'lanczos'),
  Nearest: async (img, s) => pilResize(img, Math.trunc(img.width * s), Math.trunc(img.height * s), 'nearest'),
};

/**
 * Upscaler.upscale: up to three steps until the image covers floor(size * scale / 8) * 8 (stopping when a step
 * changes nothing), then a Lanczos resize to exactly that size.
 */
export async function upscalerUpscale(img: RawImage, scale: number, step: UpscaleStep): Promise<RawImage> {
  const destW = Math.floor((img.width * scale) / 8) * 8;
  const destH = Math.floor((img.height * scale) / 8) * 8;
  for (let i = 0; i < 3; i++) {
    if (img.width >= destW && img.height >= destH && (i > 0 || scale !== 1)) break;
    const [w, h] = [img.width, img.height];
    img = await step(img, scale);
    if (img.width === w && img.height === h) break;
  }
  if (img.width !== destW || img.height !== destH) img = pilResize(img, destW, destH, 'lanczos');
  return img;
}

/** resize_image's inner resize: "None" is one Lanczos resize; otherwise the upscaler when enlarging, then Lanczos. */
async function resizeWith(img: RawImage, w: number, h: number, step: UpscaleStep | undefined): Promise<RawImage> {
  if (!step) return pilResize(img, w, h, 'lanczos');
  const scale = Math.max(w / img.width, h / img.height);
  if (scale > 1) img = await upscalerUpscale(img, scale, step);
  if (img.width !== w || img.height !== h) img = pilResize(img, w, h, 'lanczos');
  return img;
}

/** Python's floor division for the integer sizes resize_image computes. */
const idiv = (a: number, b: number) => Math.floor(a / b);

/**
 * resize_image(mode, im, width, height, upscaler): 0 just resize, 1 crop and resize (cover, centre crop),
 * 2 resize and fill (fit, then the borders from zero-size-box resizes of the edge, as Pillow computes them).
 * The fill resizes pass no filter, so Pillow's default BICUBIC applies: each filled row mixes the two edge rows
 * (checked against the reference pixels; the fixture notes' "LANCZOS mix of three rows" does not match them).
 */
export async function resizeImage(mode: 0 | 1 | 2, img: RawImage, width: number, height: number, step?: UpscaleStep): Promise<RawImage> {
  if (mode === 0) return resizeWith(img, width, height, step);
  const ratio = width / height;
  const srcRatio = img.width / img.height;
  const cover = mode === 1;
  const srcW = (cover ? ratio > srcRatio : ratio < srcRatio) ? width : idiv(img.width * height, img.height);
  const srcH = (cover ? ratio <= srcRatio : ratio >= srcRatio) ? height : idiv(img.height * width, img.width);
  const resized = await resizeWith(img, srcW, srcH, step);
  const res: RawImage = { data: new Uint8Array(width * height * 3), width, height, channels: 3 };
  pilPaste(res, resized, idiv(width, 2) - idiv(srcW, 2), idiv(height, 2) - idiv(srcH, 2));
  if (mode === 2 && ratio < srcRatio) {
    const fill = idiv(height, 2) - idiv(srcH, 2);
    if (fill > 0) {
      pilPaste(res, pilResize(resized, width, fill, 'bicubic', [0, 0, width, 0]), 0, 0);
      pilPaste(res, pilResize(resized, width, fill, 'bicubic', [0, resized.height, width, resized.height]), 0, fill + srcH);
    }
  } else if (mode === 2 && ratio > srcRatio) {
    const fill = idiv(width, 2) - idiv(srcW, 2);
    if (fill > 0) {
      pilPaste(res, pilResize(resized, fill, height, 'bicubic', [0, 0, 0, height]), 0, 0);
      pilPaste(res, pilResize(resized, fill, height, 'bicubic', [resized.width, 0, resized.width, height]), fill + srcW, 0);
    }
  }
  return res;
}
