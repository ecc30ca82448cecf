// The noise a stochastic sampler draws during a denoise pass: fresh draws from the images' generators (diffusers),
// or, for the SDE samplers A1111 flags `brownian_noise`, k-diffusion's Brownian tree over the pass's full schedule,
// one tree per image seeded with the image's own seed (A1111 create_noise_sampler).
import type { GenerateRequest } from '../api.ts';
import type { BatchNoise } from '../rng.ts';
import { brownianTreeNoise } from '../samplers/brownian.ts';
import { getSampler, type NoiseSource, type SamplingPlan } from '../samplers/index.ts';

/** Whether a request's sampler draws Brownian-tree noise (the 'a1111' flavour's default for the SDE samplers). */
export function usesBrownianNoise(req: GenerateRequest, plan: Pick<SamplingPlan, 'sampler'>): boolean {
  const kind = req.sdeNoise ?? (req.flavour === 'a1111' ? 'brownian' : 'gaussian');
  return kind === 'brownian' && getSampler(plan.sampler).brownianNoise;
}

/**
 * `fullSigmas`: the whole schedule of the pass, even when img2img or hires fix walks only its tail (A1111 builds
 * the tree from it). `seeds`: one per image, as A1111's p.all_seeds (seed + i, or seed for every image with a
 * variation seed).
 */
export function samplerNoise(
  req: GenerateRequest,
  plan: Pick<SamplingPlan, 'sampler'>,
  fullSigmas: readonly number[],
  seeds: readonly number[],
  shape: readonly [number, number, number],
  generators: BatchNoise,
): NoiseSource {
  if (!usesBrownianNoise(req, plan)) return () => generators.next();
  const tree = brownianTreeNoise({ seeds, size: shape[0] * shape[1] * shape[2], sigmas: fullSigmas, source: req.rng ?? 'cpu' });
  return (sigma, sigmaNext) => {
    if (sigma === undefined || sigmaNext === undefined) throw new Error(`sampler ${plan.sampler} drew Brownian noise without its step`);
    return tree.noise(sigma, sigmaNext);
  };
}
