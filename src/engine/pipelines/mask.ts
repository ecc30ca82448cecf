// The mask stage of inpainting, in pixels: read the mask (luminance or alpha), fit it to the image, binarize,
// blur, crop around it ("Only masked"), fill the hole (A1111 "Masked content: fill"), the latent-size masks the
// denoiser wrappers use, and the paste-back of the result onto the original. A1111's steps are in
// ../shared/reference-notes.md §4.1 (modules/processing.py, modules/masking.py); diffusers' in §4.2.
import sharp from 'sharp';
import { KilnInputError, type MaskSettings, type RawImage } from '../api.ts';

/** One channel, 0..255, row-major. */
export interface Plane {
  data: Float32Array;
  width: number;
  height: number;
}

export const MASKED_CONTENT = ['fill', 'original', 'latent noise', 'latent nothing'] as const;

/** The mask as one 0..255 plane: the alpha where an RGBA mask has a non-opaque alpha, else PIL's "L" luminance. */
export function maskPlane(img: RawImage): Plane {
  const { width, height, channels, data } = img;
  const n = width * height;
  const out = new Float32Array(n);
  let useAlpha = false;
  if (channels === 4) for (let p = 0; p < n && !useAlpha; p++) useAlpha = data[p * 4 + 3]! !== 255;
  for (let p = 0; p < n; p++) {
    const i = p * channels;
    // PIL's ITU-R 601-2 luma in fixed point (convert('L')).
    out[p] = useAlpha ? data[i + 3]! : (data[i]! * 19595 + data[i + 1]! * 38470 + data[i + 2]! * 7471 + 0x8000) >> 16;
  }
  return { data: out, width, height };
}

/** Resizes a plane (Lanczos as A1111's "Just resize" and diffusers' mask processor; cubic for latent masks). */
export async function resizePlane(p: Plane, width: number, height: number, kernel: 'lanczos3' | 'cubic' = 'lanczos3'): Promise<Plane> {
  if (p.width === width && p.height === height) return p;
  const bytes = Uint8Array.from(p.data, (v) => Math.round(Math.min(255, Math.max(0, v))));
  const out = await sharp(bytes, { raw: { width: p.width, height: p.height, channels: 1 } })
    .resize(width, height, { fit: 'fill', kernel })
    .extractChannel(0)
    .raw()
    .toBuffer();
  return { data: Float32Array.from(out), width, height };
}

/** 255 above `threshold`, else 0 (A1111 mask_round: > 128; diffusers binarize: /255 >= 0.5 i.e. >= 128). */
export function binarize(p: Plane, threshold: (v: number) => boolean): Plane {
  return { ...p, data: p.data.map((v) => (threshold(v) ? 255 : 0)) };
}

export const a1111Round = (v: number) => v > 128;
export const diffusersBinary = (v: number) => v / 255 >= 0.5;

export function invertPlane(p: Plane): Plane {
  return { ...p, data: p.data.map((v) => 255 - v) };
}

/**
 * cv2.GaussianBlur as A1111 calls it: a horizontal kernel of width 2*int(2.5*sx+0.5)+1 with sigma sx, then the
 * vertical one, reflecting at the borders (BORDER_REFLECT_101), rounded back to 8 bits.
 */
export function gaussianBlur(p: Plane, sx: number, sy: number): Plane {
  let data = p.data;
  if (sx > 0) data = blur1d(data, p.width, p.height, sx, true);
  if (sy > 0) data = blur1d(data, p.width, p.height, sy, false);
  return { ...p, data: data.map((v) => Math.round(v)) };
}

function blur1d(src: Float32Array, w: number, h: number, sigma: number, horizontal: boolean): Float32Array {
  const half = Math.trunc(2.5 * sigma + 0.5);
  const kernel = Array.from({ length: 2 * half + 1 }, (_, i) => Math.exp(-((i - half) ** 2) / (2 * sigma * sigma)));
  const total = kernel.reduce((a, b) => a + b, 0);
  const len = horizontal ? w : h;
  const reflect = (i: number) => {
    if (len === 1) return 0;
    const period = 2 * (len - 1);
    const m = ((i % period) + period) % period;
    return m < len ? m : period - m;
  };
  const out = new Float32Array(src.length);
  for (let y = 0; y < h; y++)
    for (let x = 0; x < w; x++) {
      let acc = 0;
      for (let k = -half; k <= half; k++) {
        const v = horizontal ? src[y * w + reflect(x + k)]! : src[reflect(y + k) * w + x]!;
        acc += kernel[k + half]! * v;
      }
      out[y * w + x] = acc / total;
    }
  return out;
}

