// Running a sampler for a job: plan (sampler + schedule -> sigmas, initial noise scale, timestep mode), then the
// loop with per-evaluation progress and cancellation; plus the img2img helpers.

import type { Denoiser, TimestepMode } from './denoiser.ts';
import type { ModelSchedule } from './model-schedule.ts';
import type { NoiseSource, SamplerOptions } from './types.ts';
import { resolveOptions } from './types.ts';
import type { ScheduleId, ScheduleOptions } from './schedules.ts';
import { buildSigmas, SCHEDULES } from './schedules.ts';
import type { SamplerId } from './names.ts';
import { getSampler, parseSamplerName, resolveSchedule } from './names.ts';

/**
 * Where two reference tools disagree on small numerical details, which one to follow:
 * - `diffusers` (default): what the fixtures prove. Samplers whose diffusers scheduler starts from unit VP noise
 *   start at sqrt(1 + sigma0^2); DPM-Solver/UniPC see integer timesteps; uniform timesteps interpolate sigma.
 * - `a1111`: k-diffusion conventions (x = noise * sigma0, fractional timesteps over log sigma, Karras/exponential
 *   sigmas in torch's float32) and A1111's discard of the next-to-last sigma for DPM2 / DPM2 a / DPM++ 3M SDE. The
 *   model schedule should then be LDM's (createModelSchedule's float64Cumprod), and the SDE samplers' noise A1111's
 *   Brownian tree (brownian.ts).
 */
export type Flavour = 'diffusers' | 'a1111';

export interface PlanRequest {
  /** Sampler name as a user gives it (may carry a legacy schedule suffix). */
  sampler: string;
  /** Schedule name/label/alias; absent or "Automatic" = the sampler's preferred one. */
  schedule?: string | null;
  steps: number;
  model: ModelSchedule;
  flavour?: Flavour;
  /** Which tuned schedule tables fit the model (ModelFamily.scheduleTables). */
  scheduleTables?: 'sd1' | 'sdxl';
}

export interface SamplingPlan {
  sampler: SamplerId;
  samplerName: string;
  schedule: Exclude<ScheduleId, 'automatic'>;
  scheduleLabel: string;
  /** Descending sigmas to walk: ends at 0, or at sigma_min for samplers that stop there. */
  sigmas: number[];
  /** Multiply unit noise by this to get the starting latent (txt2img). */
  initialNoiseScale: number;
  /** How the denoiser should map sigma to the UNet timestep (makeDenoiser's `timestep`). */
  timestepMode: TimestepMode;
  /** Planned model evaluations (an estimate for DPM adaptive). */
  totalEvals: number;
}

export function planSampling(req: PlanRequest): SamplingPlan {
  const flavour = req.flavour ?? 'diffusers';
  const parsed = parseSamplerName(req.sampler, req.schedule);
  const info = getSampler(parsed.sampler);
  const schedule = resolveSchedule(parsed.sampler, parsed.schedule);
  const discard = flavour === 'a1111' && info.discardPenultimateSigma;
  const opts: ScheduleOptions = { scheduleTables: req.scheduleTables };
  if (flavour === 'a1111') opts.float32 = true;
  if (flavour === 'diffusers') {
    opts.linearSigmaInterpolation = true;
    // diffusers' DPM-Solver/UniPC/DEIS round their linspace timesteps.
    if (info.roundsTimesteps) opts.discreteTimesteps = true;
  }
  let sigmas = buildSigmas(schedule, req.steps + (discard ? 1 : 0), req.model, opts);
  if (discard && sigmas.length > 2) sigmas = [...sigmas.slice(0, -2), sigmas[sigmas.length - 1]!];
  if (info.endsAtSigmaMin) sigmas = endAtSigmaMin(sigmas, req.model.sigmaMin);
  const vp = flavour === 'diffusers' ? info.vpInitialNoise.diffusers : info.vpInitialNoise.a1111;
  const s0 = sigmas[0]!;
  return {
    sampler: parsed.sampler,
    samplerName: info.name,
    schedule,
    scheduleLabel: SCHEDULES.find((s) => s.name === schedule)!.label,
    sigmas,
    initialNoiseScale: vp ? Math.sqrt(1 + s0 * s0) : s0,
    timestepMode: flavour === 'diffusers' && info.roundsTimesteps ? 'round' : 'interpolate',
    totalEvals: countEvals(parsed.sampler, sigmas),
  };
}

/** Replaces the final 0 by sigma_min (dropping it instead if the schedule already reached sigma_min). */
export function endAtSigmaMin(sigmas: readonly number[], sigmaMin: number): number[] {
  const out = [...sigmas];
  if (out[out.length - 1] !== 0) return out;
  if (out.length >= 2 && out[out.length - 2]! <= sigmaMin * (1 + 1e-6)) out.pop();
  else out[out.length - 1] = sigmaMin;
  return out;
}

