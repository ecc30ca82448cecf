// What a generation on a flow model (Flux, SD3) may ask for, and its sampling plan: which A1111 sampler and schedule
// names apply to a rectified-flow model and the sigmas they walk. Everything else is refused with a KilnInputError
// naming the request field, before any work.
import { KilnInputError, type GenerateRequest } from '../api.ts';
import { getSampler, parseSamplerName, resolveSchedule, SCHEDULES, type SamplerId, type SamplingPlan } from '../samplers/index.ts';
import { flowSchedule, flowTableSigmas } from '../samplers/flow.ts';
import { betaPpf } from '../samplers/schedules.ts';
import { countEvals } from '../samplers/run.ts';
import type { ModelSessions } from './model-sessions.ts';

/**
 * Samplers that only integrate the probability-flow ODE dx/dsigma = (x - x0) / sigma, which holds on the straight
 * flow path as it does on the VE path: Euler (the reference pipelines' FlowMatchEulerDiscreteScheduler), Heun, DPM2
 * and LMS. The ancestral/SDE samplers re-noise with the VE formula and the DPM++/UniPC/DDIM families assume the VE or
 * VP parametrisation, so they would sample a different process: refused.
 */
const FLOW_SAMPLERS: ReadonlySet<SamplerId> = new Set(['euler', 'heun', 'dpm2', 'lms']);

// Schedules: Automatic (the reference pipeline's, diffusers), Simple and Beta (ComfyUI's on the flow sigma table).

/** Flux dev's default distilled guidance (diffusers' FluxPipeline guidance_scale; Forge's Distilled CFG Scale). */
export const DEFAULT_FLUX_GUIDANCE = 3.5;

function refuse(message: string, field: string): never {
  throw new KilnInputError(message, field);
}

/** The features a flow model cannot do here, refused by the field that asked for them. */
export function validateFlowRequest(ms: ModelSessions, req: GenerateRequest): void {
  const label = ms.family.label;
  if (req.refiner) refuse(`refiner: ${label} models take no refiner`, 'refiner');
  if (req.hires) refuse(`hires: hires fix is not supported on ${label} models yet`, 'hires');
  if (req.loras?.length) refuse(`loras: LoRAs are not supported on ${label} models yet`, 'loras');
  if (req.mask || req.outpaint) refuse(`mask: inpainting and outpainting are not supported on ${label} models yet`, req.mask ? 'mask' : 'outpaint');
  if (req.transparent) refuse(`transparent: LayerDiffuse is an SDXL feature; ${label} models have no transparent decoder`, 'transparent');
  if (req.tiling) refuse(`tiling: seamless tiling is not supported on ${label} models yet`, 'tiling');
  if (req.taesdDecode) refuse(`vae: "taesd" has no ${label} decoder here; use the model's VAE`, 'vae');
  if (req.clipSkip !== undefined && req.clipSkip > 1) refuse(`clip_skip: ${label} models do not take clip skip (send 1)`, 'clip_skip');
  if (req.init?.resizeMode !== undefined && req.init.resizeMode !== 0) refuse(`resize_mode: only 0 (just resize) applies to ${label} img2img`, 'resize_mode');
  // The transformer packs 2x2 latent pixels (Flux) or patches 2x2 (SD3): sides are multiples of twice the VAE factor.
  const multiple = 2 * ms.latentFactor;
  for (const [field, v] of [
    ['width', req.width],
    ['height', req.height],
  ] as const) {
    if (v % multiple !== 0) refuse(`${field} must be a multiple of ${multiple} for ${label} models, got ${v}`, field);
  }
  const t = ms.model.flow?.transformer;
  if (t?.kind === 'mmdit') {
    const max = t.config.posEmbedMaxSize * t.config.patch * ms.latentFactor;
    for (const [field, v] of [
      ['width', req.width],
      ['height', req.height],
    ] as const) {
      if (v > max) refuse(`${field} must be at most ${max} for this SD3 model (its position table covers ${max}px), got ${v}`, field);
    }
  }
  // Models without a guidance input ignore it (Forge sends its default with every model).
  if (req.guidance !== undefined && (typeof req.guidance !== 'number' || !Number.isFinite(req.guidance) || req.guidance < 0 || req.guidance > 100)) {
    refuse(`guidance must be a number from 0 to 100, got ${JSON.stringify(req.guidance)}`, 'guidance');
  }
}

export interface FlowPlan extends SamplingPlan {
  /** The distilled guidance fed to the transformer (Flux dev), else undefined. */
  guidance?: number;
  /** Classifier-free guidance runs (SD3 with cfg_scale > 1). */
  useCfg: boolean;
}

/**
 * The sampler and schedule a flow model runs for these names (legacy "<sampler> <schedule>" names included), or a
 * KilnInputError naming `sampler_name` / `scheduler`. `label`: the family's, for the message.
 */
export function resolveFlowSampling(
  sampler: string,
  scheduleName: string | undefined,
  label: string,
): { sampler: SamplerId; schedule: 'automatic' | 'simple' | 'beta' } {
  const parsed = parseSamplerName(sampler, scheduleName);
  if (!FLOW_SAMPLERS.has(parsed.sampler)) {
    const names = [...FLOW_SAMPLERS].map((id) => getSampler(id).name).join(', ');
    refuse(`sampler_name: ${getSampler(parsed.sampler).name} does not apply to ${label} (a flow model); use ${names}`, 'sampler_name');
  }
  // "Automatic" means the reference pipeline's own schedule here, not the sampler's preferred UNet schedule.
  const schedule = parsed.schedule === 'automatic' ? 'automatic' : resolveSchedule(parsed.sampler, parsed.schedule);
  if (schedule !== 'automatic' && schedule !== 'simple' && schedule !== 'beta') {
    refuse(
      `scheduler: the ${SCHEDULES.find((s) => s.name === schedule)?.label ?? schedule} schedule does not apply to ${label}; use Automatic, Simple or Beta`,
      'scheduler',
    );
  }
  return { sampler: parsed.sampler, schedule };
}

/** The sampler, schedule and sigmas of a flow generation; `imageSeqLen` is the packed image token count. */
export function planFlow(ms: ModelSessions, req: GenerateRequest, imageSeqLen: number): FlowPlan {
  const family = ms.flowFamily;
  const { sampler, schedule } = resolveFlowSampling(req.sampler, req.schedule, family.label);
  const config = ms.model.flow!.schedule;
  const sigmas =
    schedule === 'automatic'
      ? flowSchedule(req.steps, config, { spacing: family.flow.spacing, imageSeqLen }).sigmas
      : flowTableSigmas(schedule, req.steps, config, { imageSeqLen, betaPpf });
  const distilled = ms.hasGuidanceInput ? (req.guidance ?? (req.guidanceFromCfg ? req.cfgScale : DEFAULT_FLUX_GUIDANCE)) : undefined;
  // Infotext: "Automatic" is the reference grid, which ComfyUI calls Simple.
  const named = schedule === 'automatic' ? 'simple' : schedule;
  return {
    sampler,
    samplerName: getSampler(sampler).name,
    schedule: named,
    scheduleLabel: SCHEDULES.find((s) => s.name === named)!.label,
    sigmas,
    initialNoiseScale: sigmas[0]!,
    timestepMode: 'interpolate',
    totalEvals: countEvals(sampler, sigmas),
    guidance: distilled,
    useCfg: family.flow.guidance === 'cfg' && req.cfgScale > 1,
  };
}
