// The native /v1 request: its JSON schema (the single source for validation, types and /docs) and the
// mapping onto the job model. Bounds come from the server's limits, so /docs shows the real ones.
import type { RngSource, SamplingFlavour, SdeNoise } from '../../engine/index.ts';
import type { ImageFormat } from '../../storage/encode.ts';
import type { Limits } from '../../queue/config.ts';
import { MAX_DEEP_CACHE_INTERVAL, resolveSeed } from '../../engine/index.ts';
import { checkSpecLimits, SpecError, SPEC_DEFAULTS } from '../../queue/job-spec.ts';
import { leftOutFields } from '../model-presets.ts';
import type { JobKind, JobSpec, ResponseKind } from '../../queue/job-spec.ts';
import { PRIORITY_MAX, PRIORITY_MIN } from '../../queue/fairness.ts';

/** Native request JSON schema. Limits come from the server config, so the schema and /docs show real bounds. */
export function nativeRequestSchema(limits: Limits) {
  const prompt = { type: 'string', maxLength: limits.maxPromptChars };
  const dim = (max: number) => ({ type: 'integer', minimum: 64, maximum: max, multipleOf: 8 });
  const network = {
    type: 'object',
    additionalProperties: false,
    required: ['name'],
    properties: { name: { type: 'string', minLength: 1, maxLength: 300 }, weight: { type: 'number', minimum: -10, maximum: 10, default: 1 } },
  };
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
      guidance: {
        type: 'number',
        minimum: 0,
        maximum: 30,
        description: "FLUX.1 dev's distilled guidance (default 3.5); ignored by models without a guidance input (SD, SD3, FLUX.1 schnell).",
      },
      sampler: {
        type: 'string',
        minLength: 1,
        maxLength: 100,
        default: SPEC_DEFAULTS.sampler,
        description: 'A1111 sampler name (GET /v1/samplers), e.g. "Euler a", "DPM++ 2M".',
      },
      schedule: {
        type: 'string',
        minLength: 1,
        maxLength: 100,
        default: SPEC_DEFAULTS.schedule,
        description: 'Schedule label (GET /v1/schedules), e.g. "Karras".',
      },
      seed: { type: 'integer', minimum: -1, maximum: 4294967295, default: -1, description: '-1 = random; image i uses seed + i.' },
      subseed: { type: 'integer', minimum: -1, maximum: 4294967295, default: -1 },
      subseed_strength: { type: 'number', minimum: 0, maximum: 1, default: 0 },
      clip_skip: { type: 'integer', minimum: 1, maximum: 12 },
      eta: { type: 'number', minimum: 0, maximum: 1 },
      rng: { type: 'string', enum: ['cpu', 'philox'] },
      noise: {
        type: 'string',
        enum: ['brownian', 'gaussian'],
        description:
          'Noise of the SDE samplers (DPM++ SDE, 2M SDE, 2M SDE Heun, 3M SDE): "brownian" = A1111\'s Brownian tree, "gaussian" = fresh draws per step (diffusers). Default: brownian with flavour "a1111", else gaussian.',
      },
      flavour: {
        type: 'string',
        enum: ['diffusers', 'a1111'],
        description:
          'Sampling conventions where diffusers and A1111 differ (schedule arithmetic, starting noise scale, timesteps, SDE noise, pixel rounding). Default "diffusers"; "a1111" gives A1111\'s image for the same seed.',
      },
      init_image: { type: 'string', minLength: 1, description: 'img2img input: base64 or a data: URI (or a multipart file field).' },
      denoising_strength: { type: 'number', minimum: 0, maximum: 1, default: SPEC_DEFAULTS.denoisingStrength },
      refiner: { type: 'string', minLength: 1, maxLength: 500, description: 'SDXL refiner model (name or label); runs the last steps.' },
      refiner_switch_at: {
        type: 'number',
        minimum: 0,
        maximum: 1,
        default: 0.8,
        description: 'Fraction of the steps the base model runs before the refiner takes over.',
      },
      s_churn: { type: 'number', minimum: 0, maximum: 100, description: "k-diffusion stochasticity (A1111 s_churn); default: the sampler's." },
      s_tmin: { type: 'number', minimum: 0, maximum: 1000, description: 'Lowest sigma s_churn applies to.' },
      s_tmax: { type: 'number', minimum: 0, maximum: 1000, description: 'Highest sigma s_churn applies to (absent: no limit).' },
      s_noise: { type: 'number', minimum: 0, maximum: 2, description: 'Noise scale of stochastic steps.' },
      seed_resize_from_w: {
        ...dim(limits.maxWidth),
        description: 'Make the noise at this width, then fit it to width (A1111 "seed resize from"); needs seed_resize_from_h.',
      },
      seed_resize_from_h: { ...dim(limits.maxHeight), description: 'Make the noise at this height (see seed_resize_from_w).' },
      timeout_s: {
        type: 'number',
        exclusiveMinimum: 0,
        maximum: 86_400,
        description: "Stop the job after it has run this long; the server's job timeout applies when shorter.",
      },
      priority: {
        type: 'integer',
        minimum: PRIORITY_MIN,
        maximum: PRIORITY_MAX,
        description: `Queue priority, ${PRIORITY_MIN} to ${PRIORITY_MAX} (default 0): higher runs first (above 0: admin keys only); within one priority, API keys take turns.`,
      },
      webhook: {
        type: 'string',
        minLength: 1,
        maxLength: 2000,
        description: 'http(s) URL that gets the finished job (POST, JSON job view; retried on failure).',
      },
      hires: {
        type: 'object',
        additionalProperties: false,
        description: 'Hires fix: a second pass at a larger size.',
        properties: {
          scale: { type: 'number', minimum: 1, maximum: 8 },
          upscaler: { type: 'string', minLength: 1, maxLength: 200 },
          steps: { type: 'integer', minimum: 0, maximum: limits.maxSteps },
          denoising_strength: { type: 'number', minimum: 0, maximum: 1 },
          width: { ...dim(limits.maxWidth) },
          height: { ...dim(limits.maxHeight) },
          sampler: { type: 'string', minLength: 1, maxLength: 100 },
          prompt: prompt,
          negative_prompt: prompt,
        },
      },
      loras: { type: 'array', maxItems: 64, items: network, description: 'LoRAs to apply, by name (GET /v1/models?kind=lora).' },
      hypernetworks: { type: 'array', maxItems: 64, items: network },
      tiling: {
        enum: [true, false, 'x', 'y'],
        description: 'Seamless tiling: true wraps both axes (a texture that tiles in every direction), "x" left-right only, "y" top-bottom only.',
      },
      deep_cache: {
        type: 'object',
        additionalProperties: false,
        required: ['interval'],
        description:
          'Step reuse (DeepCache): every `interval`-th UNet evaluation runs the whole network, the ones between only its shallow layers on the cached deep features. Faster, approximate; off by default. UNet models (SD1/SD2/SDXL) only. See docs/step-reuse.md.',
        properties: {
          interval: { type: 'integer', minimum: 1, maximum: MAX_DEEP_CACHE_INTERVAL, description: '1 = off; 2 about halves the UNet work, 3 more.' },
          branch: {
            type: 'integer',
            minimum: 0,
            maximum: 32,
            description: 'Where the UNet is cut (DeepCache cache_branch_id): 0 (default) is the fastest; deeper is closer to the full result.',
          },
        },
      },
      restore_faces: {
        oneOf: [
          { type: 'boolean' },
          {
            type: 'object',
            additionalProperties: false,
            required: ['model'],
            properties: {
              model: { enum: ['CodeFormer', 'GFPGAN'] },
              weight: { type: 'number', minimum: 0, maximum: 1, description: "CodeFormer's fidelity: 0 strongest effect, 1 weakest (default 0.5)." },
              visibility: { type: 'number', minimum: 0, maximum: 1 },
            },
          },
        ],
        description:
          'Face restoration after decoding (A1111 "Restore faces"): true = CodeFormer, or {model, weight, visibility}. Needs the weight files in models/codeformer/ or gfpgan/ and models/facedetect/.',
      },
      transparent: {
        anyOf: [
          { type: 'boolean' },
          {
            type: 'object',
            additionalProperties: false,
            properties: {
              tta: {
                type: 'boolean',
                description: "The decoder's 8-pass test-time augmentation (default true); false: 1 pass, about 8x faster, rougher edges.",
              },
              method: {
                enum: ['attention', 'conv'],
                description: 'LayerDiffuse UNet patch: attention (default, layer_xl_transparent_attn) or conv (layer_xl_transparent_conv).',
              },
              weight: { type: 'number', minimum: 0, maximum: 2, description: 'The patch multiplier (default 1).' },
              preview: {
                type: 'boolean',
                description: "Also store each image's checkerboard preview (RGB PNG, 64-px grey cells) and return it as the image's `preview`.",
              },
            },
          },
        ],
        description: 'A transparent RGBA PNG/WebP (SDXL + LayerDiffuse files in models/layerdiffuse/): true, or {tta, method, weight, preview}.',
      },
      transparent_background: { type: 'boolean', description: 'The same as transparent: true.' },
      mask: {
        type: 'object',
        additionalProperties: false,
        required: ['image'],
        description: 'img2img inpainting mask.',
        properties: {
          image: { type: 'string', minLength: 1, description: 'base64 or a data: URI; white = repaint.' },
          blur: { type: 'integer', minimum: 0, maximum: 64, description: 'Gaussian blur of the mask edge in pixels (default 4).' },
          invert: { type: 'boolean' },
          fill: { type: 'integer', minimum: 0, maximum: 3, description: 'A1111 inpainting_fill: 0 fill, 1 original, 2 latent noise, 3 latent nothing.' },
          full_resolution: { type: 'boolean', description: 'A1111 "Only masked": process a crop around the mask at width x height (default false).' },
          padding: { type: 'integer', minimum: 0, maximum: 2048 },
          mode: {
            type: 'string',
            enum: ['a1111', 'diffusers'],
            description: '"a1111" (default): blur, masked content, paste-back. "diffusers": StableDiffusionInpaintPipeline behaviour.',
          },
        },
      },
      outpaint: {
        type: 'object',
        additionalProperties: false,
        description: 'img2img outpainting: grow init_image (fitted to width x height) by these margins in pixels and paint the new area.',
        properties: {
          left: { type: 'integer', minimum: 0, maximum: 2048 },
          right: { type: 'integer', minimum: 0, maximum: 2048 },
          top: { type: 'integer', minimum: 0, maximum: 2048 },
          bottom: { type: 'integer', minimum: 0, maximum: 2048 },
          fill: { type: 'integer', minimum: 0, maximum: 3, description: 'How the new area starts (inpainting_fill; default 0, fill).' },
          blur: { type: 'integer', minimum: 0, maximum: 64 },
        },
      },
      resize_mode: { type: 'integer', minimum: 0, maximum: 3, description: 'How init_image is fitted: 0 just resize, 1 crop, 2 fill, 3 latent upscale.' },
      initial_noise_multiplier: { type: 'number', minimum: 0, maximum: 2 },
      s_min_uncond: { type: 'number', minimum: 0, maximum: 1000, description: 'Skip the negative prompt below this sigma.' },
      eta_noise_seed_delta: { type: 'integer', minimum: 0, maximum: 4294967295, description: 'A1111 ENSD.' },
      vae: {
        type: 'string',
        minLength: 1,
        maxLength: 300,
        description:
          'A separate VAE by name (GET /v1/models?kind=vae; models/vae/); "None" = the checkpoint VAE, "Automatic" = one named like the checkpoint, else the server --vae. Default: the server --vae.',
      },
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
  guidance?: number;
  sampler?: string;
  schedule?: string;
  seed?: number;
  subseed?: number;
  subseed_strength?: number;
  clip_skip?: number;
  eta?: number;
  rng?: RngSource;
  noise?: SdeNoise;
  flavour?: SamplingFlavour;
  init_image?: string;
  denoising_strength?: number;
  refiner?: string;
  refiner_switch_at?: number;
  output?: { format?: string; quality?: number; response?: ResponseKind };
  s_churn?: number;
  s_tmin?: number;
  s_tmax?: number;
  s_noise?: number;
  seed_resize_from_w?: number;
  seed_resize_from_h?: number;
  timeout_s?: number;
  priority?: number;
  webhook?: string;
  hires?: {
    scale?: number;
    upscaler?: string;
    steps?: number;
    denoising_strength?: number;
    width?: number;
    height?: number;
    sampler?: string;
    prompt?: string;
    negative_prompt?: string;
  };
  loras?: Array<{ name: string; weight?: number }>;
  hypernetworks?: Array<{ name: string; weight?: number }>;
  tiling?: boolean | 'x' | 'y';
  deep_cache?: { interval: number; branch?: number };
  restore_faces?: boolean | { model: 'CodeFormer' | 'GFPGAN'; weight?: number; visibility?: number };
  transparent?: boolean | { tta?: boolean; method?: 'attention' | 'conv'; weight?: number; preview?: boolean };
  transparent_background?: boolean;
  mask?: { image: string; blur?: number; invert?: boolean; fill?: number; full_resolution?: boolean; padding?: number; mode?: 'a1111' | 'diffusers' };
  outpaint?: { left?: number; right?: number; top?: number; bottom?: number; fill?: number; blur?: number };
  resize_mode?: number;
  initial_noise_multiplier?: number;
  s_min_uncond?: number;
  eta_noise_seed_delta?: number;
  vae?: string;
}