/** A1111 get_crop_region_v2: the box of the non-zero mask padded and clamped, [x1, y1, x2, y2); undefined if empty. */
export function cropRegion(p: Plane, pad: number): [number, number, number, number] | undefined {
  let x1 = p.width;
  let y1 = p.height;
  let x2 = 0;
  let y2 = 0;
  for (let y = 0; y < p.height; y++)
    for (let x = 0; x < p.width; x++)
      if (p.data[y * p.width + x]! > 0) {
        x1 = Math.min(x1, x);
        y1 = Math.min(y1, y);
        x2 = Math.max(x2, x + 1);
        y2 = Math.max(y2, y + 1);
      }
  if (x2 === 0) return undefined;
  return [Math.max(x1 - pad, 0), Math.max(y1 - pad, 0), Math.min(x2 + pad, p.width), Math.min(y2 + pad, p.height)];
}

/** A1111 expand_crop_region: grow the crop symmetrically to the processing aspect ratio, staying inside the image. */
export function expandCropRegion(
  crop: [number, number, number, number],
  width: number,
  height: number,
  imageWidth: number,
  imageHeight: number,
): [number, number, number, number] {
  let [x1, y1, x2, y2] = crop;
  const ratioCrop = (x2 - x1) / (y2 - y1);
  const ratio = width / height;
  if (ratioCrop > ratio) {
    const diff = Math.trunc((x2 - x1) / ratio - (y2 - y1));
    y1 -= Math.floor(diff / 2);
    y2 += diff - Math.floor(diff / 2);
    if (y2 >= imageHeight) {
      y1 -= y2 - imageHeight;
      y2 = imageHeight;
    }
    if (y1 < 0) {
      y2 -= y1;
      y1 = 0;
    }
    y2 = Math.min(y2, imageHeight);
  } else {
    const diff = Math.trunc((y2 - y1) * ratio - (x2 - x1));
    x1 -= Math.floor(diff / 2);
    x2 += diff - Math.floor(diff / 2);
    if (x2 >= imageWidth) {
      x1 -= x2 - imageWidth;
      x2 = imageWidth;
    }
    if (x1 < 0) {
      x2 -= x1;
      x1 = 0;
    }
    x2 = Math.min(x2, imageWidth);
  }
  return [x1, y1, x2, y2];
}

/**
 * A1111 masking.fill ("Masked content: fill"): paint the masked area with successively less blurred copies of the
 * unmasked image, so the surrounding colours run into the hole. PIL's GaussianBlur is a triple box blur; so is this.
 */
export function fillMasked(img: RawImage, mask: Plane): RawImage {
  const { width: w, height: h } = img;
  const n = w * h;
  // Premultiplied RGBa of the image where the mask is not set.
  const masked = new Float32Array(n * 4);
  for (let p = 0; p < n; p++) {
    const a = (255 - mask.data[p]!) / 255;
    for (let c = 0; c < 3; c++) masked[p * 4 + c] = img.data[p * img.channels + c]! * a;
    masked[p * 4 + 3] = a * 255;
  }
  const acc = new Float32Array(n * 4); // straight RGBA accumulator, starts transparent
  for (const [radius, repeats] of [
    [256, 1],
    [64, 1],
    [16, 2],
    [4, 4],
    [2, 2],
    [0, 1],
  ] as const) {
    const blurred = radius > 0 ? boxBlur3(masked, w, h, radius) : masked;
    for (let r = 0; r < repeats; r++)
      for (let p = 0; p < n; p++) {
        const sa = blurred[p * 4 + 3]! / 255;
        if (sa <= 0) continue;
        const da = acc[p * 4 + 3]! / 255;
        const oa = sa + da * (1 - sa);
        for (let c = 0; c < 3; c++) {
          const s = blurred[p * 4 + c]! / sa; // unpremultiply
          acc[p * 4 + c] = (s * sa + acc[p * 4 + c]! * da * (1 - sa)) / oa;
        }
        acc[p * 4 + 3] = oa * 255;
      }
  }
  const data = new Uint8Array(n * 3);
  for (let p = 0; p < n; p++) for (let c = 0; c < 3; c++) data[p * 3 + c] = Math.round(Math.min(255, Math.max(0, acc[p * 4 + c]!)));
  return { data, width: w, height: h, channels: 3 };
}

/** Three box blurs approximating a Gaussian of this radius (as PIL does), edges extended; 4 interleaved channels. */
function boxBlur3(src: Float32Array, w: number, h: number, sigma: number): Float32Array {
  const r = Math.max(1, Math.round((Math.sqrt(4 * sigma * sigma + 1) - 1) / 2));
  let a = src;
  for (let i = 0; i < 3; i++) a = boxPass(boxPass(a, w, h, r, true), w, h, r, false);
  return a;
}

