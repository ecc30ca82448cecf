// Test and advanced hooks of a generation, for in-process callers only (they never cross the worker protocol).
import type { Tensor } from '../tensor.ts';

/** Fixed noise instead of the seeded generator (reference comparisons), and a look at the final latents. */
export interface NoiseOverrides {
  /** Unit noise [B,C,h,w] for the initial latent (txt2img) or the img2img add-noise. */
  initialNoise?: Float32Array;
  /** img2img: unit noise for sampling the VAE's latent distribution. */
  vaeSampleNoise?: Float32Array;
  /** img2img: the init image as float pixels [1,3,H,W] in [-1,1] instead of req.init's 8-bit data. */
  initImagePixels?: Tensor;
  /** Inpainting with a 9-channel UNet: unit noise for sampling the masked image's latent distribution. */
  maskedImageSampleNoise?: Float32Array;
  /** Receives the final latents (before decode) for comparisons. */
  onFinalLatents?: (latents: Tensor) => void;
  /** Receives each network evaluation's scaled latent input (x / sqrt(sigma² + 1) for eps models), for per-step comparisons. */
  onModelInput?: (xScaled: Float32Array, sigma: number) => void;
  /** Transparent output: each image's [4,H,W] alpha,R,G,B in [0,1] before the 8-bit conversion. */
  onTransparentFloat?: (index: number, rgba: { channels: number; height: number; width: number; data: Float32Array }) => void;
}
