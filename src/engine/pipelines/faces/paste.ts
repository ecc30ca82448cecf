// FaceRestoreHelper.paste_faces_to_input_image with use_parse=True (facexlib 0.3.0, A1111's settings, upscale 1):
// each restored 512x512 face is warped back into the image; its soft mask is the face-parsing classes that belong to
// the face (MASK_COLORMAP), blurred twice (101x101, sigma 11), its 10-px border cleared, warped back too; the image is
// blended face by face in float64 and truncated to 8 bits at the end.
import { type Affine, type Image8, invertAffine, warpAffine8 } from './align.ts';

/** Parsing classes pasted (255) or kept from the original (0): background, neck, cloth, hair and hat are kept. */
const MASK_COLORMAP = [0, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 0, 255, 0, 0, 0];
const BLUR_SIZE = 101;
const BLUR_SIGMA = 11;
const MASK_BORDER = 10;

/** cv::getGaussianKernel(n, sigma, CV_64F). */
function gaussianKernel(n: number, sigma: number): Float64Array {
  const k = new Float64Array(n);
  const scale = -0.5 / (sigma * sigma);
  let sum = 0;
  for (let i = 0; i < n; i++) {
    const x = i - (n - 1) * 0.5;
    k[i] = Math.exp(scale * x * x);
    sum += k[i]!;
  }
  for (let i = 0; i < n; i++) k[i]! /= sum;
  return k;
}

/** OpenCV's default border (BORDER_REFLECT_101: ...c b | a b c ... | ... b a). */
function reflect101(i: number, n: number): number {
  if (n === 1) return 0;
  while (i < 0 || i >= n) i = i < 0 ? -i : 2 * n - 2 - i;
  return i;
}

/** cv2.GaussianBlur on a one-channel float64 image (separable: rows, then columns). */
export function gaussianBlur64(src: Float64Array, width: number, height: number, size = BLUR_SIZE, sigma = BLUR_SIGMA): Float64Array {
  const k = gaussianKernel(size, sigma);
  const r = (size - 1) / 2;
  const tmp = new Float64Array(src.length);
  for (let y = 0; y < height; y++) {
    const row = y * width;
    for (let x = 0; x < width; x++) {
      let s = 0;
      for (let i = -r; i <= r; i++) s += k[i + r]! * src[row + reflect101(x + i, width)]!;
      tmp[row + x] = s;
    }
  }
  const out = new Float64Array(src.length);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      let s = 0;
      for (let i = -r; i <= r; i++) s += k[i + r]! * tmp[reflect101(y + i, height) * width + x]!;
      out[y * width + x] = s;
    }
  }
  return out;
}

/** The soft paste mask of one face, 512x512 in [0, 1], from its per-pixel parsing class (ParseNet arg-max). */
export function parseMask(classes: Uint8Array, size = 512): Float64Array {
  const mask = new Float64Array(size * size);
  for (let i = 0; i < mask.length; i++) mask[i] = MASK_COLORMAP[classes[i]!] ?? 0;
  const blurred = gaussianBlur64(gaussianBlur64(mask, size, size), size, size);
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) {
      const edge = y < MASK_BORDER || y >= size - MASK_BORDER || x < MASK_BORDER || x >= size - MASK_BORDER;
      blurred[y * size + x] = edge ? 0 : blurred[y * size + x]! / 255;
    }
  }
  return blurred;
}

const INTER_TAB_SIZE = 32;
const AB_BITS = 10;
const AB_SCALE = 1 << AB_BITS;
const ROUND_DELTA = AB_SCALE / INTER_TAB_SIZE / 2;

/** cv2.warpAffine of a one-channel float64 image, bilinear at 1/32 positions, constant border 0. */
export function warpAffine64(src: Float64Array, srcWidth: number, srcHeight: number, m: Affine, width: number, height: number): Float64Array {
  const [[a, b, c], [d, e, f]] = invertAffine(m);
  const out = new Float64Array(width * height);
  const at = (x: number, y: number) => (x >= 0 && y >= 0 && x < srcWidth && y < srcHeight ? src[y * srcWidth + x]! : 0);
  for (let dy = 0; dy < height; dy++) {
    const x0 = Math.round((b * dy + c) * AB_SCALE) + ROUND_DELTA;
    const y0 = Math.round((e * dy + f) * AB_SCALE) + ROUND_DELTA;
    for (let dx = 0; dx < width; dx++) {
      const X = (Math.round(a * dx * AB_SCALE) + x0) >> 5;
      const Y = (Math.round(d * dx * AB_SCALE) + y0) >> 5;
      const sx = X >> 5;
      const sy = Y >> 5;
      const ax = (X & 31) / INTER_TAB_SIZE;
      const ay = (Y & 31) / INTER_TAB_SIZE;
      out[dy * width + dx] =
        at(sx, sy) * Math.fround((1 - ay) * (1 - ax)) +
        at(sx + 1, sy) * Math.fround((1 - ay) * ax) +
        at(sx, sy + 1) * Math.fround(ay * (1 - ax)) +
        at(sx + 1, sy + 1) * Math.fround(ay * ax);
    }
  }
  return out;
}

export interface RestoredFace {
  /** The restored 512x512 BGR face. */
  face: Image8;
  /** The image -> crop similarity the face was cut out with. */
  affine: Affine;
  /** Its parsing classes (512x512), for the paste mask. */
  classes: Uint8Array;
}

/** Pastes the restored faces back into the BGR image (upscale 1); returns the new BGR image. */
export function pasteFaces(image: Image8, faces: readonly RestoredFace[]): { image: Image8; masks: Float64Array[] } {
  const { width, height } = image;
  const acc = Float64Array.from(image.data);
  const masks: Float64Array[] = [];
  for (const { face, affine, classes } of faces) {
    const inverse = invertAffine(affine);
    const back = warpAffine8(face, inverse, width, height, [0, 0, 0]);
    const mask = warpAffine64(parseMask(classes, face.width), face.width, face.height, inverse, width, height);
    masks.push(mask);
    for (let p = 0; p < width * height; p++) {
      const m = mask[p]!;
      for (let k = 0; k < 3; k++) acc[p * 3 + k] = m * back.data[p * 3 + k]! + (1 - m) * acc[p * 3 + k]!;
    }
  }
  const out = new Uint8Array(acc.length);
  for (let i = 0; i < acc.length; i++) out[i] = Math.min(255, Math.max(0, Math.trunc(acc[i]!)));
  return { image: { data: out, width, height, channels: 3 }, masks };
}
