// diffusers scheduler class names -> A1111 sampler + schedule. Clients of diffusers-based servers (seed 003) send
// the class name (`EulerDiscreteScheduler`); Kiln's samplers use A1111's names. Karras sigmas are asked for with
// a "Karras" suffix ("DPMSolverMultistepScheduler Karras") or diffusers' own flag, use_karras_sigmas.

/** Class name (lower case) -> A1111 sampler name. */
const SCHEDULER_CLASSES: Record<string, string> = {
  eulerdiscretescheduler: 'Euler',
  eulerancestraldiscretescheduler: 'Euler a',
  dpmsolvermultistepscheduler: 'DPM++ 2M',
  dpmsolversdescheduler: 'DPM++ SDE',
  ddimscheduler: 'DDIM',
  pndmscheduler: 'PLMS',
  lmsdiscretescheduler: 'LMS',
  heundiscretescheduler: 'Heun',
  kdpm2discretescheduler: 'DPM2',
  kdpm2ancestraldiscretescheduler: 'DPM2 a',
  unipcmultistepscheduler: 'UniPC',
  deismultistepscheduler: 'DEIS',
  lcmscheduler: 'LCM',
};

/** The class names this maps, as diffusers spells them (for docs and error messages). */
export const DIFFUSERS_SCHEDULERS = [
  'EulerDiscreteScheduler',
  'EulerAncestralDiscreteScheduler',
  'DPMSolverMultistepScheduler',
  'DPMSolverSDEScheduler',
  'DDIMScheduler',
  'PNDMScheduler',
  'LMSDiscreteScheduler',
  'HeunDiscreteScheduler',
  'KDPM2DiscreteScheduler',
  'KDPM2AncestralDiscreteScheduler',
  'UniPCMultistepScheduler',
  'DEISMultistepScheduler',
  'LCMScheduler',
];

/**
 * A diffusers scheduler class name (optionally with a Karras suffix) -> sampler and schedule; undefined when
 * `name` is not one (then it is taken as an A1111 sampler name).
 */
export function fromDiffusersScheduler(name: string, useKarrasSigmas = false): { sampler: string; schedule: string } | undefined {
  const m = /^(\w+?Scheduler)(?:[\s_+-]*(karras))?$/i.exec(name.trim());
  const sampler = m ? SCHEDULER_CLASSES[m[1]!.toLowerCase()] : undefined;
  if (!sampler) return undefined;
  return { sampler, schedule: m![2] || useKarrasSigmas ? 'Karras' : 'Automatic' };
}