function boxPass(src: Float32Array, w: number, h: number, r: number, horizontal: boolean): Float32Array {
  const out = new Float32Array(src.length);
  const len = horizontal ? w : h;
  const lines = horizontal ? h : w;
  const at = (line: number, i: number) => (horizontal ? line * w + Math.min(len - 1, Math.max(0, i)) : Math.min(len - 1, Math.max(0, i)) * w + line);
  const size = 2 * r + 1;
  for (let line = 0; line < lines; line++)
    for (let c = 0; c < 4; c++) {
      let sum = 0;
      for (let i = -r; i <= r; i++) sum += src[at(line, i) * 4 + c]!;
      for (let i = 0; i < len; i++) {
        out[at(line, i) * 4 + c] = sum / size;
        sum += src[at(line, i + r + 1) * 4 + c]! - src[at(line, i - r) * 4 + c]!;
      }
    }
  return out;
}

/** Crops an image to [x1, y1, x2, y2) and resizes it to width x height. */
export async function cropResize(img: RawImage, crop: [number, number, number, number], width: number, height: number): Promise<RawImage> {
  const [x1, y1, x2, y2] = crop;
  const { data, info } = await sharp(img.data, { raw: { width: img.width, height: img.height, channels: img.channels } })
    .extract({ left: x1, top: y1, width: x2 - x1, height: y2 - y1 })
    .resize(width, height, { fit: 'fill', kernel: 'lanczos3' })
    .raw()
    .toBuffer({ resolveWithObject: true });
  return { data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength), width: info.width, height: info.height, channels: img.channels as 3 | 4 };
}

export function cropPlane(p: Plane, crop: [number, number, number, number]): Plane {
  const [x1, y1, x2, y2] = crop;
  const w = x2 - x1;
  const data = new Float32Array(w * (y2 - y1));
  for (let y = y1; y < y2; y++) data.set(p.data.subarray(y * p.width + x1, y * p.width + x2), (y - y1) * w);
  return { data, width: w, height: y2 - y1 };
}

/** torch interpolate(mode="nearest") of a plane to the latent size, scaled to 0..1. */
export function nearestToLatent(p: Plane, width: number, height: number): Float32Array {
  const out = new Float32Array(width * height);
  for (let y = 0; y < height; y++)
    for (let x = 0; x < width; x++) {
      const sy = Math.floor((y * p.height) / height);
      const sx = Math.floor((x * p.width) / width);
      out[y * width + x] = p.data[sy * p.width + sx]! / 255;
    }
  return out;
}

/**
 * A1111 apply_overlay: the result (resized into `pasteTo` when the stage worked on a crop) under the original,
 * whose alpha is 255 - overlayMask. Where overlayMask is 0 the output is the original pixel, exactly.
 */
export async function pasteBack(result: RawImage, original: RawImage, overlayMask: Plane, pasteTo?: [number, number, number, number]): Promise<RawImage> {
  let placed = result;
  let ox = 0;
  let oy = 0;
  if (pasteTo) {
    const [x1, y1, x2, y2] = pasteTo;
    const { data, info } = await sharp(result.data, { raw: { width: result.width, height: result.height, channels: result.channels } })
      .resize(x2 - x1, y2 - y1, { fit: 'cover', kernel: 'lanczos3' })
      .raw()
      .toBuffer({ resolveWithObject: true });
    placed = { data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength), width: info.width, height: info.height, channels: result.channels };
    ox = x1;
    oy = y1;
  }
  const { width, height } = original;
  const out = new Uint8Array(width * height * 3);
  for (let y = 0; y < height; y++)
    for (let x = 0; x < width; x++) {
      const p = y * width + x;
      const keep = (255 - overlayMask.data[p]!) / 255;
      const inside = x >= ox && y >= oy && x < ox + placed.width && y < oy + placed.height;
      const q = ((y - oy) * placed.width + (x - ox)) * placed.channels;
      for (let c = 0; c < 3; c++) {
        const orig = original.data[p * original.channels + c]!;
        // Outside the pasted crop the canvas is transparent: only the original shows.
        const res = inside ? placed.data[q + c]! : orig;
        out[p * 3 + c] = keep >= 1 ? orig : Math.round(orig * keep + res * (1 - keep));
      }
    }
  return { data: out, width, height, channels: 3 };
}

/** A mask that repaints nothing is a client mistake (the result would be the input): refuse it early. */
export function assertSomethingToRepaint(p: Plane): void {
  if (!p.data.some((v) => v > 0))
    throw new KilnInputError('mask: the mask is all black, so nothing would be repainted; paint the area to regenerate white', 'mask');
}

export type { MaskSettings };
