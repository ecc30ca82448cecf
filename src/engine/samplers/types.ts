// Shared sampler types. A sampler is `(denoise, x, sigmas, ctx) => x` over sigma space, like k-diffusion: x starts
// at noise level sigmas[0] and ends at sigmas[sigmas.length - 1] (0, or sigma_min for the timestep samplers).

import type { Denoiser } from './denoiser.ts';

export interface SamplerOptions {
  /** Ancestral/SDE noise amount (A1111 default 1; DDIM's default is 0). */
  eta?: number;
  /** Euler/Heun/DPM2 churn (A1111 defaults: 0, 0, inf, 1). */
  sChurn?: number;
  sTmin?: number;
  sTmax?: number;
  sNoise?: number;
  /** Solver order for UniPC (default 2, as diffusers) and DPM adaptive (default 3). */
  order?: number;
  /** UniPC variant: bh2 (diffusers default) or bh1 (A1111 default). */
  uniPcVariant?: 'bh1' | 'bh2';
}

export interface ResolvedOptions {
  eta: number;
  sChurn: number;
  sTmin: number;
  sTmax: number;
  sNoise: number;
  order: number | undefined;
  uniPcVariant: 'bh1' | 'bh2';
}

export interface SamplerContext {
  /**
   * Next unit-normal draw shaped like x. The SDE samplers pass the step they draw for, (sigma, sigmaNext), as
   * k-diffusion's noise_sampler(sigma, sigma_next) takes it: a Brownian-tree source (brownian.ts) needs it; the
   * job's generators (one fresh draw per call) ignore it.
   */
  noise: NoiseSource;
  options: ResolvedOptions;
}

/** Unit noise for a sampler step; see SamplerContext.noise. */
export type NoiseSource = (sigma?: number, sigmaNext?: number) => Float32Array;

export type SamplerFn = (denoise: Denoiser, x: Float32Array, sigmas: readonly number[], ctx: SamplerContext) => Promise<Float32Array>;

export function resolveOptions(o: SamplerOptions = {}, defaultEta = 1): ResolvedOptions {
  return {
    eta: o.eta ?? defaultEta,
    sChurn: o.sChurn ?? 0,
    sTmin: o.sTmin ?? 0,
    // A1111 treats s_tmax 0 (its UI default) as infinity.
    sTmax: o.sTmax === undefined || o.sTmax === 0 ? Infinity : o.sTmax,
    sNoise: o.sNoise ?? 1,
    order: o.order,
    uniPcVariant: o.uniPcVariant ?? 'bh2',
  };
}
