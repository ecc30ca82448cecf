// Noise schedules: given a step count and the model's discrete schedule, the descending sigmas a sampler walks,
// ending with 0. Independent of the sampler (A1111 1.9+ "Schedule type"). Names follow A1111; labels are what
// the UI and infotext show.

import { KilnInputError } from '../api.ts';
import type { ModelSchedule } from './model-schedule.ts';
import { tToSigma, tToSigmaLinear } from './model-schedule.ts';

export type ScheduleId =
  | 'automatic'
  | 'uniform'
  | 'karras'
  | 'exponential'
  | 'polyexponential'
  | 'sgm_uniform'
  | 'kl_optimal'
  | 'align_your_steps'
  | 'simple'
  | 'normal'
  | 'ddim'
  | 'beta'
  | 'lcm';

export interface ScheduleInfo {
  name: ScheduleId;
  label: string;
  aliases: string[];
  /** Karras-style rho where it applies, else -1 (A1111's /sdapi/v1/schedulers field). */
  defaultRho: number;
  description: string;
}

export const SCHEDULES: readonly ScheduleInfo[] = [
  { name: 'automatic', label: 'Automatic', aliases: ['default', 'auto'], defaultRho: -1, description: "the sampler's preferred schedule" },
  { name: 'uniform', label: 'Uniform', aliases: [], defaultRho: -1, description: 'evenly spaced timesteps 999..0 (k-diffusion get_sigmas)' },
  { name: 'karras', label: 'Karras', aliases: [], defaultRho: 7, description: 'Karras et al. rho=7 between the model sigma_min and sigma_max' },
  { name: 'exponential', label: 'Exponential', aliases: [], defaultRho: -1, description: 'evenly spaced in log sigma' },
  { name: 'polyexponential', label: 'Polyexponential', aliases: [], defaultRho: 1, description: 'polynomial in log sigma, rho=1' },
  { name: 'sgm_uniform', label: 'SGM Uniform', aliases: ['SGMUniform'], defaultRho: -1, description: 'n+1 even timesteps, the last dropped' },
  { name: 'kl_optimal', label: 'KL Optimal', aliases: [], defaultRho: -1, description: 'evenly spaced in arctan(sigma)' },
  { name: 'align_your_steps', label: 'Align Your Steps', aliases: ['AYS'], defaultRho: -1, description: "NVIDIA's 11-sigma table, log-linearly resampled" },
  { name: 'simple', label: 'Simple', aliases: [], defaultRho: -1, description: 'every (1000/n)-th trained sigma from the top (ComfyUI simple)' },
  { name: 'normal', label: 'Normal', aliases: [], defaultRho: -1, description: 'evenly spaced timesteps between sigma_max and sigma_min' },
  { name: 'ddim', label: 'DDIM', aliases: ['ddim_uniform', 'pndm'], defaultRho: -1, description: "DDIM/PNDM's leading timesteps (1000/n apart, offset 1)" },
  { name: 'beta', label: 'Beta', aliases: [], defaultRho: -1, description: 'Beta(0.6, 0.6) quantiles between sigma_min and sigma_max' },
  { name: 'lcm', label: 'LCM', aliases: [], defaultRho: -1, description: "LCM's timesteps (diffusers LCMScheduler, 50 original steps)" },
];

export interface ScheduleOptions {
  /** Round timesteps to integers before looking up sigma, as diffusers' DPM-Solver/UniPC do (uniform-type schedules). */
  discreteTimesteps?: boolean;
  /** Interpolate sigma (diffusers Euler-family) instead of log sigma (k-diffusion) at fractional timesteps. */
  linearSigmaInterpolation?: boolean;
  /** Karras/polyexponential rho override. */
  rho?: number;
  /** Which Align Your Steps table fits the model (ModelFamily.scheduleTables). */
  scheduleTables?: 'sd1' | 'sdxl';
  /** LCM: the distillation's original step count. */
  lcmOriginalSteps?: number;
  /**
   * Karras, exponential and polyexponential in float32 as k-diffusion's torch code computes them (A1111), rather
   * than in double. The Brownian tree rounds its bounds to 6 decimals, so the last float32 bit of sigma_max
   * (14.614643 rather than 14.614642) changes every draw.
   */
  float32?: boolean;
}

const byKey = new Map<string, ScheduleId>();
for (const s of SCHEDULES) for (const k of [s.name, s.label, ...s.aliases]) byKey.set(k.toLowerCase(), s.name);

/** Resolves a schedule name, label or alias (case-insensitive); throws a KilnInputError naming `field`. */
export function parseScheduleName(name: string, field = 'scheduler'): ScheduleId {
  const id = byKey.get(name.trim().toLowerCase());
  if (!id) {
    throw new KilnInputError(`unknown schedule "${name}"; valid: ${SCHEDULES.map((s) => s.label).join(', ')}`, field);
  }
  return id;
}

