// A1111's latent upscale modes (modules/shared.py latent_upscale_modes) as torch 1.13's F.interpolate computes
// them with align_corners=False, on [B, C, h, w] float32 latents. Separable and small (latents are 1/8 of the
// image per side), so plain TypeScript: no graph, no session.
import type { Tensor } from '../tensor.ts';

export type LatentUpscaleMode = 'bilinear' | 'bicubic' | 'nearest' | 'nearest-exact';

/** A1111's names for the latent upscalers, and the interpolate call each makes. */
export const LATENT_UPSCALE_MODES: Record<string, { mode: LatentUpscaleMode; antialias: boolean }> = {
  Latent: { mode: 'bilinear', antialias: false },
  'Latent (antialiased)': { mode: 'bilinear', antialias: true },
  'Latent (bicubic)': { mode: 'bicubic', antialias: false },
  'Latent (bicubic antialiased)': { mode: 'bicubic', antialias: true },
  'Latent (nearest)': { mode: 'nearest', antialias: false },
  'Latent (nearest-exact)': { mode: 'nearest-exact', antialias: false },
};

/** Taps of one output index along an axis: input indices and their weights. */
type Taps = { idx: number[]; w: number[] }[];

function cubic(x: number, a: number): number {
  const ax = Math.abs(x);
  if (ax <= 1) return ((a + 2) * ax - (a + 3)) * ax * ax + 1;
  if (ax < 2) return ((a * ax - 5 * a) * ax + 8 * a) * ax - 4 * a;
  return 0;
}

/** torch's per-axis taps for each mode (UpSample.h area_pixel_compute_source_index, UpSampleKernel.cpp). */
function axisTaps(inSize: number, outSize: number, mode: LatentUpscaleMode, antialias: boolean): Taps {
  const scale = Math.fround(inSize / outSize);
  const taps: Taps = [];
  for (let o = 0; o < outSize; o++) {
    if (antialias && (mode === 'bilinear' || mode === 'bicubic')) {
      // _compute_indices_weights_aa: PIL-style support, a = -0.5 for bicubic, weights normalised.
      const interp = mode === 'bilinear' ? 2 : 4;
      const support = scale >= 1 ? interp * 0.5 * scale : interp * 0.5;
      const center = scale * (o + 0.5);
      const invscale = scale >= 1 ? 1 / scale : 1;
      const xmin = Math.max(Math.trunc(center - support + 0.5), 0);
      const xsize = Math.min(Math.trunc(center + support + 0.5), inSize) - xmin;
      const idx: number[] = [];
      const w: number[] = [];
      let total = 0;
      for (let j = 0; j < xsize; j++) {
        const x = (j + xmin - center + 0.5) * invscale;
        const v = mode === 'bilinear' ? Math.max(0, 1 - Math.abs(x)) : cubic(x, -0.5);
        idx.push(j + xmin);
        w.push(v);
        total += v;
      }
      taps.push({ idx, w: w.map((v) => (total !== 0 ? v / total : v)) });
    } else if (mode === 'bilinear') {
      const src = Math.max(scale * (o + 0.5) - 0.5, 0);
      const i0 = Math.floor(src);
      const i1 = i0 + (i0 < inSize - 1 ? 1 : 0);
      const l1 = src - i0;
      taps.push({ idx: [i0, i1], w: [1 - l1, l1] });
    } else if (mode === 'bicubic') {
      const real = scale * (o + 0.5) - 0.5;
      const i = Math.floor(real);
      const t = real - i;
      const clamp = (k: number) => Math.min(Math.max(k, 0), inSize - 1);
      taps.push({
        idx: [clamp(i - 1), clamp(i), clamp(i + 1), clamp(i + 2)],
        w: [cubic(t + 1, -0.75), cubic(t, -0.75), cubic(1 - t, -0.75), cubic(2 - t, -0.75)],
      });
    } else {
      const offset = mode === 'nearest-exact' ? 0.5 : 0;
      taps.push({ idx: [Math.min(Math.floor((o + offset) * scale), inSize - 1)], w: [1] });
    }
  }
  return taps;
}

/** F.interpolate(latent, size=(outH, outW), mode, antialias) for a [B, C, h, w] tensor. */
export function upscaleLatent(latent: Tensor, outH: number, outW: number, mode: LatentUpscaleMode, antialias = false): Tensor {
  const [b, c, h, w] = latent.shape as [number, number, number, number];
  const rows = axisTaps(h, outH, mode, antialias);
  const cols = axisTaps(w, outW, mode, antialias);
  const out = new Float32Array(b * c * outH * outW);
  for (let p = 0; p < b * c; p++) {
    const src = p * h * w;
    const dst = p * outH * outW;
    for (let y = 0; y < outH; y++) {
      const r = rows[y]!;
      for (let x = 0; x < outW; x++) {
        const col = cols[x]!;
        let acc = 0;
        for (let i = 0; i < r.idx.length; i++) {
          let rowAcc = 0;
          for (let j = 0; j < col.idx.length; j++) rowAcc += col.w[j]! * latent.data[src + r.idx[i]! * w + col.idx[j]!]!;
          acc += r.w[i]! * rowAcc;
        }
        out[dst + y * outW + x] = acc;
      }
    }
  }
  return { shape: [b, c, outH, outW], data: out };
}