/** Model evaluations a sampler makes over these sigmas (DPM adaptive: an estimate). */
export function countEvals(sampler: SamplerId, sigmas: readonly number[]): number {
  const n = sigmas.length - 1;
  if (n <= 0) return 0;
  const info = getSampler(sampler);
  if (sampler === 'plms') return n + (sigmas[1]! > 0 ? 1 : 0);
  if (sampler === 'dpm_adaptive') return Math.max(3, 3 * n);
  if (info.secondOrder) {
    let count = 0;
    for (let i = 0; i < n; i++) count += sigmas[i + 1]! > 0 ? 2 : 1;
    return count;
  }
  return n;
}

export interface RunOptions {
  denoise: Denoiser;
  /** The starting latent at noise level sigmas[0] (not modified). */
  x: Float32Array;
  sigmas: readonly number[];
  /** Fresh unit noise shaped like x (BatchNoise.next from rng.ts, or brownian.ts). Required for stochastic samplers. */
  noise?: NoiseSource;
  options?: SamplerOptions;
  signal?: AbortSignal;
  /** After every model evaluation: evaluations done and planned. */
  onProgress?: (done: number, total: number) => void;
}

export class SamplingAbortedError extends Error {
  constructor() {
    super('sampling was cancelled');
    this.name = 'AbortError';
  }
}

/** Runs a sampler by id or name; checks `signal` before every model evaluation and throws an AbortError. */
export async function runSampler(sampler: SamplerId | string, run: RunOptions): Promise<Float32Array> {
  const id = parseSamplerName(sampler).sampler;
  const info = getSampler(id);
  const total = countEvals(id, run.sigmas);
  let done = 0;
  const denoise: Denoiser = async (x, sigma) => {
    if (run.signal?.aborted) throw new SamplingAbortedError();
    const out = await run.denoise(x, sigma);
    done++;
    run.onProgress?.(done, Math.max(total, done));
    return out;
  };
  const noise =
    run.noise ??
    (() => {
      throw new Error(`sampler ${info.name} needs a noise source (RunOptions.noise)`);
    });
  if (run.signal?.aborted) throw new SamplingAbortedError();
  return info.fn(denoise, run.x, run.sigmas, { noise, options: resolveOptions(run.options, info.defaultEta) });
}

/**
 * img2img, diffusers' rule: init_timestep = floor(steps * strength) steps run, the tail of the schedule
 * (strength 0.6 of 10 steps = the last 6). `sigmas` is the full plan for `steps` steps.
 */
export function img2imgSigmasDiffusers(sigmas: readonly number[], strength: number): number[] {
  const steps = sigmas.length - 1;
  const init = Math.min(Math.floor(steps * strength), steps);
  return sigmas.slice(steps - init);
}

/** img2img, A1111's rule (img2img_fix_steps off): t_enc = floor(min(strength, 0.999) * steps); t_enc + 1 steps run. */
export function img2imgSigmasA1111(sigmas: readonly number[], strength: number): number[] {
  const steps = sigmas.length - 1;
  const tEnc = Math.floor(Math.min(strength, 0.999) * steps);
  return sigmas.slice(Math.max(steps - tEnc - 1, 0));
}

/**
 * img2img's tail of the schedule for a request: A1111's rule under the 'a1111' flavour for its k-diffusion samplers
 * (sd_samplers_kdiffusion sample_img2img: one step more than diffusers at most strengths, e.g. 16 of 20 steps at
 * 0.75, and never zero steps); diffusers' rule otherwise. A1111 runs DDIM, PLMS and UniPC through its own timestep
 * samplers (sd_samplers_timesteps), whose img2img noises one timestep above the first it evaluates; Kiln runs
 * those three in sigma space and keeps diffusers' rule for them.
 */
export function img2imgSigmas(sigmas: readonly number[], strength: number, flavour: Flavour | undefined, sampler: SamplerId): number[] {
  if (flavour === 'a1111' && !TIMESTEP_SAMPLERS.has(sampler)) return img2imgSigmasA1111(sigmas, strength);
  return img2imgSigmasDiffusers(sigmas, strength);
}

const TIMESTEP_SAMPLERS = new Set<SamplerId>(['ddim', 'plms', 'unipc']);

/** The noised init latent for img2img at noise level sigma (sigma space: x0 + sigma * noise). */
export function addNoise(x0: Float32Array, noise: Float32Array, sigma: number): Float32Array {
  const out = new Float32Array(x0.length);
  for (let i = 0; i < x0.length; i++) out[i] = x0[i]! + sigma * noise[i]!;
  return out;
}
