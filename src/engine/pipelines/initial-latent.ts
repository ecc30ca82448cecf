// Stage 2, the initial latent: seeded noise at the first sigma (txt2img), or the VAE-encoded init image noised
// to the sigma where its shortened schedule starts (img2img).
import type { GenerateRequest, Tiling } from '../api.ts';
import { imageToTensor } from '../image.ts';
import { createNoise, type BatchNoise } from '../rng.ts';
import { addNoise, img2imgSigmas, type SamplingPlan } from '../samplers/index.ts';
import type { Tensor } from '../tensor.ts';
import type { ImageBatch } from './batch.ts';
import type { ModelSessions } from './model-sessions.ts';
import { fitInitImage, latentResizedInit } from './init-fit.ts';
import type { NoiseOverrides } from './overrides.ts';
import { vaeEncode, vaeTilesFor } from './vae-tiles.ts';

export interface InitialLatent {
  /** [B, C, h, w] at sigmas[0]. */
  x: Float32Array;
  /** The sigmas the first pass walks from x. */
  sigmas: number[];
  /** img2img: the clean (un-noised) init latent [B, C, h, w], after `InitLatentOptions.adjust`. */
  init?: Float32Array;
}

/** Inpainting's changes to the img2img start. */
export interface InitLatentOptions {
  /** Changes the clean init latent before it is noised (A1111 "latent noise" / "latent nothing"). */
  adjust?: (init: Float32Array) => Float32Array;
  /** diffusers' inpaint pipeline: at strength 1 start from pure noise, as txt2img does, not from the noised image. */
  pureNoiseAtFullStrength?: boolean;
}

/** The batch's noise generator(s): initial noise of every image, then fresh draws for the sampler. */
export function batchNoise(req: GenerateRequest, batch: ImageBatch, shape: [number, number, number], latentFactor: number): BatchNoise {
  const resize = req.seedResizeFrom;
  return createNoise({
    seeds: batch.seeds,
    subseeds: batch.subseeds,
    subseedStrength: batch.subseedStrength,
    resizeFrom: resize?.width && resize.height ? resize : undefined,
    latentFactor,
    shape,
    source: req.rng ?? 'cpu',
  });
}

export async function initialLatent(
  ms: ModelSessions,
  req: GenerateRequest,
  plan: SamplingPlan,
  noise: BatchNoise,
  count: number,
  overrides: NoiseOverrides,
  options: InitLatentOptions = {},
): Promise<InitialLatent> {
  const initialNoise = overrides.initialNoise ?? noise.initial;
  if (req.init) {
    const sigmas = img2imgSigmas(plan.sigmas, req.init.strength, req.flavour, plan.sampler);
    const mode = req.init.resizeMode ?? 0;
    let encoded: Float32Array;
    if (mode === 3 && !overrides.initImagePixels) {
      // The draw a sampled encode would take is still taken, so the sampler's noise is the same in every mode.
      if (!overrides.vaeSampleNoise) noise.next();
      encoded = await latentResizedInit(ms, req.init.image, req.width, req.height, count, req.tiling);
    } else {
      const pixels = overrides.initImagePixels ?? imageToTensor(await fitInitImage(req.init.image, req.width, req.height, mode === 3 ? 0 : mode));
      encoded = await encodeInitImage(ms, pixels, count, overrides.vaeSampleNoise ?? noise.next(), req.tiling);
    }
    const initLatent = options.adjust ? options.adjust(encoded) : encoded;
    if (options.pureNoiseAtFullStrength && req.init.strength >= 1) return { x: scaledNoise(initialNoise, plan), sigmas, init: initLatent };
    // A1111 scales the img2img noise by initial_noise_multiplier before sampling from the init latent.
    const multiplier = req.init.noiseMultiplier ?? 1;
    const added = multiplier === 1 ? initialNoise : initialNoise.map((v) => v * multiplier);
    return { x: sigmas.length > 1 ? addNoise(initLatent, added, sigmas[0]!) : initLatent, sigmas, init: initLatent };
  }
  return { x: scaledNoise(initialNoise, plan), sigmas: plan.sigmas };
}

function scaledNoise(initialNoise: Float32Array, plan: SamplingPlan): Float32Array {
  const x = new Float32Array(initialNoise.length);
  const scale = initialNoiseScale(plan);
  for (let i = 0; i < x.length; i++) x[i] = initialNoise[i]! * scale;
  return x;
}

/**
 * diffusers starts every scheduler on "leading" timesteps (our DDIM schedule) from sqrt(sigma0^2 + 1) times
 * unit noise rather than sigma0; keep that so a seed gives diffusers' image with that schedule too.
 */
function initialNoiseScale(plan: SamplingPlan): number {
  const s0 = plan.sigmas[0]!;
  return plan.schedule === 'ddim' ? Math.sqrt(s0 * s0 + 1) : plan.initialNoiseScale;
}

/** img2img: VAE-encode the init image and sample its latent distribution, scaled into latent space. */
export async function encodeInitImage(ms: ModelSessions, pixels: Tensor, count: number, sampleNoise: Float32Array, tiling?: Tiling): Promise<Float32Array> {
  const encoder = await ms.vaeEncoder(tiling);
  const { mean, logvar } = await vaeEncode(encoder, pixels, ms.latentFactor, tiling, vaeTilesFor(ms));
  const per = mean.data.length;
  const out = new Float32Array(count * per);
  const scale = ms.scalingFactor;
  for (let i = 0; i < count; i++)
    for (let k = 0; k < per; k++) {
      const std = Math.exp(0.5 * logvar.data[k]!);
      out[i * per + k] = scale * (mean.data[k]! + std * sampleNoise[i * per + k]!);
    }
  return out;
}
