// Rectified-flow sampling (Flux.1, SD3): x_sigma = (1 - sigma) * x0 + sigma * noise for sigma from 1 to 0, and the
// network predicts the velocity v = noise - x0. The schedule is a uniform grid in sigma bent by a time shift
// (static for SD3 and schnell, resolution-dependent for Flux dev), and the sampler is Euler along v, as diffusers'
// FlowMatchEulerDiscreteScheduler. makeFlowDenoiser exposes the same model as a k-diffusion denoiser
// (x0 = x - sigma * v), so the k-diffusion samplers run on it too (as ComfyUI does).
import type { Denoiser } from './denoiser.ts';

/** diffusers FlowMatchEulerDiscreteScheduler config fields (scheduler_config.json names). */
export interface FlowScheduleConfig {
  num_train_timesteps: number;
  /** Static shift: sigma' = shift*sigma / (1 + (shift-1)*sigma) (SD3 3.0, schnell 1.0). */
  shift: number;
  /** Flux dev: sigma' = e^mu / (e^mu + 1/sigma - 1), mu from the image's token count. */
  use_dynamic_shifting: boolean;
  base_shift?: number;
  max_shift?: number;
  base_image_seq_len?: number;
  max_image_seq_len?: number;
}

/** The Flux.1 configs (black-forest-labs' scheduler_config.json; schnell shifts nothing). */
export const FLUX_DEV_SCHEDULE: FlowScheduleConfig = {
  num_train_timesteps: 1000,
  shift: 3.0,
  use_dynamic_shifting: true,
  base_shift: 0.5,
  max_shift: 1.15,
  base_image_seq_len: 256,
  max_image_seq_len: 4096,
};
export const FLUX_SCHNELL_SCHEDULE: FlowScheduleConfig = { num_train_timesteps: 1000, shift: 1.0, use_dynamic_shifting: false };
export const SD3_SCHEDULE: FlowScheduleConfig = { num_train_timesteps: 1000, shift: 3.0, use_dynamic_shifting: false };

/**
 * Where the unshifted sigma grid comes from. 'flux': FluxPipeline's linspace(1, 1/N, N). 'sd3': the scheduler's own
 * set_timesteps(N), linspace(1000 * sigma_max, 1000 * sigma_min, N) / 1000 over the training schedule's range.
 */
export type FlowSpacing = 'flux' | 'sd3';

export interface FlowSchedule {
  /** N + 1 float32 values from about 1 down to 0. */
  sigmas: number[];
  /** The N timesteps the pipelines report (sigma * 1000, float32); the networks take sigma itself. */
  timesteps: number[];
}

/** FluxPipeline calculate_shift: mu on the line through (base_image_seq_len, base_shift), (max_image_seq_len, max_shift). */
export function flowShiftMu(imageSeqLen: number, c: FlowScheduleConfig): number {
  const x1 = c.base_image_seq_len ?? 256;
  const x2 = c.max_image_seq_len ?? 4096;
  const y1 = c.base_shift ?? 0.5;
  const y2 = c.max_shift ?? 1.15;
  const m = (y2 - y1) / (x2 - x1);
  return imageSeqLen * m + (y1 - m * x1);
}

/** The shift a config applies to one sigma (float64, as diffusers shifts its numpy grid). */
function shifted(sigma: number, c: FlowScheduleConfig, mu: number | undefined): number {
  if (c.use_dynamic_shifting) {
    if (mu === undefined) throw new RangeError('a dynamically shifted flow schedule needs the image token count');
    return Math.exp(mu) / (Math.exp(mu) + (1 / sigma - 1));
  }
  return (c.shift * sigma) / (1 + (c.shift - 1) * sigma);
}

/** numpy.linspace in float64: start + i*step, the last value exactly `stop`. */
function npLinspace(start: number, stop: number, n: number): number[] {
  if (n === 1) return [start];
  const step = (stop - start) / (n - 1);
  return Array.from({ length: n }, (_, i) => (i === n - 1 ? stop : i * step + start));
}

/**
 * The flow-matching schedule for `steps` steps. `imageSeqLen` (packed latent tokens, (H/16)(W/16) for Flux) sets mu
 * for dynamically shifted configs.
 */
export function flowSchedule(steps: number, c: FlowScheduleConfig, opts: { spacing: FlowSpacing; imageSeqLen?: number }): FlowSchedule {
  if (!Number.isInteger(steps) || steps < 1) throw new RangeError(`steps must be a positive integer, got ${steps}`);
  const f = Math.fround;
  const n = c.num_train_timesteps;
  let base: number[];
  if (opts.spacing === 'flux') base = npLinspace(1, 1 / steps, steps);
  else {
    // The scheduler's training range: train step t/N shifted in float32 (its __init__ works on torch tensors).
    const trainSigma = (t: number) => {
      const s = f(t / n);
      return c.use_dynamic_shifting ? s : f(f(c.shift * s) / f(1 + f((c.shift - 1) * s)));
    };
    base = npLinspace(trainSigma(n) * n, trainSigma(1) * n, steps).map((t) => t / n);
  }
  const mu = c.use_dynamic_shifting ? flowShiftMu(opts.imageSeqLen ?? Number.NaN, c) : undefined;
  if (mu !== undefined && !Number.isFinite(mu)) throw new RangeError('a dynamically shifted flow schedule needs the image token count');
  const sigmas = base.map((s) => f(shifted(s, c, mu)));
  return { sigmas: [...sigmas, 0], timesteps: sigmas.map((s) => f(s * n)) };
}

