// Inpainting on the denoiser: keep the original latent where the mask says keep. `repaint` is the latent-size
// mask [h*w] in 0..1 (1 = regenerate), shared by every image and channel of the batch.
import type { Denoiser } from '../../samplers/index.ts';
import type { DenoiserWrapper } from '../denoise.ts';

/** out = x * repaint + init * (1 - repaint), per image and channel. */
export function blendWithInit(x: Float32Array, init: Float32Array, repaint: Float32Array): Float32Array {
  const plane = repaint.length;
  const out = new Float32Array(x.length);
  for (let i = 0; i < x.length; i++) {
    const m = repaint[i % plane]!;
    out[i] = x[i]! * m + init[i]! * (1 - m);
  }
  return out;
}

/**
 * A1111 (CFGDenoiser, mask_before_denoising=False): the denoised prediction is blended with the original latent
 * at every evaluation, `denoised * nmask + init * mask`, for 4- and 9-channel UNets alike.
 */
export function x0Blend(init: Float32Array, repaint: Float32Array): DenoiserWrapper {
  return (inner: Denoiser) => async (x, sigma) => blendWithInit(await inner(x, sigma), init, repaint);
}

/**
 * diffusers StableDiffusionInpaintPipeline with a 4-channel UNet: after every step the kept area is replaced by
 * the original noised to the next step's level, `add_noise(init, noise, t_next)`. Done here before each evaluation
 * below the first sigma, which is the same thing for the element-wise samplers it is used with (the mask is
 * binary, so every latent element is either fully the sampler's or fully the re-noised original).
 */
export function noisedReinjection(init: Float32Array, noise: Float32Array, repaint: Float32Array, firstSigma: number): DenoiserWrapper {
  return (inner: Denoiser) => (x, sigma) => {
    if (sigma >= firstSigma) return inner(x, sigma);
    const noised = new Float32Array(init.length);
    for (let i = 0; i < init.length; i++) noised[i] = init[i]! + sigma * noise[i]!;
    return inner(blendWithInit(x, noised, repaint), sigma);
  };
}
