// The sampler catalogue: A1111 names and aliases, what each needs, and parsing of user-supplied names
// (including legacy combined names such as "DPM++ 2M Karras").

import { KilnInputError } from '../api.ts';
import type { SamplerFn } from './types.ts';
import type { ScheduleId } from './schedules.ts';
import { SCHEDULES, findSchedule, parseScheduleName } from './schedules.ts';
import * as kd from './k-diffusion.ts';
import { ddim, plms, uniPc, deis } from './timestep.ts';
import { dpmFast, dpmAdaptive } from './dpm-solver.ts';

export type SamplerId =
  | 'euler'
  | 'euler_a'
  | 'lms'
  | 'heun'
  | 'dpm2'
  | 'dpm2_a'
  | 'dpmpp_2s_a'
  | 'dpmpp_2m'
  | 'dpmpp_sde'
  | 'dpmpp_2m_sde'
  | 'dpmpp_2m_sde_heun'
  | 'dpmpp_3m_sde'
  | 'dpm_fast'
  | 'dpm_adaptive'
  | 'ddim'
  | 'plms'
  | 'unipc'
  | 'deis'
  | 'lcm';

export interface SamplerInfo {
  id: SamplerId;
  /** A1111 display name. */
  name: string;
  aliases: string[];
  fn: SamplerFn;
  /** Preferred schedule when "Automatic" is asked for. */
  automaticSchedule: Exclude<ScheduleId, 'automatic'>;
  /** Two model evaluations per step (A1111's second_order). */
  secondOrder: boolean;
  /** Draws fresh noise during sampling (ancestral/SDE; A1111 uses_ensd / brownian_noise). */
  stochastic: boolean;
  /** A1111 (k-diffusion) draws this sampler's noise from a Brownian tree (brownian.ts) rather than the generators. */
  brownianNoise: boolean;
  /** Ends at the model's sigma_min instead of 0 (diffusers/A1111 DDIM, PLMS, UniPC with set_alpha_to_one=false,
   * and k-diffusion's DPM fast/adaptive). */
  endsAtSigmaMin: boolean;
  /** A1111 drops the next-to-last sigma for these (discard_next_to_last_sigma). */
  discardPenultimateSigma: boolean;
  /** diffusers' counterpart starts from unit VP noise (init_noise_sigma 1), i.e. x = noise * sqrt(1 + sigma0^2). */
  vpInitialNoise: { diffusers: boolean; a1111: boolean };
  /** diffusers feeds this sampler's UNet integer timesteps. */
  roundsTimesteps: boolean;
  /** Default eta when none is given (A1111: ancestral 1, DDIM 0). */
  defaultEta: number;
  /** Which diffusers scheduler is the same algorithm, if any. */
  diffusers: string | null;
}

const S = (
  info: Omit<
    SamplerInfo,
    'secondOrder' | 'stochastic' | 'brownianNoise' | 'endsAtSigmaMin' | 'discardPenultimateSigma' | 'vpInitialNoise' | 'roundsTimesteps' | 'defaultEta'
  > &
    Partial<SamplerInfo>,
): SamplerInfo => ({
  secondOrder: false,
  stochastic: false,
  brownianNoise: false,
  endsAtSigmaMin: false,
  discardPenultimateSigma: false,
  vpInitialNoise: { diffusers: false, a1111: false },
  roundsTimesteps: false,
  defaultEta: 1,
  ...info,
});

const VP_DIFFUSERS = { diffusers: true, a1111: false };
const VP_BOTH = { diffusers: true, a1111: true };

