// FaceRestoreHelper.paste_faces_to_input_image with use_parse=True (facexlib 0.3.0, A1111's settings, upscale 1):
// each restored 512x512 face is warped back into the image; its soft mask is the face-parsing classes that belong to
// the face (MASK_COLORMAP), blurred twice (101x101, sigma 11), its 10-px border cleared, warped back too; the image is
// blended face by face in float64 and truncated to 8 bits at the end.
import { type Affine, type Image8, invertAffine, type WarpRegion, warpAffine8, warpColumnOffsets, warpRowOrigin, WARP_SHIFT } from './align.ts';
import { type FacePhaseTimings, startPhase } from './timings.ts';

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

/**
 * cv2.GaussianBlur on a one-channel float64 image: separable (rows, then columns), exact (the full kernel, no box
 * approximation). Each row is copied once into a buffer padded by reflection so the inner loops have no bounds
 * logic, the symmetric kernel halves the multiplies, and the column pass walks whole rows (cache-friendly).
 */
export function gaussianBlur64(src: Float64Array, width: number, height: number, size = BLUR_SIZE, sigma = BLUR_SIGMA): Float64Array {
  const k = gaussianKernel(size, sigma);
  const r = (size - 1) / 2;
  const centre = k[r]!;
  const tmp = new Float64Array(src.length);
  const padded = new Float64Array(width + 2 * r);
  // Rows of tmp holding a nonzero value, counted cumulatively: a window of all-zero rows sums to exactly 0.
  const nonzeroRows = new Int32Array(height + 1);
  for (let y = 0; y < height; y++) {
    const row = y * width;
    let first = -1;
    let last = -1;
    for (let x = -r; x < width + r; x++) {
      const v = src[row + reflect101(x, width)]!;
      padded[x + r] = v;
      if (v !== 0) {
        if (first < 0) first = x + r;
        last = x + r;
      }
    }
    nonzeroRows[y + 1] = nonzeroRows[y]! + (first >= 0 ? 1 : 0);
    if (first < 0) continue; // all zero: the row stays 0
    // Only outputs whose window [x, x + 2r] (padded) reaches [first, last] can be nonzero.
    for (let x = Math.max(0, first - 2 * r), end = Math.min(width, last + 1); x < end; x++) {
      const c = x + r;
      let s = centre * padded[c]!;
      for (let i = 1; i <= r; i++) s += k[r + i]! * (padded[c - i]! + padded[c + i]!);
      tmp[row + x] = s;
    }
  }
  const out = new Float64Array(src.length);
  const rowOf = (y: number) => reflect101(y, height) * width;
  for (let y = 0; y < height; y++) {
    if (y - r >= 0 && y + r < height && nonzeroRows[y + r + 1] === nonzeroRows[y - r]) continue; // window all zero
    const o = y * width;
    for (let x = 0; x < width; x++) out[o + x] = centre * tmp[o + x]!;
    for (let i = 1; i <= r; i++) {
      const w = k[r + i]!;
      const up = rowOf(y - i);
      const down = rowOf(y + i);
      for (let x = 0; x < width; x++) out[o + x]! += w * (tmp[up + x]! + tmp[down + x]!);
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

/** The bilinear weights of warpAffine64 per 1/32 position (float32, as OpenCV's table for float images). */
const FLOAT_TABLE = (() => {
  const t = new Float64Array(INTER_TAB_SIZE * INTER_TAB_SIZE * 4);
  for (let fy = 0; fy < INTER_TAB_SIZE; fy++) {
    for (let fx = 0; fx < INTER_TAB_SIZE; fx++) {
      const ax = fx / INTER_TAB_SIZE;
      const ay = fy / INTER_TAB_SIZE;
      t.set([Math.fround((1 - ay) * (1 - ax)), Math.fround((1 - ay) * ax), Math.fround(ay * (1 - ax)), Math.fround(ay * ax)], (fy * INTER_TAB_SIZE + fx) * 4);
    }
  }
  return t;
})();

/** cv2.warpAffine of a one-channel float64 image, bilinear at 1/32 positions, constant border 0 (`region`: as warpAffine8). */
export function warpAffine64(
  src: Float64Array,
  srcWidth: number,
  srcHeight: number,
  m: Affine,
  width: number,
  height: number,
  region?: WarpRegion,
): Float64Array {
  const inv = invertAffine(m);
  const out = new Float64Array(width * height);
  const { ax, dx } = warpColumnOffsets(inv, width);
  const { x0: rx0, y0: ry0, x1: rx1, y1: ry1 } = region ?? { x0: 0, y0: 0, x1: width, y1: height };
  const at = (x: number, y: number) => (x >= 0 && y >= 0 && x < srcWidth && y < srcHeight ? src[y * srcWidth + x]! : 0);
  for (let oy = ry0; oy < ry1; oy++) {
    const [x0, y0] = warpRowOrigin(inv, oy);
    for (let ox = rx0; ox < rx1; ox++) {
      const X = (ax[ox]! + x0) >> WARP_SHIFT;
      const Y = (dx[ox]! + y0) >> WARP_SHIFT;
      const sx = X >> 5;
      const sy = Y >> 5;
      const t = ((Y & 31) * INTER_TAB_SIZE + (X & 31)) * 4;
      let v: number;
      if (sx >= 0 && sy >= 0 && sx + 1 < srcWidth && sy + 1 < srcHeight) {
        const p = sy * srcWidth + sx;
        v =
          src[p]! * FLOAT_TABLE[t]! +
          src[p + 1]! * FLOAT_TABLE[t + 1]! +
          src[p + srcWidth]! * FLOAT_TABLE[t + 2]! +
          src[p + srcWidth + 1]! * FLOAT_TABLE[t + 3]!;
      } else {
        v =
          at(sx, sy) * FLOAT_TABLE[t]! + at(sx + 1, sy) * FLOAT_TABLE[t + 1]! + at(sx, sy + 1) * FLOAT_TABLE[t + 2]! + at(sx + 1, sy + 1) * FLOAT_TABLE[t + 3]!;
      }
      out[oy * width + ox] = v;
    }
  }
  return out;
}

/**
 * The part of the image a face pasted back can touch: the bounding box of its 512 square mapped by `inverse`, grown
 * by 2 px for the bilinear taps. Outside it both warps sample only the border (0), so the mask is 0 and the blend
 * leaves the image as it is; limiting the work to it changes no value.
 */
export function pasteRegion(inverse: Affine, size: number, width: number, height: number): WarpRegion {
  const xs: number[] = [];
  const ys: number[] = [];
  for (const [x, y] of [
    [0, 0],
    [size, 0],
    [0, size],
    [size, size],
  ] as const) {
    xs.push(inverse[0][0] * x + inverse[0][1] * y + inverse[0][2]);
    ys.push(inverse[1][0] * x + inverse[1][1] * y + inverse[1][2]);
  }
  const clamp = (v: number, hi: number) => Math.min(hi, Math.max(0, v));
  return {
    x0: clamp(Math.floor(Math.min(...xs)) - 2, width),
    y0: clamp(Math.floor(Math.min(...ys)) - 2, height),
    x1: clamp(Math.ceil(Math.max(...xs)) + 3, width),
    y1: clamp(Math.ceil(Math.max(...ys)) + 3, height),
  };
}

export interface RestoredFace {
  /** The restored 512x512 BGR face. */
  face: Image8;
  /** The image -> crop similarity the face was cut out with. */
  affine: Affine;
  /** Its parsing classes (512x512), for the paste mask. */
  classes: Uint8Array;
}

/** Pastes the restored faces back into the BGR image (upscale 1); returns the new BGR image. `timings` gets the
 * mask (parse classes -> blurred soft mask) and paste (warps and blend) phases. */
export function pasteFaces(image: Image8, faces: readonly RestoredFace[], timings?: FacePhaseTimings): { image: Image8; masks: Float64Array[] } {
  const { width, height } = image;
  let done = startPhase(timings, 'paste');
  const acc = Float64Array.from(image.data);
  const masks: Float64Array[] = [];
  for (const { face, affine, classes } of faces) {
    const inverse = invertAffine(affine);
    const region = pasteRegion(inverse, face.width, width, height);
    const back = warpAffine8(face, inverse, width, height, [0, 0, 0], region);
    done();
    done = startPhase(timings, 'mask');
    const soft = parseMask(classes, face.width);
    done();
    done = startPhase(timings, 'paste');
    const mask = warpAffine64(soft, face.width, face.height, inverse, width, height, region);
    masks.push(mask);
    for (let y = region.y0; y < region.y1; y++) {
      for (let p = y * width + region.x0, end = y * width + region.x1; p < end; p++) {
        const m = mask[p]!;
        if (m === 0) continue; // 0 * restored + 1 * image: the image, exactly
        for (let k = 0; k < 3; k++) acc[p * 3 + k] = m * back.data[p * 3 + k]! + (1 - m) * acc[p * 3 + k]!;
      }
    }
  }
  const out = new Uint8Array(acc.length);
  for (let i = 0; i < acc.length; i++) out[i] = Math.min(255, Math.max(0, Math.trunc(acc[i]!)));
  done();
  return { image: { data: out, width, height, channels: 3 }, masks };
}