/** The network's velocity prediction v(x, sigma) ≈ noise - x0. */
export type VelocityFn = (x: Float32Array, sigma: number, step: number) => Promise<Float32Array>;

/**
 * Euler along the velocity (FlowMatchEulerDiscreteScheduler.step): x <- x + (sigma_next - sigma) * v, in float32 as
 * diffusers computes it. `onStep` sees x after each step.
 */
export async function sampleFlowEuler(
  velocity: VelocityFn,
  x: Float32Array,
  sigmas: readonly number[],
  onStep?: (step: number, x: Float32Array) => void,
): Promise<Float32Array> {
  let cur = Float32Array.from(x);
  for (let i = 0; i < sigmas.length - 1; i++) {
    const v = await velocity(cur, sigmas[i]!, i);
    if (v.length !== cur.length) throw new Error(`velocity has ${v.length} values for ${cur.length} inputs`);
    const dt = Math.fround(sigmas[i + 1]! - sigmas[i]!);
    const next = new Float32Array(cur.length);
    for (let j = 0; j < cur.length; j++) next[j] = cur[j]! + Math.fround(dt * v[j]!);
    cur = next;
    onStep?.(i, cur);
  }
  return cur;
}

/** The velocity model as a k-diffusion denoiser: x0 = x - sigma * v (ComfyUI's CONST model sampling). */
export function makeFlowDenoiser(velocity: (x: Float32Array, sigma: number) => Promise<Float32Array>): Denoiser {
  return async (x, sigma) => {
    const v = await velocity(x, sigma);
    const x0 = new Float32Array(x.length);
    for (let i = 0; i < x.length; i++) x0[i] = x[i]! - sigma * v[i]!;
    return x0;
  };
}

/** Noising on the straight path (FlowMatchEulerDiscreteScheduler.scale_noise): sigma * noise + (1 - sigma) * x0. */
export function flowAddNoise(x0: Float32Array, noise: Float32Array, sigma: number): Float32Array {
  const out = new Float32Array(x0.length);
  for (let i = 0; i < x0.length; i++) out[i] = sigma * noise[i]! + (1 - sigma) * x0[i]!;
  return out;
}

/** Training timesteps of a flow model's discrete sigma table (ComfyUI's ModelSamplingDiscreteFlow: 1000 entries). */
const FLOW_TABLE_SIZE = 1000;

/** numpy.rint: round half to even. */
function rint(v: number): number {
  const r = Math.round(v);
  return Math.abs(v % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/**
 * ComfyUI's "simple" and "beta" schedulers on a flow model: both pick entries of its sigma table, sigma_k =
 * shift((k + 1) / 1000) for k = 0..999 (the shift of `c`, with the image's mu when it is dynamic). simple: every
 * (1000 / N)-th entry from the top. beta: Beta(0.6, 0.6) quantiles of 1 - i/N rounded to the table, repeats dropped
 * (so it may give fewer steps). Both end with 0.
 */
export function flowTableSigmas(
  kind: 'simple' | 'beta',
  steps: number,
  c: FlowScheduleConfig,
  opts: { imageSeqLen?: number; betaPpf: (p: number, a: number, b: number) => number },
): number[] {
  if (!Number.isInteger(steps) || steps < 1) throw new RangeError(`steps must be a positive integer, got ${steps}`);
  const mu = c.use_dynamic_shifting ? flowShiftMu(opts.imageSeqLen ?? Number.NaN, c) : undefined;
  if (mu !== undefined && !Number.isFinite(mu)) throw new RangeError('a dynamically shifted flow schedule needs the image token count');
  const table = (k: number) => Math.fround(shifted((k + 1) / FLOW_TABLE_SIZE, c, mu));
  const out: number[] = [];
  if (kind === 'simple') {
    const ss = FLOW_TABLE_SIZE / steps;
    for (let x = 0; x < steps; x++) out.push(table(FLOW_TABLE_SIZE - 1 - Math.floor(x * ss)));
  } else {
    let last = -1;
    for (let i = 0; i < steps; i++) {
      const t = rint(opts.betaPpf(1 - i / steps, 0.6, 0.6) * (FLOW_TABLE_SIZE - 1));
      if (t !== last) out.push(table(t));
      last = t;
    }
  }
  return [...out, 0];
}