export const SAMPLERS: readonly SamplerInfo[] = [
  S({
    id: 'dpmpp_2m',
    name: 'DPM++ 2M',
    aliases: ['k_dpmpp_2m', 'dpmpp_2m', 'DPMSolverMultistepScheduler'],
    fn: kd.dpmpp2m,
    automaticSchedule: 'karras',
    vpInitialNoise: VP_DIFFUSERS,
    roundsTimesteps: true,
    diffusers: 'DPMSolverMultistepScheduler',
  }),
  S({
    id: 'dpmpp_sde',
    name: 'DPM++ SDE',
    aliases: ['k_dpmpp_sde', 'dpmpp_sde', 'DPMSolverSDEScheduler'],
    fn: kd.dpmppSde,
    automaticSchedule: 'karras',
    secondOrder: true,
    stochastic: true,
    brownianNoise: true,
    diffusers: null,
  }),
  S({
    id: 'dpmpp_2m_sde',
    name: 'DPM++ 2M SDE',
    aliases: ['k_dpmpp_2m_sde', 'dpmpp_2m_sde'],
    fn: kd.dpmpp2mSde,
    automaticSchedule: 'exponential',
    stochastic: true,
    brownianNoise: true,
    vpInitialNoise: VP_DIFFUSERS,
    roundsTimesteps: true,
    diffusers: 'DPMSolverMultistepScheduler(algorithm_type=sde-dpmsolver++)',
  }),
  S({
    id: 'dpmpp_2m_sde_heun',
    name: 'DPM++ 2M SDE Heun',
    aliases: ['k_dpmpp_2m_sde_heun', 'dpmpp_2m_sde_heun'],
    fn: kd.dpmpp2mSdeHeun,
    automaticSchedule: 'exponential',
    stochastic: true,
    brownianNoise: true,
    vpInitialNoise: VP_DIFFUSERS,
    roundsTimesteps: true,
    diffusers: 'DPMSolverMultistepScheduler(algorithm_type=sde-dpmsolver++, solver_type=heun)',
  }),
  S({
    id: 'dpmpp_2s_a',
    name: 'DPM++ 2S a',
    aliases: ['k_dpmpp_2s_a', 'dpmpp_2s_ancestral'],
    fn: kd.dpmpp2sAncestral,
    automaticSchedule: 'karras',
    secondOrder: true,
    stochastic: true,
    diffusers: null,
  }),
  S({
    id: 'dpmpp_3m_sde',
    name: 'DPM++ 3M SDE',
    aliases: ['k_dpmpp_3m_sde', 'dpmpp_3m_sde'],
    fn: kd.dpmpp3mSde,
    automaticSchedule: 'exponential',
    stochastic: true,
    brownianNoise: true,
    discardPenultimateSigma: true,
    diffusers: null,
  }),
  S({
    id: 'euler_a',
    name: 'Euler a',
    aliases: ['k_euler_a', 'k_euler_ancestral', 'euler_ancestral', 'EulerAncestralDiscreteScheduler'],
    fn: kd.eulerAncestral,
    automaticSchedule: 'uniform',
    stochastic: true,
    diffusers: 'EulerAncestralDiscreteScheduler',
  }),
  S({
    id: 'euler',
    name: 'Euler',
    aliases: ['k_euler', 'euler', 'EulerDiscreteScheduler'],
    fn: kd.euler,
    automaticSchedule: 'uniform',
    diffusers: 'EulerDiscreteScheduler',
  }),
  S({ id: 'lms', name: 'LMS', aliases: ['k_lms', 'lms', 'LMSDiscreteScheduler'], fn: kd.lms, automaticSchedule: 'uniform', diffusers: 'LMSDiscreteScheduler' }),
  S({
    id: 'heun',
    name: 'Heun',
    aliases: ['k_heun', 'heun', 'HeunDiscreteScheduler'],
    fn: kd.heun,
    automaticSchedule: 'uniform',
    secondOrder: true,
    diffusers: 'HeunDiscreteScheduler',
  }),
  S({
    id: 'dpm2',
    name: 'DPM2',
    aliases: ['k_dpm_2', 'dpm_2', 'KDPM2DiscreteScheduler'],
    fn: kd.dpm2,
    automaticSchedule: 'karras',
    secondOrder: true,
    discardPenultimateSigma: true,
    diffusers: 'KDPM2DiscreteScheduler',
  }),
  S({
    id: 'dpm2_a',
    name: 'DPM2 a',
    aliases: ['k_dpm_2_a', 'dpm_2_ancestral', 'KDPM2AncestralDiscreteScheduler'],
    fn: kd.dpm2Ancestral,
    automaticSchedule: 'karras',
    secondOrder: true,
    stochastic: true,
    discardPenultimateSigma: true,
    diffusers: 'KDPM2AncestralDiscreteScheduler',
  }),
  S({
    id: 'dpm_fast',
    name: 'DPM fast',
    aliases: ['k_dpm_fast', 'dpm_fast'],
    fn: dpmFast,
    automaticSchedule: 'uniform',
    endsAtSigmaMin: true,
    diffusers: null,
  }),
  S({
    id: 'dpm_adaptive',
    name: 'DPM adaptive',
    aliases: ['k_dpm_ad', 'dpm_adaptive'],
    fn: dpmAdaptive,
    automaticSchedule: 'uniform',
    endsAtSigmaMin: true,
    diffusers: null,
  }),
  S({
    id: 'ddim',
    name: 'DDIM',
    aliases: ['ddim', 'DDIMScheduler'],
    fn: ddim,
    automaticSchedule: 'ddim',
    endsAtSigmaMin: true,
    vpInitialNoise: VP_BOTH,
    defaultEta: 0,
    diffusers: 'DDIMScheduler',
  }),
  S({
    id: 'plms',
    name: 'PLMS',
    aliases: ['plms', 'pndm', 'PNDMScheduler'],
    fn: plms,
    automaticSchedule: 'ddim',
    endsAtSigmaMin: true,
    vpInitialNoise: VP_BOTH,
    diffusers: 'PNDMScheduler(skip_prk_steps=True)',
  }),
  S({
    id: 'unipc',
    name: 'UniPC',
    aliases: ['unipc', 'uni_pc', 'UniPCMultistepScheduler'],
    fn: uniPc,
    automaticSchedule: 'sgm_uniform',
    endsAtSigmaMin: true,
    vpInitialNoise: VP_BOTH,
    roundsTimesteps: true,
    diffusers: 'UniPCMultistepScheduler',
  }),
  S({
    id: 'deis',
    name: 'DEIS',
    aliases: ['deis', 'DEISMultistepScheduler'],
    fn: deis,
    automaticSchedule: 'sgm_uniform',
    endsAtSigmaMin: true,
    vpInitialNoise: VP_BOTH,
    roundsTimesteps: true,
    diffusers: 'DEISMultistepScheduler',
  }),
  S({
    id: 'lcm',
    name: 'LCM',
    aliases: ['k_lcm', 'lcm', 'LCMScheduler'],
    fn: kd.lcm,
    automaticSchedule: 'lcm',
    stochastic: true,
    vpInitialNoise: VP_DIFFUSERS,
    diffusers: 'LCMScheduler',
  }),
];

