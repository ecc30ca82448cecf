// SDXL refiner, A1111 semantics: the base denoises while sigma is above the switch point, the refiner after it,
// on the same sigmas and inside the same sampler run (so multistep samplers keep their history).
import type { Denoiser } from '../../samplers/index.ts';
import type { DenoiserWrapper } from '../denoise.ts';

/** The sigma at `switchAt` of the way through `sigmas` (by step index, as A1111 rounds it). */
export function switchSigma(sigmas: readonly number[], switchAt: number): number {
  const index = Math.min(sigmas.length - 1, Math.max(0, Math.round(switchAt * (sigmas.length - 1))));
  return sigmas[index]!;
}

export function refinerSwitch(refiner: Denoiser, atSigma: number): DenoiserWrapper {
  return (base) => (x, sigma) => (sigma > atSigma ? base(x, sigma) : refiner(x, sigma));
}
