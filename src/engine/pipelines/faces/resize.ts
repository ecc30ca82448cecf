// cv2.resize(..., INTER_LANCZOS4) for 8-bit images, as FaceRestoreHelper resizes an image before detection (short
// side to 640). OpenCV's 8x8 Lanczos kernel and pixel-centre mapping, computed in float here (OpenCV uses fixed
// point), so values can differ from OpenCV's by one level.
import type { Image8 } from './align.ts';

const S45 = Math.SQRT1_2;
const CS: [number, number][] = [
  [1, 0],
  [-S45, -S45],
  [0, 1],
  [S45, -S45],
  [-1, 0],
  [S45, S45],
  [0, -1],
  [-S45, S45],
];

/** OpenCV interpolateLanczos4: the 8 taps for fractional offset x in [0, 1). */
function lanczos4(x: number): number[] {
  if (x < 1.1920928955078125e-7) return [0, 0, 0, 1, 0, 0, 0, 0];
  const y0 = -(x + 3) * Math.PI * 0.25;
  const s0 = Math.sin(y0);
  const c0 = Math.cos(y0);
  const k: number[] = [];
  let sum = 0;
  for (let i = 0; i < 8; i++) {
    const y = -(x + 3 - i) * Math.PI * 0.25;
    const v = Math.fround((CS[i]![0] * s0 + CS[i]![1] * c0) / (y * y));
    k.push(v);
    sum += v;
  }
  return k.map((v) => v / sum);
}

/** Per output index: its 8 source indices (edges replicated) and weights, flat. */
function axisTaps(src: number, dst: number): { index: Int32Array; weights: Float64Array } {
  const scale = src / dst;
  const index = new Int32Array(dst * 8);
  const weights = new Float64Array(dst * 8);
  for (let d = 0; d < dst; d++) {
    const f = (d + 0.5) * scale - 0.5;
    const s = Math.floor(f);
    weights.set(lanczos4(f - s), d * 8);
    for (let i = 0; i < 8; i++) index[d * 8 + i] = Math.min(src - 1, Math.max(0, s - 3 + i));
  }
  return { index, weights };
}

export function resizeLanczos4(src: Image8, width: number, height: number): Image8 {
  if (width === src.width && height === src.height) return { ...src, data: src.data.slice() };
  const ch = src.channels;
  const xs = axisTaps(src.width, width);
  const ys = axisTaps(src.height, height);
  const data = src.data;
  // Horizontal pass into float rows, then vertical (the taps summed in the same order as before).
  const rowLen = width * ch;
  const rows = new Float64Array(src.height * rowLen);
  for (let y = 0; y < src.height; y++) {
    const srcRow = y * src.width * ch;
    for (let x = 0; x < width; x++) {
      const t = x * 8;
      for (let k = 0; k < ch; k++) {
        let acc = 0;
        for (let i = 0; i < 8; i++) acc += xs.weights[t + i]! * data[srcRow + xs.index[t + i]! * ch + k]!;
        rows[y * rowLen + x * ch + k] = acc;
      }
    }
  }
  const out = new Uint8Array(height * rowLen);
  const acc = new Float64Array(rowLen);
  for (let y = 0; y < height; y++) {
    const t = y * 8;
    acc.fill(0);
    for (let i = 0; i < 8; i++) {
      const w = ys.weights[t + i]!;
      const r = ys.index[t + i]! * rowLen;
      for (let j = 0; j < rowLen; j++) acc[j]! += w * rows[r + j]!;
    }
    const o = y * rowLen;
    for (let j = 0; j < rowLen; j++) out[o + j] = Math.min(255, Math.max(0, Math.round(acc[j]!)));
  }
  return { data: out, width, height, channels: ch };
}
