// The one job model every API surface maps onto: a validated, fully-defaulted native request. Native routes
// build it from the JSON below; compat adapters (A1111, OpenAI, RunPod, seeds) build it from their own
// shapes and call jobs.submit(). toGenerateRequest() is the single bridge to the engine contract.
import { randomInt } from 'node:crypto';
import type { GenerateRequest, ModelRef, RawImage, RngSource } from '../engine/index.ts';
import type { ImageFormat } from '../storage/encode.ts';
import type { Limits } from '../server/config.ts';

export type JobKind = 'txt2img' | 'img2img';
export type ResponseKind = 'base64' | 'url';

export interface OutputSpec {
  format: ImageFormat;
  /** 1-100; JPEG and WebP only. */
  quality: number;
  /** How results are returned by default: base64 in the JSON, or URLs of stored files. */
  response: ResponseKind;
}

export interface JobSpec {
  kind: JobKind;
  /** Model name or label as requested; undefined = the server's default model. */
  model?: string;
  prompts: string[];
  /** One negative prompt for all prompts, or one per prompt. */
  negativePrompts: string[];
  imagesPerPrompt: number;
  width: number;
  height: number;
  steps: number;
  cfgScale: number;
  sampler: string;
  schedule: string;
  /** Resolved at submission (never -1), so it can be returned before the job runs. */
  seed: number;
  subseed: number;
  subseedStrength: number;
  clipSkip?: number;
  eta?: number;
  /** k-diffusion stochastic sampling options (A1111 s_churn, s_tmin, s_tmax, s_noise); undefined = sampler default. */
  sChurn?: number;
  sTmin?: number;
  sTmax?: number;
  sNoise?: number;
  /** A1111 "seed resize from": noise made at this size, then fitted to width x height. */
  seedResizeFromW?: number;
  seedResizeFromH?: number;
  rng?: RngSource;
  /** img2img: the stored, already-validated input image (see inputs.ts) and how much to change it. */
  initImage?: string;
  denoisingStrength?: number;
  /** SDXL refiner (model name or label) and the fraction of steps after which it takes over (A1111 semantics). */
  refiner?: string;
  refinerSwitchAt?: number;
  output: OutputSpec;
  /** Free-form data an adapter wants back with the result (for example the original request to echo). */
  extra?: Record<string, unknown>;
}

export const SPEC_DEFAULTS = {
  width: 512,
  height: 512,
  steps: 20,
  cfgScale: 7,
  sampler: 'Euler',
  schedule: 'Automatic',
  denoisingStrength: 0.75,
  output: { format: 'png', quality: 90, response: 'base64' } as OutputSpec,
};

/** Largest seed A1111 draws for -1 (exclusive); seeds are uint32. */
const SEED_SPACE = 4294967294;

export function resolveSeed(seed: number | undefined): number {
  return seed === undefined || seed < 0 ? randomInt(0, SEED_SPACE) : seed;
}

