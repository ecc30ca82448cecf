// FaceRestoreHelper's geometry (facexlib 0.3.0, as A1111 runs it): the similarity that maps a face's 5 landmarks
// onto the 512x512 FFHQ template, its inverse, and OpenCV's warpAffine (INTER_LINEAR, fixed point: sub-pixel
// positions quantised to 1/32, 15-bit weights for 8-bit images) used to cut the face out and to put it back.

/** facexlib's 5-point template for face_size 512 (left eye, right eye, nose, left and right mouth corner). */
export const FACE_TEMPLATE_512: readonly [number, number][] = [
  [192.98138, 239.94708],
  [318.90277, 240.1936],
  [256.63416, 314.01935],
  [201.26117, 371.41043],
  [313.08905, 371.15118],
];

/** A 2x3 affine matrix [[a, b, c], [d, e, f]] (x' = a x + b y + c, y' = d x + e y + f). */
export type Affine = [[number, number, number], [number, number, number]];

/**
 * The least-squares similarity (rotation, uniform scale, translation) mapping `from` onto `to`. OpenCV's
 * estimateAffinePartial2D(LMEDS) refines this same fit over its inliers; for five consistent landmarks every point
 * is an inlier and the two agree to ~1e-5.
 */
export function similarityTransform(from: readonly [number, number][], to: readonly [number, number][]): Affine {
  const n = from.length;
  let mx = 0;
  let my = 0;
  let ux = 0;
  let uy = 0;
  for (let i = 0; i < n; i++) {
    mx += from[i]![0];
    my += from[i]![1];
    ux += to[i]![0];
    uy += to[i]![1];
  }
  mx /= n;
  my /= n;
  ux /= n;
  uy /= n;
  let sxx = 0;
  let a = 0;
  let b = 0;
  for (let i = 0; i < n; i++) {
    const x = from[i]![0] - mx;
    const y = from[i]![1] - my;
    const u = to[i]![0] - ux;
    const v = to[i]![1] - uy;
    sxx += x * x + y * y;
    a += x * u + y * v;
    b += x * v - y * u;
  }
  a /= sxx;
  b /= sxx;
  return [
    [a, -b, ux - (a * mx - b * my)],
    [b, a, uy - (b * mx + a * my)],
  ];
}

/** cv2.invertAffineTransform. */
export function invertAffine(m: Affine): Affine {
  const [[a, b, c], [d, e, f]] = m;
  const det = a * e - b * d;
  const ia = e / det;
  const ib = -b / det;
  const id = -d / det;
  const ie = a / det;
  return [
    [ia, ib, -(ia * c + ib * f)],
    [id, ie, -(id * c + ie * f)],
  ];
}

export interface Image8 {
  data: Uint8Array;
  width: number;
  height: number;
  channels: number;
}

const INTER_BITS = 5;
const INTER_TAB_SIZE = 1 << INTER_BITS;
const COEF_BITS = 15;
const COEF_SCALE = 1 << COEF_BITS;
const AB_BITS = 10; // OpenCV's warpAffine: coordinates in fixed point with 10 fractional bits, then rounded to 1/32
const AB_SCALE = 1 << AB_BITS;
const ROUND_DELTA = AB_SCALE / INTER_TAB_SIZE / 2;

/** OpenCV's bilinear weight table entry for a 1/32 position, as 15-bit integers summing to 2^15. */
function bilinearWeights(fx: number, fy: number): [number, number, number, number] {
  const ax = fx / INTER_TAB_SIZE;
  const ay = fy / INTER_TAB_SIZE;
  const w = [(1 - ay) * (1 - ax), (1 - ay) * ax, ay * (1 - ax), ay * ax];
  const iw = w.map((v) => Math.round(v * COEF_SCALE)); // saturate_cast<short>: round half to even
  // OpenCV fixes the rounding error on the largest weight so they sum to exactly 2^15.
  const sum = iw[0]! + iw[1]! + iw[2]! + iw[3]!;
  if (sum !== COEF_SCALE) {
    let k = 0;
    for (let i = 1; i < 4; i++) if (w[i]! > w[k]!) k = i;
    iw[k]! += COEF_SCALE - sum;
  }
  return iw as [number, number, number, number];
}

/** The whole table, as OpenCV builds it once: 4 weights per (fy * 32 + fx). */
const BILINEAR_TABLE = (() => {
  const t = new Int32Array(INTER_TAB_SIZE * INTER_TAB_SIZE * 4);
  for (let fy = 0; fy < INTER_TAB_SIZE; fy++) for (let fx = 0; fx < INTER_TAB_SIZE; fx++) t.set(bilinearWeights(fx, fy), (fy * INTER_TAB_SIZE + fx) * 4);
  return t;
})();

