// The native /v1 request: its JSON schema (the single source for validation, types and /docs) and the
// mapping onto the job model. Bounds come from the server's limits, so /docs shows the real ones.
import type { RngSource } from '../../engine/api.ts';
import type { ImageFormat } from '../../storage/encode.ts';
import type { Limits } from '../../queue/config.ts';
import { checkSpecLimits, resolveSeed, SpecError, SPEC_DEFAULTS } from '../../queue/job-spec.ts';
import type { JobKind, JobSpec, ResponseKind } from '../../queue/job-spec.ts';

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

