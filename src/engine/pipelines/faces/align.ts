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

/**
 * cv2.warpAffine(src, m, (width, height)) with INTER_LINEAR and a constant border (`border` per channel): each output
 * pixel samples the source at m applied to its coordinates (m maps source -> destination; OpenCV inverts it).
 */
export function warpAffine8(src: Image8, m: Affine, width: number, height: number, border: readonly number[]): Image8 {
  const inv = invertAffine(m);
  const [[a, b, c], [d, e, f]] = inv;
  const ch = src.channels;
  const out = new Uint8Array(width * height * ch);
  const pixel = (x: number, y: number, k: number) =>
    x >= 0 && y >= 0 && x < src.width && y < src.height ? src.data[(y * src.width + x) * ch + k]! : (border[k] ?? 0);
  for (let dy = 0; dy < height; dy++) {
    // OpenCV precomputes X0 = round(b*y + c) and per column round(a*x) in 1/1024 units (saturate_cast<int>).
    const x0 = Math.round((b * dy + c) * AB_SCALE) + ROUND_DELTA;
    const y0 = Math.round((e * dy + f) * AB_SCALE) + ROUND_DELTA;
    for (let dx = 0; dx < width; dx++) {
      const X = (Math.round(a * dx * AB_SCALE) + x0) >> (AB_BITS - INTER_BITS);
      const Y = (Math.round(d * dx * AB_SCALE) + y0) >> (AB_BITS - INTER_BITS);
      const sx = X >> INTER_BITS;
      const sy = Y >> INTER_BITS;
      const [w00, w01, w10, w11] = bilinearWeights(X & (INTER_TAB_SIZE - 1), Y & (INTER_TAB_SIZE - 1));
      const o = (dy * width + dx) * ch;
      for (let k = 0; k < ch; k++) {
        const v = pixel(sx, sy, k) * w00 + pixel(sx + 1, sy, k) * w01 + pixel(sx, sy + 1, k) * w10 + pixel(sx + 1, sy + 1, k) * w11;
        out[o + k] = Math.min(255, Math.max(0, (v + (1 << (COEF_BITS - 1))) >> COEF_BITS));
      }
    }
  }
  return { data: out, width, height, channels: ch };
}
