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

/** Per output index: the first source tap and the 8 weights (edges replicated). */
function axisTaps(src: number, dst: number): { start: number[]; weights: number[][] } {
  const scale = src / dst;
  const start: number[] = [];
  const weights: number[][] = [];
  for (let d = 0; d < dst; d++) {
    const f = (d + 0.5) * scale - 0.5;
    const s = Math.floor(f);
    start.push(s - 3);
    weights.push(lanczos4(f - s));
  }
  return { start, weights };
}

export function resizeLanczos4(src: Image8, width: number, height: number): Image8 {
  if (width === src.width && height === src.height) return { ...src, data: src.data.slice() };
  const ch = src.channels;
  const xs = axisTaps(src.width, width);
  const ys = axisTaps(src.height, height);
  const clampX = (x: number) => Math.min(src.width - 1, Math.max(0, x));
  const clampY = (y: number) => Math.min(src.height - 1, Math.max(0, y));
  // Horizontal pass into float rows, then vertical.
  const rows = new Float64Array(src.height * width * ch);
  for (let y = 0; y < src.height; y++) {
    for (let x = 0; x < width; x++) {
      const w = xs.weights[x]!;
      const s = xs.start[x]!;
      for (let k = 0; k < ch; k++) {
        let acc = 0;
        for (let i = 0; i < 8; i++) acc += w[i]! * src.data[(y * src.width + clampX(s + i)) * ch + k]!;
        rows[(y * width + x) * ch + k] = acc;
      }
    }
  }
  const out = new Uint8Array(width * height * ch);
  for (let y = 0; y < height; y++) {
    const w = ys.weights[y]!;
    const s = ys.start[y]!;
    for (let x = 0; x < width; x++) {
      for (let k = 0; k < ch; k++) {
        let acc = 0;
        for (let i = 0; i < 8; i++) acc += w[i]! * rows[(clampY(s + i) * width + x) * ch + k]!;
        out[(y * width + x) * ch + k] = Math.min(255, Math.max(0, Math.round(acc)));
      }
    }
  }
  return { data: out, width, height, channels: ch };
}