/** Looks up a schedule without throwing. */
export function findSchedule(name: string): ScheduleId | undefined {
  return byKey.get(name.trim().toLowerCase());
}

function withZero(sigmas: number[]): number[] {
  return [...sigmas, 0];
}

/** Descending sigmas for `steps` steps ending with 0 (length steps + 1, except Beta/DDIM edge cases noted below). */
export function buildSigmas(schedule: ScheduleId, steps: number, model: ModelSchedule, opts: ScheduleOptions = {}): number[] {
  if (!Number.isInteger(steps) || steps < 1) throw new KilnInputError(`steps must be a positive integer, got ${steps}`, 'steps');
  const n = steps;
  const N = model.numTrainTimesteps;
  const { sigmaMin, sigmaMax } = model;
  const atT = (t: number) => {
    const tt = opts.discreteTimesteps ? roundHalfEven(t) : t;
    return opts.linearSigmaInterpolation ? tToSigmaLinear(model, tt) : tToSigma(model, tt);
  };
  switch (schedule) {
    case 'automatic':
      throw new Error('buildSigmas: resolve "automatic" to the sampler\'s schedule first (resolveSchedule)');
    case 'uniform':
    case 'normal':
      // For SD both reduce to t = linspace(999, 0, n) (normal runs from t(sigma_max) to t(sigma_min)).
      return withZero(linspace(N - 1, 0, n).map(atT));
    case 'sgm_uniform':
      return withZero(
        linspace(N - 1, 0, n + 1)
          .slice(0, n)
          .map(atT),
      );
    case 'karras': {
      const rho = opts.rho ?? 7;
      const minInv = sigmaMin ** (1 / rho);
      const maxInv = sigmaMax ** (1 / rho);
      if (opts.float32) return withZero(torchLinspace32(0, 1, n).map((r) => f32(f32(f32(maxInv) + f32(r * f32(minInv - maxInv))) ** rho)));
      return withZero(linspace(0, 1, n).map((r) => (maxInv + r * (minInv - maxInv)) ** rho));
    }
    case 'exponential':
      if (opts.float32) return withZero(torchLinspace32(Math.log(sigmaMax), Math.log(sigmaMin), n).map((v) => f32(Math.exp(v))));
      return withZero(linspace(Math.log(sigmaMax), Math.log(sigmaMin), n).map(Math.exp));
    case 'polyexponential': {
      const rho = opts.rho ?? 1;
      const lmin = Math.log(sigmaMin);
      const lmax = Math.log(sigmaMax);
      if (opts.float32) return withZero(torchLinspace32(1, 0, n).map((r) => f32(Math.exp(f32(f32(f32(r ** rho) * f32(lmax - lmin)) + f32(lmin))))));
      return withZero(linspace(1, 0, n).map((r) => Math.exp(r ** rho * (lmax - lmin) + lmin)));
    }
    case 'kl_optimal': {
      const aMin = Math.atan(sigmaMin);
      const aMax = Math.atan(sigmaMax);
      return withZero(
        Array.from({ length: n }, (_, i) => {
          const w = n === 1 ? 0 : i / (n - 1);
          return Math.tan(w * aMin + (1 - w) * aMax);
        }),
      );
    }
    case 'align_your_steps': {
      const table = opts.scheduleTables === 'sdxl' ? AYS_SDXL : AYS_SD1;
      if (n === 1) return withZero([table[0]!]);
      return withZero(n === table.length ? [...table] : logLinearResample(table, n));
    }
    case 'simple': {
      const ss = N / n;
      return withZero(Array.from({ length: n }, (_, i) => model.sigmas[N - 1 - Math.floor(i * ss)]!));
    }
    case 'ddim': {
      // diffusers "leading" spacing with steps_offset 1 (DDIM, PNDM): exactly n timesteps.
      const ratio = Math.floor(N / n);
      return withZero(Array.from({ length: n }, (_, i) => model.sigmas[Math.min((n - 1 - i) * ratio + 1, N - 1)]!));
    }
    case 'beta': {
      // A1111's beta scheduler: Beta(0.6, 0.6) quantiles of 1 - linspace(0, 1, n), mapped linearly onto sigma.
      return withZero(linspace(1, 0, n).map((p) => sigmaMin + betaPpf(p, 0.6, 0.6) * (sigmaMax - sigmaMin)));
    }
    case 'lcm': {
      // diffusers LCMScheduler: the distillation's timesteps k*j - 1, subsampled evenly from the top.
      const original = opts.lcmOriginalSteps ?? 50;
      const k = Math.floor(N / original);
      const origin = Array.from({ length: original }, (_, j) => (original - j) * k - 1); // descending
      const count = Math.min(n, original);
      return withZero(Array.from({ length: count }, (_, i) => model.sigmas[origin[Math.floor((i * original) / count)]!]!));
    }
  }
}

const f32 = Math.fround;