/** Native request JSON schema. Limits come from the server config, so the schema and /docs show real bounds. */
export function nativeRequestSchema(limits: Limits) {
  const prompt = { type: 'string', maxLength: limits.maxPromptChars };
  const dim = (max: number) => ({ type: 'integer', minimum: 64, maximum: max, multipleOf: 8 });
  return {
    type: 'object',
    additionalProperties: false,
    properties: {
      type: { type: 'string', enum: ['txt2img', 'img2img'], default: 'txt2img', description: 'img2img needs init_image.' },
      prompt: { ...prompt, description: 'One prompt (or use prompts).' },
      prompts: { type: 'array', minItems: 1, maxItems: limits.maxImages, items: prompt, description: 'Several prompts; each gets images_per_prompt images.' },
      negative_prompt: {
        anyOf: [prompt, { type: 'array', minItems: 1, maxItems: limits.maxImages, items: prompt }],
        description: 'One negative prompt for all, or one per prompt.',
      },
      images_per_prompt: { type: 'integer', minimum: 1, maximum: limits.maxImages, default: 1 },
      model: { type: 'string', minLength: 1, maxLength: 300, description: 'Model name or label (GET /v1/models); default: the server model.' },
      width: { ...dim(limits.maxWidth), default: SPEC_DEFAULTS.width },
      height: { ...dim(limits.maxHeight), default: SPEC_DEFAULTS.height },
      steps: { type: 'integer', minimum: 1, maximum: limits.maxSteps, default: SPEC_DEFAULTS.steps },
      cfg_scale: { type: 'number', minimum: 0, maximum: 30, default: SPEC_DEFAULTS.cfgScale },
      sampler: { type: 'string', minLength: 1, maxLength: 100, default: SPEC_DEFAULTS.sampler, description: 'A1111 sampler name (GET /v1/samplers), e.g. "Euler a", "DPM++ 2M".' },
      schedule: { type: 'string', minLength: 1, maxLength: 100, default: SPEC_DEFAULTS.schedule, description: 'Schedule label (GET /v1/schedules), e.g. "Karras".' },
      seed: { type: 'integer', minimum: -1, maximum: 4294967295, default: -1, description: '-1 = random; image i uses seed + i.' },
      subseed: { type: 'integer', minimum: -1, maximum: 4294967295, default: -1 },
      subseed_strength: { type: 'number', minimum: 0, maximum: 1, default: 0 },
      clip_skip: { type: 'integer', minimum: 1, maximum: 12 },
      eta: { type: 'number', minimum: 0, maximum: 1 },
      rng: { type: 'string', enum: ['cpu', 'philox'] },
      init_image: { type: 'string', minLength: 1, description: 'img2img input: base64 or a data: URI (or a multipart file field).' },
      denoising_strength: { type: 'number', minimum: 0, maximum: 1, default: SPEC_DEFAULTS.denoisingStrength },
      refiner: { type: 'string', minLength: 1, maxLength: 500, description: 'SDXL refiner model (name or label); runs the last steps.' },
      refiner_switch_at: { type: 'number', minimum: 0, maximum: 1, default: 0.8, description: 'Fraction of the steps the base model runs before the refiner takes over.' },
      output: {
        type: 'object',
        additionalProperties: false,
        properties: {
          format: { type: 'string', enum: ['png', 'jpeg', 'jpg', 'webp'], default: 'png' },
          quality: { type: 'integer', minimum: 1, maximum: 100, default: 90 },
          response: { type: 'string', enum: ['base64', 'url'], default: 'base64' },
        },
      },
    },
  } as const;
}

/** The body after schema validation (defaults filled by the validator). */
export interface NativeRequest {
  type?: JobKind;
  prompt?: string;
  prompts?: string[];
  negative_prompt?: string | string[];
  images_per_prompt?: number;
  model?: string;
  width?: number;
  height?: number;
  steps?: number;
  cfg_scale?: number;
  sampler?: string;
  schedule?: string;
  seed?: number;
  subseed?: number;
  subseed_strength?: number;
  clip_skip?: number;
  eta?: number;
  rng?: RngSource;
  init_image?: string;
  denoising_strength?: number;
  refiner?: string;
  refiner_switch_at?: number;
  output?: { format?: string; quality?: number; response?: ResponseKind };
}

/** A request error that names the offending field; becomes a 400. */
export class SpecError extends Error {
  constructor(readonly field: string, message: string) {
    super(`${field}: ${message}`);
    this.name = 'SpecError';
  }
}

/**
 * Native request -> JobSpec, with the cross-field checks a schema cannot express. `initImage` is the stored
 * name of the already-decoded upload, if any.
 */
export function specFromNative(body: NativeRequest, limits: Limits, initImage?: string): JobSpec {
  if (body.prompt !== undefined && body.prompts !== undefined) throw new SpecError('prompt', 'give either prompt or prompts, not both');
  const prompts = body.prompts ?? [body.prompt ?? ''];
  const neg = body.negative_prompt;
  const negativePrompts = neg === undefined ? [''] : Array.isArray(neg) ? neg : [neg];
  if (negativePrompts.length !== 1 && negativePrompts.length !== prompts.length) {
    throw new SpecError('negative_prompt', `has ${negativePrompts.length} entries; give one, or one per prompt (${prompts.length})`);
  }
  const kind = body.type ?? 'txt2img';
  if (kind === 'img2img' && !initImage) throw new SpecError('init_image', 'is required for img2img');
  if (kind === 'txt2img' && initImage) throw new SpecError('init_image', 'is only used with "type": "img2img"');
  const format = body.output?.format === 'jpg' ? 'jpeg' : ((body.output?.format ?? 'png') as ImageFormat);
  const spec: JobSpec = {
    kind,
    model: body.model,
    prompts,
    negativePrompts,
    imagesPerPrompt: body.images_per_prompt ?? 1,
    width: body.width ?? SPEC_DEFAULTS.width,
    height: body.height ?? SPEC_DEFAULTS.height,
    steps: body.steps ?? SPEC_DEFAULTS.steps,
    cfgScale: body.cfg_scale ?? SPEC_DEFAULTS.cfgScale,
    sampler: body.sampler ?? SPEC_DEFAULTS.sampler,
    schedule: body.schedule ?? SPEC_DEFAULTS.schedule,
    seed: resolveSeed(body.seed),
    subseed: resolveSeed(body.subseed),
    subseedStrength: body.subseed_strength ?? 0,
    clipSkip: body.clip_skip,
    eta: body.eta,
    rng: body.rng,
    initImage,
    denoisingStrength: kind === 'img2img' ? (body.denoising_strength ?? SPEC_DEFAULTS.denoisingStrength) : undefined,
    refiner: body.refiner,
    refinerSwitchAt: body.refiner ? (body.refiner_switch_at ?? 0.8) : undefined,
    output: { format, quality: body.output?.quality ?? 90, response: body.output?.response ?? 'base64' },
  };
  checkSpecLimits(spec, limits);
  return spec;
}

