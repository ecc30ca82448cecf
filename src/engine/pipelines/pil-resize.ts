// Pillow 9.4's 8-bit resize, reimplemented for bit-exact parity with A1111's PIL resizes (libImaging/Resample.c
// precompute_coeffs / normalize_coeffs_8bpc / ImagingResampleInner; NEAREST through Geometry.c's
// ImagingScaleAffine): separable passes, horizontal first, fixed-point coefficients with 22 fractional bits,
// the intermediate stored as uint8. Images are RGB, HWC.
import type { RawImage } from '../api.ts';

export type PilFilter = 'lanczos' | 'bicubic' | 'bilinear' | 'nearest';

/** A source box (left, top, right, bottom) in float pixels, as Image.resize(box=...). */
export type Box = [number, number, number, number];

const PRECISION_BITS = 32 - 8 - 2;

function sinc(x: number): number {
  if (x === 0) return 1;
  const px = x * Math.PI;
  return Math.sin(px) / px;
}

const FILTERS: Record<Exclude<PilFilter, 'nearest'>, { support: number; f: (x: number) => number }> = {
  lanczos: { support: 3, f: (x) => (x >= -3 && x < 3 ? sinc(x) * sinc(x / 3) : 0) },
  bicubic: {
    support: 2,
    f: (x) => {
      const a = -0.5;
      const ax = Math.abs(x);
      if (ax < 1) return ((a + 2) * ax - (a + 3)) * ax * ax + 1;
      if (ax < 2) return ((a * ax - 5 * a) * ax + 8 * a) * ax - 4 * a;
      return 0;
    },
  },
  bilinear: { support: 1, f: (x) => Math.max(0, 1 - Math.abs(x)) },
};

interface Coeffs {
  ksize: number;
  /** Per output pixel: first input index and tap count. */
  bounds: Int32Array;
  /** Fixed-point weights, ksize per output pixel. */
  kk: Float64Array;
}

function precomputeCoeffs(inSize: number, in0: number, in1: number, outSize: number, filter: Exclude<PilFilter, 'nearest'>): Coeffs {
  const { support: base, f } = FILTERS[filter];
  const scale = (in1 - in0) / outSize;
  const filterscale = Math.max(scale, 1);
  const support = base * filterscale;
  const ksize = Math.ceil(support) * 2 + 1;
  const bounds = new Int32Array(outSize * 2);
  const kk = new Float64Array(outSize * ksize);
  const pre = new Float64Array(ksize);
  for (let xx = 0; xx < outSize; xx++) {
    const center = in0 + (xx + 0.5) * scale;
    const ss = 1 / filterscale;
    const xmin = Math.max(0, Math.trunc(center - support + 0.5));
    const xmax = Math.min(inSize, Math.trunc(center + support + 0.5)) - xmin;
    let ww = 0;
    for (let x = 0; x < xmax; x++) {
      pre[x] = f((x + xmin - center + 0.5) * ss);
      ww += pre[x]!;
    }
    for (let x = 0; x < xmax; x++) {
      const k = ww !== 0 ? pre[x]! / ww : pre[x]!;
      // normalize_coeffs_8bpc: rounded half away from zero, truncated by the C int cast.
      kk[xx * ksize + x] = Math.trunc(k < 0 ? -0.5 + k * (1 << PRECISION_BITS) : 0.5 + k * (1 << PRECISION_BITS));
    }
    bounds[xx * 2] = xmin;
    bounds[xx * 2 + 1] = Math.max(0, xmax);
  }
  return { ksize, bounds, kk };
}

function clip8(acc: number): number {
  return Math.min(255, Math.max(0, Math.floor(acc / (1 << PRECISION_BITS))));
}

