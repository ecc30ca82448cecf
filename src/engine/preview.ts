// Live previews of a running generation, as AUTOMATIC1111's "Approx cheap" method makes them: a fixed linear
// map from the latent channels to RGB (the table belongs to the family's latent space), applied to the
// sampler's current denoised (x0) estimate. No network runs, so a preview costs one pass over the latent and
// gives an image at latent resolution.
import type { RawImage } from './api.ts';
import type { LatentSpace } from './families/types.ts';

/**
 * RGB preview of the first image of a latent batch laid out [B, C, h, w] (C = `channels`), at h x w.
 * Returns undefined when the table does not have one row per latent channel. The pixel buffer is freshly
 * allocated, so it can be transferred to another thread.
 */
export function approxCheapPreview(latents: Float32Array, channels: number, height: number, width: number, space: LatentSpace): RawImage | undefined {
  const table = space.previewCoefficients;
  if (channels !== table.length) return undefined;
  const plane = height * width;
  if (latents.length < channels * plane) throw new Error(`preview: latent has ${latents.length} values, expected at least ${channels * plane}`);
  const data = new Uint8Array(plane * 3);
  for (let p = 0; p < plane; p++) {
    let r = 0;
    let g = 0;
    let b = 0;
    for (let c = 0; c < channels; c++) {
      const v = latents[c * plane + p]!;
      const k = table[c]!;
      r += v * k[0];
      g += v * k[1];
      b += v * k[2];
    }
    data[p * 3] = toByte(r);
    data[p * 3 + 1] = toByte(g);
    data[p * 3 + 2] = toByte(b);
  }
  return { data, width, height, channels: 3 };
}

/** [-1, 1] -> 0..255, clamped. */
function toByte(v: number): number {
  const x = (v * 0.5 + 0.5) * 255;
  return x <= 0 ? 0 : x >= 255 ? 255 : Math.round(x);
}