/** Limits every spec must respect, whichever surface built it. Throws SpecError naming the field. */
export function checkSpecLimits(spec: JobSpec, limits: Limits): void {
  const dims: Array<['width' | 'height', number]> = [['width', limits.maxWidth], ['height', limits.maxHeight]];
  for (const [field, max] of dims) {
    const v = spec[field];
    if (!Number.isInteger(v) || v < 64 || v > max) throw new SpecError(field, `must be an integer from 64 to ${max}, got ${v}`);
    if (v % 8 !== 0) throw new SpecError(field, `must be a multiple of 8, got ${v}`);
  }
  if (spec.width * spec.height > limits.maxPixels) {
    throw new SpecError('width', `width x height = ${spec.width * spec.height} pixels exceeds the limit of ${limits.maxPixels}`);
  }
  if (!Number.isInteger(spec.steps) || spec.steps < 1 || spec.steps > limits.maxSteps) throw new SpecError('steps', `must be from 1 to ${limits.maxSteps}, got ${spec.steps}`);
  if (spec.prompts.length < 1) throw new SpecError('prompts', 'must hold at least one prompt');
  const total = spec.prompts.length * spec.imagesPerPrompt;
  if (!Number.isInteger(spec.imagesPerPrompt) || spec.imagesPerPrompt < 1 || total > limits.maxImages) {
    throw new SpecError('images_per_prompt', `prompts x images_per_prompt = ${total}; the limit is ${limits.maxImages} images per request`);
  }
  for (const [field, list] of [['prompt', spec.prompts], ['negative_prompt', spec.negativePrompts]] as const) {
    for (const p of list) if (p.length > limits.maxPromptChars) throw new SpecError(field, `is ${p.length} characters; the limit is ${limits.maxPromptChars}`);
  }
  if (!(spec.cfgScale >= 0 && spec.cfgScale <= 30)) throw new SpecError('cfg_scale', `must be from 0 to 30, got ${spec.cfgScale}`);
  if (spec.kind === 'img2img' && !spec.initImage) throw new SpecError('init_image', 'is required for img2img');
}

/** The number of images a spec produces. */
export function imageCount(spec: JobSpec): number {
  return spec.prompts.length * spec.imagesPerPrompt;
}

/** JobSpec -> the engine's request. The model and init image are resolved by the caller (executor). */
export function toGenerateRequest(spec: JobSpec, model: ModelRef, initImage?: RawImage, device?: GenerateRequest['device'], refiner?: ModelRef): GenerateRequest {
  return {
    model,
    prompts: spec.prompts,
    negativePrompt: spec.negativePrompts.length === 1 ? spec.negativePrompts[0] : spec.negativePrompts,
    imagesPerPrompt: spec.imagesPerPrompt,
    width: spec.width,
    height: spec.height,
    steps: spec.steps,
    cfgScale: spec.cfgScale,
    sampler: spec.sampler,
    schedule: spec.schedule,
    samplerOptions: { eta: spec.eta, sChurn: spec.sChurn, sTmin: spec.sTmin, sTmax: spec.sTmax, sNoise: spec.sNoise },
    seed: spec.seed,
    variation: { seed: spec.subseed, strength: spec.subseedStrength },
    seedResizeFrom: spec.seedResizeFromW && spec.seedResizeFromH ? { width: spec.seedResizeFromW, height: spec.seedResizeFromH } : undefined,
    rng: spec.rng,
    clipSkip: spec.clipSkip,
    init: initImage ? { image: initImage, strength: spec.denoisingStrength ?? SPEC_DEFAULTS.denoisingStrength } : undefined,
    // A refiner without a switch point never runs (as in A1111).
    refiner: refiner && spec.refinerSwitchAt !== undefined ? { model: refiner, switchAt: spec.refinerSwitchAt } : undefined,
    device,
  };
}