/** One separable pass along x (horizontal) or y, reading rows [offset, offset + out.height) of `src` for x. */
function resamplePass(src: RawImage, outW: number, outH: number, c: Coeffs, horizontal: boolean, offset: number): RawImage {
  const out: RawImage = { data: new Uint8Array(outW * outH * 3), width: outW, height: outH, channels: 3 };
  const ch = src.channels;
  const half = 1 << (PRECISION_BITS - 1);
  for (let y = 0; y < outH; y++)
    for (let x = 0; x < outW; x++) {
      const i = horizontal ? x : y;
      const min = c.bounds[i * 2]!;
      const n = c.bounds[i * 2 + 1]!;
      for (let k = 0; k < 3; k++) {
        let acc = half;
        for (let t = 0; t < n; t++) {
          const p = horizontal ? ((y + offset) * src.width + min + t) * ch : ((min + t) * src.width + x) * ch;
          acc += src.data[p + k]! * c.kk[i * c.ksize + t]!;
        }
        out.data[(y * outW + x) * 3 + k] = clip8(acc);
      }
    }
  return out;
}

function toRgb(img: RawImage): RawImage {
  if (img.channels === 3) return img;
  const data = new Uint8Array(img.width * img.height * 3);
  for (let p = 0; p < img.width * img.height; p++) data.set(img.data.subarray(p * 4, p * 4 + 3), p * 3);
  return { data, width: img.width, height: img.height, channels: 3 };
}

/** Image.resize((w, h), resample, box) on an RGB image. */
export function pilResize(image: RawImage, w: number, h: number, filter: PilFilter, box?: Box): RawImage {
  const img = toRgb(image);
  const b: Box = box ?? [0, 0, img.width, img.height];
  if (w === img.width && h === img.height && b[0] === 0 && b[1] === 0 && b[2] === img.width && b[3] === img.height) {
    return { ...img, data: img.data.slice() };
  }
  if (filter === 'nearest') return nearestScale(img, w, h, b);
  const needH = w !== img.width || b[0] !== 0 || b[2] !== w;
  const needV = h !== img.height || b[1] !== 0 || b[3] !== h;
  const horiz = precomputeCoeffs(img.width, b[0], b[2], w, filter);
  const vert = precomputeCoeffs(img.height, b[1], b[3], h, filter);
  const yFirst = vert.bounds[0]!;
  const yLast = vert.bounds[h * 2 - 2]! + vert.bounds[h * 2 - 1]!;
  let cur = img;
  if (needH) {
    cur = resamplePass(img, w, yLast - yFirst, horiz, true, yFirst);
    for (let i = 0; i < h; i++) vert.bounds[i * 2] = vert.bounds[i * 2]! - yFirst;
  }
  if (needV) cur = resamplePass(cur, w, h, vert, false, 0);
  return cur === img ? { ...img, data: img.data.slice() } : cur;
}

/** ImagingScaleAffine: source index COORD(origin + a*(i + 0.5)), accumulated step by step as Pillow does. */
function nearestScale(img: RawImage, w: number, h: number, b: Box): RawImage {
  const coords = (n: number, a: number, origin: number, limit: number) => {
    const out = new Int32Array(n);
    let o = origin + a * 0.5;
    for (let i = 0; i < n; i++) {
      const v = o < 0 ? -1 : Math.trunc(o);
      out[i] = v < limit ? v : -1;
      o += a;
    }
    return out;
  };
  const xs = coords(w, (b[2] - b[0]) / w, b[0], img.width);
  const ys = coords(h, (b[3] - b[1]) / h, b[1], img.height);
  const data = new Uint8Array(w * h * 3);
  for (let y = 0; y < h; y++)
    for (let x = 0; x < w; x++) {
      if (ys[y]! < 0 || xs[x]! < 0) continue;
      data.set(img.data.subarray((ys[y]! * img.width + xs[x]!) * 3, (ys[y]! * img.width + xs[x]!) * 3 + 3), (y * w + x) * 3);
    }
  return { data, width: w, height: h, channels: 3 };
}

/** Image.paste(src, (x, y)) without a mask, clipped to `dst`. */
export function pilPaste(dst: RawImage, src: RawImage, x: number, y: number): void {
  for (let row = 0; row < src.height; row++) {
    const dy = y + row;
    if (dy < 0 || dy >= dst.height) continue;
    for (let col = 0; col < src.width; col++) {
      const dx = x + col;
      if (dx < 0 || dx >= dst.width) continue;
      dst.data.set(src.data.subarray((row * src.width + col) * 3, (row * src.width + col) * 3 + 3), (dy * dst.width + dx) * 3);
    }
  }
}
