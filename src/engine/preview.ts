// Live previews of a running generation, as AUTOMATIC1111's "Approx cheap" method makes them: a fixed linear
// map from the 4 latent channels to RGB, applied to the sampler's current denoised (x0) estimate. No network
// runs, so a preview costs one pass over the latent and gives an image at latent resolution.
import type { RawImage } from './api.ts';

/** Which coefficient table fits a model's VAE latent space. */
export type PreviewLatentSpace = 'sd' | 'sdxl';

/**
 * [latent channel][R, G, B]: the output is roughly in [-1, 1]. The SD table is the community fit A1111 uses
 * for SD1.x and SD2.x (same VAE); the SDXL table is A1111's fit for the SDXL VAE (also used by the refiner).
 */
const COEFFICIENTS: Record<PreviewLatentSpace, readonly (readonly [number, number, number])[]> = {
  sd: [
    [0.298, 0.207, 0.208],
    [0.187, 0.286, 0.173],
    [-0.158, 0.189, 0.264],
    [-0.184, -0.271, -0.473],
  ],
  sdxl: [
    [0.3448, 0.4168, 0.4395],
    [-0.1953, -0.029, 0.025],
    [0.1074, 0.0886, -0.0163],
    [-0.373, -0.2499, -0.2088],
  ],
};

/** The latent space of a model family ("sd1", "sd2", "sdxl", "sdxl-refiner", ...). */
export function previewLatentSpace(family: string): PreviewLatentSpace {
  return family.startsWith('sdxl') ? 'sdxl' : 'sd';
}

/**
 * RGB preview of the first image of a latent batch laid out [B, C, h, w] (C = `channels`), at h x w.
 * Returns undefined for latents that are not 4-channel (no table fits them). The pixel buffer is freshly
 * allocated, so it can be transferred to another thread.
 */
export function approxCheapPreview(latents: Float32Array, channels: number, height: number, width: number, space: PreviewLatentSpace): RawImage | undefined {
  const table = COEFFICIENTS[space];
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