/**
 * torch.linspace(a, b, n) in float32 on the CPU (PyTorch 1.13+, x86 build): the first half counts up from a, the
 * second half down from b, two 8-lane vectors at a time while 16 values remain, then one value at a time; each
 * `start + step * k` is a fused multiply-add. Verified bit for bit on the fixtures' schedules of up to 11 values.
 */
function torchLinspace32(a: number, b: number, n: number): number[] {
  if (n === 1) return [f32(a)];
  const start = f32(a);
  const end = f32(b);
  const step = f32(f32(end - start) / (n - 1));
  const half = Math.floor(n / 2);
  // f32(x + y * k) with y * k exact in double stands for the fused multiply-add.
  const at = (idx: number) => (idx < half ? f32(start + step * idx) : f32(end - step * (n - idx - 1)));
  const out: number[] = [];
  let i = 0;
  for (; i + 16 <= n; i += 16) {
    for (const v of [i, i + 8]) {
      const base = at(v);
      for (let lane = 0; lane < 8; lane++) out.push(lane === 0 ? base : f32(base + step * lane));
    }
  }
  for (; i < n; i++) out.push(at(i));
  return out;
}

function linspace(a: number, b: number, n: number): number[] {
  if (n === 1) return [a];
  return Array.from({ length: n }, (_, i) => a + ((b - a) * i) / (n - 1));
}

function roundHalfEven(v: number): number {
  const r = Math.round(v);
  return Math.abs(v % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

const AYS_SD1 = [14.615, 6.475, 3.861, 2.697, 1.886, 1.396, 0.963, 0.652, 0.399, 0.152, 0.029];
const AYS_SDXL = [14.615, 6.315, 3.771, 2.181, 1.342, 0.862, 0.555, 0.38, 0.234, 0.113, 0.029];

function logLinearResample(table: number[], n: number): number[] {
  const ys = [...table].reverse().map(Math.log);
  const xs = linspace(0, 1, ys.length);
  const out = linspace(0, 1, n).map((x) => {
    let j = 0;
    while (j < xs.length - 2 && xs[j + 1]! < x) j++;
    const w = (x - xs[j]!) / (xs[j + 1]! - xs[j]!);
    return Math.exp(ys[j]! + w * (ys[j + 1]! - ys[j]!));
  });
  return out.reverse();
}

/** Inverse of the regularised incomplete beta function, by bisection (only used for a handful of points). */
export function betaPpf(p: number, a: number, b: number): number {
  if (p <= 0) return 0;
  if (p >= 1) return 1;
  let lo = 0;
  let hi = 1;
  for (let i = 0; i < 100; i++) {
    const mid = (lo + hi) / 2;
    if (betaCdf(mid, a, b) < p) lo = mid;
    else hi = mid;
  }
  return (lo + hi) / 2;
}

function logGamma(z: number): number {
  // Lanczos approximation (g = 7, n = 9).
  const c = [
    0.99999999999980993, 676.5203681218851, -1259.1392167224028, 771.32342877765313, -176.61502916214059, 12.507343278686905, -0.13857109526572012,
    9.9843695780195716e-6, 1.5056327351493116e-7,
  ];
  if (z < 0.5) return Math.log(Math.PI / Math.sin(Math.PI * z)) - logGamma(1 - z);
  z -= 1;
  let x = c[0]!;
  for (let i = 1; i < 9; i++) x += c[i]! / (z + i);
  const t = z + 7.5;
  return 0.5 * Math.log(2 * Math.PI) + (z + 0.5) * Math.log(t) - t + Math.log(x);
}

/** Regularised incomplete beta I_x(a, b) via its continued fraction (Numerical Recipes' betacf). */
function betaCdf(x: number, a: number, b: number): number {
  if (x <= 0) return 0;
  if (x >= 1) return 1;
  const front = Math.exp(logGamma(a + b) - logGamma(a) - logGamma(b) + a * Math.log(x) + b * Math.log(1 - x));
  if (x > (a + 1) / (a + b + 2)) return 1 - betaCdf(1 - x, b, a);
  const tiny = 1e-300;
  let c = 1;
  let d = 1 - ((a + b) * x) / (a + 1);
  if (Math.abs(d) < tiny) d = tiny;
  d = 1 / d;
  let h = d;
  for (let m = 1; m <= 300; m++) {
    const m2 = 2 * m;
    let aa = (m * (b - m) * x) / ((a + m2 - 1) * (a + m2));
    d = 1 + aa * d;
    if (Math.abs(d) < tiny) d = tiny;
    c = 1 + aa / c;
    if (Math.abs(c) < tiny) c = tiny;
    d = 1 / d;
    h *= d * c;
    aa = (-(a + m) * (a + b + m) * x) / ((a + m2) * (a + m2 + 1));
    d = 1 + aa * d;
    if (Math.abs(d) < tiny) d = tiny;
    c = 1 + aa / c;
    if (Math.abs(c) < tiny) c = tiny;
    d = 1 / d;
    const del = d * c;
    h *= del;
    if (Math.abs(del - 1) < 1e-15) break;
  }
  return (front * h) / a;
}