const samplerByKey = new Map<string, SamplerInfo>();
for (const s of SAMPLERS) for (const k of [s.id, s.name, ...s.aliases]) samplerByKey.set(k.toLowerCase(), s);

export function getSampler(id: SamplerId): SamplerInfo {
  const s = samplerByKey.get(id);
  if (!s) throw new Error(`no sampler ${id}`);
  return s;
}

/** Legacy A1111 alias suffixes: k_dpmpp_2m_ka = DPM++ 2M Karras. */
const LEGACY_SUFFIXES: [string, ScheduleId][] = [
  ['_ka', 'karras'],
  ['_exp', 'exponential'],
];

export interface ParsedSampler {
  sampler: SamplerId;
  /** May be 'automatic'; see resolveSchedule. */
  schedule: ScheduleId;
}

/**
 * Parses a sampler name (A1111 name, alias, k-diffusion/ComfyUI name, diffusers class; case-insensitive) and an
 * optional schedule. A legacy combined name ("DPM++ 2M Karras", "DPM2 a Karras") splits into sampler + schedule;
 * an explicit non-automatic `schedule` wins over the suffix. Unknown names throw KilnInputError (HTTP 400) listing
 * the valid ones.
 */
export function parseSamplerName(name: string, schedule?: string | null): ParsedSampler {
  const explicit = schedule === undefined || schedule === null || schedule === '' ? 'automatic' : parseScheduleName(schedule, 'scheduler');
  const raw = (name ?? '').trim();
  const key = raw.toLowerCase();
  let found = samplerByKey.get(key);
  let suffix: ScheduleId | undefined;
  if (!found) {
    for (const s of SCHEDULES) {
      for (const label of [s.label, s.name, ...s.aliases]) {
        const tail = ` ${label.toLowerCase()}`;
        if (key.endsWith(tail)) {
          const base = samplerByKey.get(key.slice(0, -tail.length).trim());
          if (base) {
            found = base;
            suffix = s.name;
          }
        }
      }
      if (found) break;
    }
  }
  if (!found) {
    for (const [tail, sched] of LEGACY_SUFFIXES) {
      if (key.endsWith(tail) && samplerByKey.has(key.slice(0, -tail.length))) {
        found = samplerByKey.get(key.slice(0, -tail.length));
        suffix = sched;
      }
    }
  }
  if (!found) {
    throw new KilnInputError(
      `unknown sampler "${name}"; valid: ${SAMPLERS.map((s) => s.name).join(', ')} (optionally followed by a schedule, e.g. "DPM++ 2M Karras")`,
      'sampler',
    );
  }
  return { sampler: found.id, schedule: explicit !== 'automatic' ? explicit : (suffix ?? 'automatic') };
}

/** "Automatic" -> the sampler's preferred schedule; anything else as is. */
export function resolveSchedule(sampler: SamplerId, schedule: ScheduleId): Exclude<ScheduleId, 'automatic'> {
  return schedule === 'automatic' ? getSampler(sampler).automaticSchedule : schedule;
}

export { findSchedule };

/** For GET /samplers: A1111's shape ({name, aliases, options}). */
export function listSamplers(): { name: string; aliases: string[]; options: Record<string, string | boolean> }[] {
  return SAMPLERS.map((s) => {
    const options: Record<string, string | boolean> = {};
    if (s.automaticSchedule !== 'uniform') options.scheduler = s.automaticSchedule;
    if (s.secondOrder) options.second_order = true;
    if (s.stochastic) options.uses_ensd = true;
    if (s.discardPenultimateSigma) options.discard_next_to_last_sigma = true;
    return { name: s.name, aliases: s.aliases.filter((a) => !/Scheduler$/.test(a)), options };
  });
}

/** For GET /schedulers: A1111's shape. */
export function listSchedules(): { name: string; label: string; aliases: string[] | null; default_rho: number; need_inner_model: boolean }[] {
  return SCHEDULES.map((s) => ({
    name: s.name,
    label: s.label,
    aliases: s.aliases.length ? s.aliases : null,
    default_rho: s.defaultRho,
    need_inner_model: ['uniform', 'normal', 'sgm_uniform', 'simple', 'ddim', 'lcm'].includes(s.name),
  }));
}
