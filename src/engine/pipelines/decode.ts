// Stage 4, decoding: final latents to 8-bit images through the VAE decoder, one image at a time (and, above a
// size threshold, in blended tiles: vae-tiles.ts) so memory stays bounded at large sizes.
import type { RawImage, Tiling } from '../api.ts';
import { decodedToImages } from '../image.ts';
import type { ModelSessions } from './model-sessions.ts';
import { vaeDecode, vaeTilesFor } from './vae-tiles.ts';

/** Samplers that stop at sigma_min (DDIM/PLMS as diffusers) leave x in sigma space; the VAE wants VP space. */
export function toDecoderSpace(latents: Float32Array, lastSigma: number): Float32Array {
  if (!(lastSigma > 0)) return latents;
  const s = 1 / Math.sqrt(1 + lastSigma * lastSigma);
  return latents.map((v) => v * s);
}

export async function decodeLatents(
  ms: ModelSessions,
  latents: Float32Array,
  count: number,
  shape: [number, number, number],
  tiling?: Tiling,
  toByte: 'round' | 'truncate' = 'round',
): Promise<RawImage[]> {
  const decoder = await ms.vaeDecoder(tiling);
  const per = shape[0] * shape[1] * shape[2];
  const images: RawImage[] = [];
  for (let i = 0; i < count; i++) {
    const latent = { shape: [1, ...shape], data: latents.slice(i * per, (i + 1) * per) };
    images.push(decodedToImages(await vaeDecode(decoder, latent, ms.latentFactor, tiling, vaeTilesFor(ms)), toByte)[0]!);
  }
  return images;
}