/** Output rectangle [x0, x1) x [y0, y1) that a warp computes; pixels outside stay 0. */
export interface WarpRegion {
  x0: number;
  y0: number;
  x1: number;
  y1: number;
}

/**
 * OpenCV's warpAffine source positions for one output row, in 1/32 pixel (X, Y per column): X0 = round(b*y + c) and
 * per column round(a*x) in 1/1024 units (saturate_cast<int>), summed and shifted down to 1/32.
 */
export function warpColumnOffsets(inv: Affine, width: number): { ax: Int32Array; dx: Int32Array } {
  const ax = new Int32Array(width);
  const dx = new Int32Array(width);
  for (let x = 0; x < width; x++) {
    ax[x] = Math.round(inv[0][0] * x * AB_SCALE);
    dx[x] = Math.round(inv[1][0] * x * AB_SCALE);
  }
  return { ax, dx };
}

export function warpRowOrigin(inv: Affine, y: number): [number, number] {
  return [Math.round((inv[0][1] * y + inv[0][2]) * AB_SCALE) + ROUND_DELTA, Math.round((inv[1][1] * y + inv[1][2]) * AB_SCALE) + ROUND_DELTA];
}

export const WARP_SHIFT = AB_BITS - INTER_BITS;

/**
 * cv2.warpAffine(src, m, (width, height)) with INTER_LINEAR and a constant border (`border` per channel): each output
 * pixel samples the source at m applied to its coordinates (m maps source -> destination; OpenCV inverts it).
 * `region` limits the work to a rectangle of the output (the rest is left 0; callers use it where 0 is the border).
 */
export function warpAffine8(src: Image8, m: Affine, width: number, height: number, border: readonly number[], region?: WarpRegion): Image8 {
  const inv = invertAffine(m);
  const ch = src.channels;
  const sw = src.width;
  const sh = src.height;
  const data = src.data;
  const out = new Uint8Array(width * height * ch);
  const { ax, dx } = warpColumnOffsets(inv, width);
  const { x0: rx0, y0: ry0, x1: rx1, y1: ry1 } = region ?? { x0: 0, y0: 0, x1: width, y1: height };
  const pixel = (x: number, y: number, k: number) => (x >= 0 && y >= 0 && x < sw && y < sh ? data[(y * sw + x) * ch + k]! : (border[k] ?? 0));
  const half = 1 << (COEF_BITS - 1);
  for (let oy = ry0; oy < ry1; oy++) {
    const [x0, y0] = warpRowOrigin(inv, oy);
    for (let ox = rx0; ox < rx1; ox++) {
      const X = (ax[ox]! + x0) >> WARP_SHIFT;
      const Y = (dx[ox]! + y0) >> WARP_SHIFT;
      const sx = X >> INTER_BITS;
      const sy = Y >> INTER_BITS;
      const t = ((Y & (INTER_TAB_SIZE - 1)) * INTER_TAB_SIZE + (X & (INTER_TAB_SIZE - 1))) * 4;
      const w00 = BILINEAR_TABLE[t]!;
      const w01 = BILINEAR_TABLE[t + 1]!;
      const w10 = BILINEAR_TABLE[t + 2]!;
      const w11 = BILINEAR_TABLE[t + 3]!;
      const o = (oy * width + ox) * ch;
      if (sx >= 0 && sy >= 0 && sx + 1 < sw && sy + 1 < sh) {
        const p = (sy * sw + sx) * ch;
        const q = p + sw * ch;
        for (let k = 0; k < ch; k++) {
          const v = data[p + k]! * w00 + data[p + ch + k]! * w01 + data[q + k]! * w10 + data[q + ch + k]! * w11;
          out[o + k] = (v + half) >> COEF_BITS; // weights sum to 2^15 and values are 0..255: no saturation needed
        }
        continue;
      }
      for (let k = 0; k < ch; k++) {
        const v = pixel(sx, sy, k) * w00 + pixel(sx + 1, sy, k) * w01 + pixel(sx, sy + 1, k) * w10 + pixel(sx + 1, sy + 1, k) * w11;
        out[o + k] = Math.min(255, Math.max(0, (v + half) >> COEF_BITS));
      }
    }
  }
  return { data: out, width, height, channels: ch };
}
