// The model's discrete noise schedule (1000 training timesteps) and the maps between timestep t and noise level
// sigma. Values are rounded to float32 where diffusers computes in float32, so the sigmas we derive match its
// references to ~1e-7.

import { KilnInputError } from '../api.ts';

export type BetaSchedule = 'scaled_linear' | 'linear';

export interface ModelScheduleConfig {
  betaStart?: number;
  betaEnd?: number;
  betaSchedule?: BetaSchedule;
  numTrainTimesteps?: number;
  /** Explicit betas (overrides the three fields above). */
  trainedBetas?: ArrayLike<number>;
  /**
   * alphas_cumprod as LDM/SGM compute it (what A1111 and k-diffusion see): betas and their cumulative product in
   * float64, stored as float32. diffusers (the default) computes them in float32. SD1's sigma_max is 14.614642
   * one way and 14.614647 the other.
   */
  float64Cumprod?: boolean;
}

export interface ModelSchedule {
  readonly numTrainTimesteps: number;
  /** alphas_cumprod[t], t = 0..N-1. */
  readonly alphasCumprod: Float64Array;
  /** sigma[t] = sqrt((1 - alphas_cumprod) / alphas_cumprod), ascending in t. */
  readonly sigmas: Float64Array;
  readonly logSigmas: Float64Array;
  readonly sigmaMin: number;
  readonly sigmaMax: number;
}

const f = Math.fround;

/** torch.linspace(start, end, n, dtype=float32) on the CPU: float arithmetic, filled from both ends. */
function linspaceF32(start: number, end: number, n: number): Float64Array {
  const out = new Float64Array(n);
  const s = f(start);
  const e = f(end);
  const step = f(f(e - s) / (n - 1));
  const half = Math.floor(n / 2);
  for (let i = 0; i < n; i++) out[i] = i < half ? f(s + f(step * i)) : f(e - f(step * (n - 1 - i)));
  return out;
}

/** SD defaults: scaled_linear 0.00085..0.012 over 1000 steps. */
export function createModelSchedule(config: ModelScheduleConfig = {}): ModelSchedule {
  const n = config.numTrainTimesteps ?? 1000;
  let betas: Float64Array;
  if (config.trainedBetas) {
    betas = Float64Array.from(config.trainedBetas, (b) => f(b));
  } else {
    const start = config.betaStart ?? 0.00085;
    const end = config.betaEnd ?? 0.012;
    const kind = config.betaSchedule ?? 'scaled_linear';
    if (kind !== 'scaled_linear' && kind !== 'linear')
      throw new KilnInputError(`unknown beta_schedule "${kind}"; valid: scaled_linear, linear`, 'beta_schedule');
    if (config.float64Cumprod) return scheduleFromAlphasCumprod(ldmAlphasCumprod(start, end, n, kind));
    if (kind === 'scaled_linear') betas = linspaceF32(Math.sqrt(start), Math.sqrt(end), n).map((b) => f(b * b));
    else if (kind === 'linear') betas = linspaceF32(start, end, n);
    else throw new KilnInputError(`unknown beta_schedule "${kind}"; valid: scaled_linear, linear`, 'beta_schedule');
  }
  return scheduleFromAlphasCumprod(cumprodAlphas(betas));
}

/** LDM make_beta_schedule + register_schedule: float64 linspace, betas, cumprod; the buffer is float32. */
function ldmAlphasCumprod(start: number, end: number, n: number, kind: BetaSchedule): Float64Array {
  const a = kind === 'scaled_linear' ? Math.sqrt(start) : start;
  const b = kind === 'scaled_linear' ? Math.sqrt(end) : end;
  const out = new Float64Array(n);
  let acc = 1;
  for (let i = 0; i < n; i++) {
    const v = n === 1 ? a : a + ((b - a) * i) / (n - 1);
    acc *= 1 - (kind === 'scaled_linear' ? v * v : v);
    out[i] = f(acc);
  }
  return out;
}

function cumprodAlphas(betas: Float64Array): Float64Array {
  // torch.cumprod on float32 accumulates in double and rounds each output.
  const out = new Float64Array(betas.length);
  let acc = 1;
  for (let i = 0; i < betas.length; i++) {
    acc *= f(1 - betas[i]!);
    out[i] = f(acc);
  }
  return out;
}

export function scheduleFromAlphasCumprod(alphasCumprod: ArrayLike<number>): ModelSchedule {
  const ac = Float64Array.from(alphasCumprod);
  const sigmas = ac.map((a) => f(Math.sqrt(f(f(1 - a) / a))));
  const logSigmas = sigmas.map((s) => f(Math.log(s)));
  return {
    numTrainTimesteps: ac.length,
    alphasCumprod: ac,
    sigmas,
    logSigmas,
    sigmaMin: sigmas[0]!,
    sigmaMax: sigmas[sigmas.length - 1]!,
  };
}

/** k-diffusion sigma_to_t: linear interpolation of t over log sigma (clamped to the trained range). */
export function sigmaToT(model: ModelSchedule, sigma: number): number {
  const ls = model.logSigmas;
  const logSigma = Math.log(sigma);
  if (!(logSigma > ls[0]!)) return 0;
  if (logSigma >= ls[ls.length - 1]!) return ls.length - 1;
  let lo = 0;
  let hi = ls.length - 1;
  while (hi - lo > 1) {
    const mid = (lo + hi) >> 1;
    if (ls[mid]! <= logSigma) lo = mid;
    else hi = mid;
  }
  const w = (ls[lo]! - logSigma) / (ls[lo]! - ls[hi]!);
  return (1 - w) * lo + w * hi;
}

/** k-diffusion t_to_sigma: log-sigma interpolated at fractional t. */
export function tToSigma(model: ModelSchedule, t: number): number {
  const ls = model.logSigmas;
  const tc = Math.min(Math.max(t, 0), ls.length - 1);
  const lo = Math.floor(tc);
  const hi = Math.ceil(tc);
  const w = tc - lo;
  return Math.exp((1 - w) * ls[lo]! + w * ls[hi]!);
}

/** diffusers' np.interp of sigma (not log sigma) at fractional t, as its Euler-family schedulers do. */
export function tToSigmaLinear(model: ModelSchedule, t: number): number {
  const s = model.sigmas;
  const tc = Math.min(Math.max(t, 0), s.length - 1);
  const lo = Math.floor(tc);
  const hi = Math.ceil(tc);
  const w = tc - lo;
  return (1 - w) * s[lo]! + w * s[hi]!;
}

/** sigma -> VP alpha_cumprod at that noise level. */
export function sigmaToAlphaCumprod(sigma: number): number {
  return 1 / (1 + sigma * sigma);
}