/**
 * Native request -> JobSpec, with the cross-field checks a schema cannot express. `initImage` is the stored
 * name of the already-decoded upload, if any.
 */
/** The request fields behind each field a model preset can fill (see model-presets.ts). */
const NATIVE_PRESET_SOURCES = {
  steps: ['steps'],
  cfgScale: ['cfg_scale'],
  sampler: ['sampler'],
  schedule: ['schedule'],
  width: ['width'],
  height: ['height'],
  clipSkip: ['clip_skip'],
} as const;

export function specFromNative(body: NativeRequest, limits: Limits, initImage?: string, sent?: Record<string, unknown>): JobSpec {
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
    ...(body.guidance !== undefined ? { guidance: body.guidance } : {}),
    sampler: body.sampler ?? SPEC_DEFAULTS.sampler,
    schedule: body.schedule ?? SPEC_DEFAULTS.schedule,
    seed: resolveSeed(body.seed),
    subseed: resolveSeed(body.subseed, Math.random, 'subseed'),
    subseedStrength: body.subseed_strength ?? 0,
    clipSkip: body.clip_skip,
    eta: body.eta,
    rng: body.rng,
    sdeNoise: body.noise,
    flavour: body.flavour,
    initImage,
    denoisingStrength: kind === 'img2img' ? (body.denoising_strength ?? SPEC_DEFAULTS.denoisingStrength) : undefined,
    refiner: body.refiner,
    refinerSwitchAt: body.refiner ? (body.refiner_switch_at ?? 0.8) : undefined,
    output: { format, quality: body.output?.quality ?? 90, response: body.output?.response ?? 'base64' },
    sChurn: body.s_churn,
    sTmin: body.s_tmin,
    sTmax: body.s_tmax,
    sNoise: body.s_noise,
    seedResizeFromW: body.seed_resize_from_w,
    seedResizeFromH: body.seed_resize_from_h,
    timeoutMs: body.timeout_s !== undefined ? Math.round(body.timeout_s * 1000) : undefined,
    webhook: body.webhook !== undefined ? { url: body.webhook, format: 'native' } : undefined,
    priority: body.priority,
    hires: body.hires && {
      scale: body.hires.scale,
      upscaler: body.hires.upscaler,
      steps: body.hires.steps,
      denoisingStrength: body.hires.denoising_strength,
      width: body.hires.width,
      height: body.hires.height,
      sampler: body.hires.sampler,
      prompt: body.hires.prompt,
      negativePrompt: body.hires.negative_prompt,
    },
    loras: body.loras?.map((l) => ({ name: l.name, weight: l.weight ?? 1 })),
    hypernetworks: body.hypernetworks?.map((l) => ({ name: l.name, weight: l.weight ?? 1 })),
    tiling: body.tiling,
    deepCache: body.deep_cache,
    restoreFaces: body.restore_faces === true ? { model: 'CodeFormer' } : body.restore_faces || undefined,
    transparentBackground: body.transparent !== undefined && body.transparent !== false ? true : body.transparent_background,
    transparentOptions: typeof body.transparent === 'object' ? body.transparent : undefined,
    sourceFields: body.transparent_background !== undefined && body.transparent === undefined ? { transparentBackground: 'transparent_background' } : undefined,
    // The mask image itself is decoded and stored by the route (mask.image or a multipart `mask` file).
    mask: body.mask && {
      blur: body.mask.blur,
      invert: body.mask.invert,
      fill: body.mask.fill,
      fullResolution: body.mask.full_resolution,
      padding: body.mask.padding,
      mode: body.mask.mode,
    },
    outpaint: body.outpaint,
    resizeMode: body.resize_mode,
    initialNoiseMultiplier: body.initial_noise_multiplier,
    sMinUncond: body.s_min_uncond,
    etaNoiseSeedDelta: body.eta_noise_seed_delta,
    vae: body.vae,
    leftOut: leftOutFields(sent, NATIVE_PRESET_SOURCES),
  };
  if ((body.seed_resize_from_w === undefined) !== (body.seed_resize_from_h === undefined)) {
    throw new SpecError(
      body.seed_resize_from_w === undefined ? 'seed_resize_from_w' : 'seed_resize_from_h',
      'give seed_resize_from_w and seed_resize_from_h together',
    );
  }
  checkSpecLimits(spec, limits);
  return spec;
}
