// The one job model every API surface maps onto: a validated, fully-defaulted native request. Native routes
// build it from the JSON below; compat adapters (A1111, OpenAI, RunPod, seeds) build it from their own
// shapes and call jobs.submit(). toGenerateRequest() is the single bridge to the engine contract.
import {
  hiresTarget,
  type GenerateRequest,
  type InitResizeMode,
  type MaskSettings,
  type ModelRef,
  type RawImage,
  type RngSource,
  type SamplingFlavour,
  type SdeNoise,
} from '../engine/index.ts';
import type { TransparentSettings } from '../engine/index.ts';
import type { ImageFormat } from '../storage/encode.ts';
import type { Limits } from './config.ts';
import { PRIORITY_MAX, PRIORITY_MIN } from './fairness.ts';

/**
 * 'upscale': A1111 Extras, the stored input image through `upscale` (the generation fields are unused).
 * 'embed-image' / 'interrogate': image understanding of the stored input (`vision`); the result is data, not images.
 */
export type JobKind = 'txt2img' | 'img2img' | 'upscale' | 'embed-image' | 'interrogate';
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
  /**
   * FLUX.1 dev's distilled guidance (native `guidance`, Forge's `distilled_cfg_scale`); used by models whose
   * transformer takes it and ignored by the others, as Forge does. Undefined: 3.5, or cfgScale with cfgAsGuidance.
   */
  guidance?: number;
  /** diffusers-style surfaces (seed 003): `guidance_scale` is the distilled guidance on guidance-distilled models. */
  cfgAsGuidance?: boolean;
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
  /** Sampling conventions (engine GenerateRequest.flavour): A1111-style surfaces ask for 'a1111'. */
  flavour?: SamplingFlavour;
  /** SDE samplers' noise: 'brownian' (A1111's Brownian tree) or 'gaussian'; absent: brownian with the a1111 flavour. */
  sdeNoise?: SdeNoise;
  /** img2img: the stored, already-validated input image (see inputs.ts) and how much to change it. */
  initImage?: string;
  denoisingStrength?: number;
  /** SDXL refiner (model name or label) and the fraction of steps after which it takes over (A1111 semantics). */
  refiner?: string;
  refinerSwitchAt?: number;
  output: OutputSpec;
  /** Stop the job once it has run this long (ms); the server's job timeout still applies when it is shorter. */
  timeoutMs?: number;
  /** POST the finished job to this URL (retried on failure); see webhooks.ts. */
  webhook?: WebhookSpec;
  /** Queue priority, PRIORITY_MIN..PRIORITY_MAX (fairness.ts), higher runs first; absent: 0. */
  priority?: number;

  // Features a request can ask for, whichever surface it came through. capabilities.ts answers 501 for the
  // ones the engine cannot do yet; each lands here as structured data, not as a surface's field.
  /** Hires fix: a second denoise pass at a larger size. */
  hires?: HiresSpec;
  /** kind 'upscale': how the input image (initImage) is upscaled. */
  upscale?: UpscaleSpec;
  /** kinds 'embed-image' and 'interrogate': the CLIP model and options (the image is initImage). */
  vision?: VisionSpec;
  loras?: NetworkSpec[];
  hypernetworks?: NetworkSpec[];
  /** Seamless tiling (circular padding): true on both axes (A1111 `tiling`), 'x' or 'y' on one; false/absent: none. */
  tiling?: boolean | 'x' | 'y';
  /** Step reuse (DeepCache): whole UNet every `interval`-th evaluation, shallow layers between; UNet models only. */
  deepCache?: { interval: number; branch?: number };
  /** A1111 "Restore faces" after decoding (the executor resolves the weight files). */
  restoreFaces?: RestoreFacesSpec;
  /** An alpha channel in the result (LayerDiffuse-style transparency). */
  transparentBackground?: boolean;
  /** How the transparent image is made: LayerDiffuse's UNet patch ('attention' default, or 'conv') at `weight` (default 1), the decoder TTA (default on). */
  transparentOptions?: { tta?: boolean; method?: 'attention' | 'conv'; weight?: number; preview?: boolean };
  /** img2img inpainting. */
  mask?: MaskSpec;
  /** img2img outpainting: grow the init image by these margins (pixels) and paint the new area. */
  outpaint?: OutpaintSpec;
  /** How the init image is fitted to width x height (A1111: 0 just resize, 1 crop, 2 fill, 3 latent upscale). */
  resizeMode?: number;
  /** How many different input images the request carried (one is used per job). */
  inputImageCount?: number;
  initialNoiseMultiplier?: number;
  /** Skip the negative prompt below this sigma (A1111 s_min_uncond). */
  sMinUncond?: number;
  /** A1111's eta noise seed delta (ENSD). */
  etaNoiseSeedDelta?: number;
  /** A separate VAE by name. */
  vae?: string;
  /**
   * For error messages: the request field each requested feature came from, as the client's surface names it
   * (A1111 asks for hires with enable_hr). Absent: the native field name.
   */
  sourceFields?: Partial<Record<keyof JobSpec, string>>;
  /** A chunk of a batch split over workers (batch-split.ts): only these images of the batch, each as in the whole batch. */
  batchWindow?: { start: number; count: number };
  /** Generation fields the request left out (its surface filled in its own defaults); a model preset may set them. */
  leftOut?: PresetField[];
  /** Set at submission, for logs and metrics: the API surface, the model the request resolved to, the preset applied. */
  origin?: { surface?: string; model?: string; preset?: string };
}

/** The fields a per-model preset (config `modelPresets`) can fill in. */
export type PresetField = 'steps' | 'cfgScale' | 'sampler' | 'schedule' | 'width' | 'height' | 'clipSkip';

export interface WebhookSpec {
  url: string;
  /** The body's shape: a format registered with the WebhookSender (RunPod's job object, ...); default native. */
  format?: string;
}

export interface HiresSpec {
  scale?: number;
  upscaler?: string;
  steps?: number;
  denoisingStrength?: number;
  /** Target size instead of scale. */
  width?: number;
  height?: number;
  sampler?: string;
  /** hr_scheduler; absent = the first pass's. */
  schedule?: string;
  /** hr_cfg; absent = cfg_scale. */
  cfgScale?: number;
  prompt?: string;
  negativePrompt?: string;
}

/** Face restoration: the restorer, CodeFormer's fidelity weight (0..1, default 0.5), Extras' visibility (0..1). */
export interface RestoreFacesSpec {
  model: 'CodeFormer' | 'GFPGAN';
  weight?: number;
  visibility?: number;
}

/** A1111 Extras upscale settings (upscaling_resize, upscaling_resize_w/h, upscaling_crop, upscaler_1/2, ...). */
export interface UpscaleSpec {
  /** 0 = by `scale`, 1 = to width x height. */
  mode: 0 | 1;
  scale?: number;
  width?: number;
  height?: number;
  crop?: boolean;
  upscaler1: string;
  upscaler2?: string;
  upscaler2Visibility?: number;
  /** Extras face restoration after the upscale, in A1111's order (GFPGAN, then CodeFormer), each blended by visibility. */
  restoreFaces?: RestoreFacesSpec[];
}

/** Image understanding (kinds 'embed-image', 'interrogate'); `model` names the checkpoint whose VAE encodes. */
export interface VisionSpec {
  /** A model in models/clip_vision/ by name; undefined = the server's choice (see server/models/clip-vision.ts). */
  clipModel?: string;
  /** embed-image: also the checkpoint VAE's latent (default true). */
  vae?: boolean;
  /** embed-image: the VAE input size (square); undefined = the checkpoint's native size. */
  vaeSize?: number;
  /** Seed 003: resize the image to this square (Pillow BICUBIC) first, as its server did (512). */
  squareResize?: number;
  /** interrogate: "(phrase:probability)" instead of bare phrases (A1111 interrogate_return_ranks). */
  returnRanks?: boolean;
}

/** Largest VAE input side of an image embedding (the VAE's memory grows with it as for img2img). */
export const MAX_VISION_VAE_SIZE = 2048;

function checkVisionSpec(spec: JobSpec, limits: Limits): void {
  const v = spec.vision ?? {};
  if (!spec.initImage) throw new SpecError('image', `is required for ${spec.kind === 'interrogate' ? 'interrogation' : 'an image embedding'}`);
  const max = Math.min(MAX_VISION_VAE_SIZE, limits.maxWidth, limits.maxHeight);
  if (v.vaeSize !== undefined && !(Number.isInteger(v.vaeSize) && v.vaeSize >= 8 && v.vaeSize <= max && v.vaeSize % 8 === 0))
    throw new SpecError('vae_size', `must be a multiple of 8 from 8 to ${max}, got ${v.vaeSize}`);
  if (v.squareResize !== undefined && !(Number.isInteger(v.squareResize) && v.squareResize >= 1 && v.squareResize <= max))
    throw new SpecError('square_resize', `must be an integer from 1 to ${max}, got ${v.squareResize}`);
}

/** Largest upscale factor (A1111's slider goes to 8). */
export const MAX_UPSCALE_FACTOR = 8;

/** An upscale job's limits: the input is bounded by the upload limits, the factor and target size here. */
function checkUpscaleSpec(spec: JobSpec, limits: Limits): void {
  const u = spec.upscale;
  if (!u) throw new SpecError('upscale', 'is required for an upscale job');
  if (!spec.initImage) throw new SpecError('image', 'is required for an upscale job');
  if (u.mode === 0 && !(u.scale !== undefined && Number.isFinite(u.scale) && u.scale >= 1 && u.scale <= MAX_UPSCALE_FACTOR))
    throw new SpecError('upscaling_resize', `must be from 1 to ${MAX_UPSCALE_FACTOR}, got ${u.scale}`);
  if (u.mode === 1) {
    for (const [field, v, max] of [
      ['upscaling_resize_w', u.width, limits.maxWidth * MAX_UPSCALE_FACTOR],
      ['upscaling_resize_h', u.height, limits.maxHeight * MAX_UPSCALE_FACTOR],
    ] as const) {
      if (v === undefined || !Number.isInteger(v) || v < 1 || v > max) throw new SpecError(field, `must be an integer from 1 to ${max}, got ${v}`);
    }
  }
  const vis = u.upscaler2Visibility;
  if (vis !== undefined && !(vis >= 0 && vis <= 1)) throw new SpecError('extras_upscaler_2_visibility', `must be from 0 to 1, got ${vis}`);
  const q = spec.output.quality;
  if (!Number.isInteger(q) || q < 1 || q > 100) throw new SpecError('output.quality', `must be an integer from 1 to 100, got ${q}`);
}

/** A LoRA (or hypernetwork) applied with a weight; `tag` is the prompt tag it came from, if any. */
export interface NetworkSpec {
  name: string;
  /** The multiplier (LoRA: the text encoders'; the UNet's too unless `unetWeight` is set). */
  weight: number;
  /** LoRA: a separate UNet multiplier (A1111 `<lora:name:te:unet>` / `unet=`). */
  unetWeight?: number;
  tag?: string;
}

/** LoRA multipliers outside this range are refused (A1111's UI slider is -1..2; trainers' files reach ~3). */
export const LORA_WEIGHT_LIMIT = 5;

/** Throws SpecError('loras') for a multiplier that is not a number in [-5, 5]. */
export function checkLoraWeights(spec: JobSpec): void {
  for (const l of spec.loras ?? []) {
    for (const w of [l.weight, l.unetWeight]) {
      if (w === undefined) continue;
      if (!Number.isFinite(w) || Math.abs(w) > LORA_WEIGHT_LIMIT) {
        throw new SpecError(
          spec.sourceFields?.loras ?? 'loras',
          `LoRA "${l.name}" has weight ${w}${l.tag ? ` (tag ${l.tag})` : ''}; weights must be numbers from -${LORA_WEIGHT_LIMIT} to ${LORA_WEIGHT_LIMIT}`,
        );
      }
    }
  }
}

export interface MaskSpec {
  /** Stored name of the mask image (stored after the capability check). */
  image?: string;
  blur?: number;
  invert?: boolean;
  /** A1111 inpainting_fill: 0 fill, 1 original, 2 latent noise, 3 latent nothing. */
  fill?: number;
  fullResolution?: boolean;
  padding?: number;
  /** Separate horizontal / vertical blur (A1111 mask_blur_x / mask_blur_y); `blur` sets both. */
  blurX?: number;
  blurY?: number;
  /** Round the latent mask (A1111 mask_round, default true). */
  round?: boolean;
  /** 'a1111' (default) or 'diffusers' (StableDiffusionInpaintPipeline behaviour). */
  mode?: 'a1111' | 'diffusers';
}

export interface OutpaintSpec {
  left?: number;
  right?: number;
  top?: number;
  bottom?: number;
  /** A1111 inpainting_fill for the new area. */
  fill?: number;
  blur?: number;
}

/** The largest mask blur a request may ask for, in pixels. */
export const MAX_MASK_BLUR = 64;

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

/** A complete spec: the defaults, then `fields`. Seeds are 0 unless given (submitters resolve random ones). */
export function specWithDefaults(fields: Partial<JobSpec> & Pick<JobSpec, 'prompts'>): JobSpec {
  return {
    kind: 'txt2img',
    negativePrompts: [''],
    imagesPerPrompt: 1,
    width: SPEC_DEFAULTS.width,
    height: SPEC_DEFAULTS.height,
    steps: SPEC_DEFAULTS.steps,
    cfgScale: SPEC_DEFAULTS.cfgScale,
    sampler: SPEC_DEFAULTS.sampler,
    schedule: SPEC_DEFAULTS.schedule,
    seed: 0,
    subseed: 0,
    subseedStrength: 0,
    output: { ...SPEC_DEFAULTS.output },
    ...fields,
  };
}

/** A request error that names the offending field; becomes a 400. */
export class SpecError extends Error {
  constructor(
    readonly field: string,
    message: string,
  ) {
    super(`${field}: ${message}`);
    this.name = 'SpecError';
  }
}

/** Limits every spec must respect, whichever surface built it. Throws SpecError naming the field. */
export function checkSpecLimits(spec: JobSpec, limits: Limits): void {
  const p = spec.priority;
  if (p !== undefined && (!Number.isInteger(p) || p < PRIORITY_MIN || p > PRIORITY_MAX))
    throw new SpecError(spec.sourceFields?.priority ?? 'priority', `must be an integer from ${PRIORITY_MIN} to ${PRIORITY_MAX} (higher runs first), got ${p}`);
  if (spec.kind === 'upscale') {
    checkUpscaleSpec(spec, limits);
    return;
  }
  if (spec.kind === 'embed-image' || spec.kind === 'interrogate') {
    checkVisionSpec(spec, limits);
    return;
  }
  const dims: Array<['width' | 'height', number]> = [
    ['width', limits.maxWidth],
    ['height', limits.maxHeight],
  ];
  for (const [field, max] of dims) {
    const v = spec[field];
    if (!Number.isInteger(v) || v < 64 || v > max) throw new SpecError(field, `must be an integer from 64 to ${max}, got ${v}`);
    if (v % 8 !== 0) throw new SpecError(field, `must be a multiple of 8, got ${v}`);
  }
  if (spec.width * spec.height > limits.maxPixels) {
    throw new SpecError('width', `width x height = ${spec.width * spec.height} pixels exceeds the limit of ${limits.maxPixels}`);
  }
  if (spec.hires) checkHiresLimits(spec, spec.hires, limits);
  if (!Number.isInteger(spec.steps) || spec.steps < 1 || spec.steps > limits.maxSteps)
    throw new SpecError('steps', `must be from 1 to ${limits.maxSteps}, got ${spec.steps}`);
  if (spec.prompts.length < 1) throw new SpecError('prompts', 'must hold at least one prompt');
  const total = spec.prompts.length * spec.imagesPerPrompt;
  if (!Number.isInteger(spec.imagesPerPrompt) || spec.imagesPerPrompt < 1 || total > limits.maxImages) {
    throw new SpecError('images_per_prompt', `prompts x images_per_prompt = ${total}; the limit is ${limits.maxImages} images per request`);
  }
  for (const [field, list] of [
    ['prompt', spec.prompts],
    ['negative_prompt', spec.negativePrompts],
  ] as const) {
    for (const p of list) if (p.length > limits.maxPromptChars) throw new SpecError(field, `is ${p.length} characters; the limit is ${limits.maxPromptChars}`);
  }
  if (!(spec.cfgScale >= 0 && spec.cfgScale <= 30)) throw new SpecError('cfg_scale', `must be from 0 to 30, got ${spec.cfgScale}`);
  if (spec.guidance !== undefined && !(spec.guidance >= 0 && spec.guidance <= 30)) {
    throw new SpecError(spec.sourceFields?.guidance ?? 'guidance', `must be from 0 to 30, got ${spec.guidance}`);
  }
  if (spec.kind === 'img2img' && !spec.initImage) throw new SpecError('init_image', 'is required for img2img');
  if (spec.resizeMode !== undefined && ![0, 1, 2, 3].includes(spec.resizeMode)) {
    throw new SpecError('resize_mode', `must be 0 (just resize), 1 (crop and resize), 2 (resize and fill) or 3 (latent upscale), got ${spec.resizeMode}`);
  }
  const resize: Array<[string, number | undefined, number]> = [
    ['seed_resize_from_w', spec.seedResizeFromW, limits.maxWidth],
    ['seed_resize_from_h', spec.seedResizeFromH, limits.maxHeight],
  ];
  for (const [field, v, max] of resize) {
    if (v !== undefined && (!Number.isInteger(v) || v < 64 || v > max)) throw new SpecError(field, `must be an integer from 64 to ${max}, got ${v}`);
  }
  const q = spec.output.quality;
  if (!Number.isInteger(q) || q < 1 || q > 100) throw new SpecError('output.quality', `must be an integer from 1 to 100, got ${q}`);
  // 12 is the deepest any supported text encoder allows; the engine checks the loaded model's own layer count.
  const clip = spec.clipSkip;
  if (clip !== undefined && (!Number.isInteger(clip) || clip < 1 || clip > 12))
    throw new SpecError('clip_skip', `must be an integer from 1 to 12, got ${clip}`);
  if (spec.timeoutMs !== undefined && !(Number.isFinite(spec.timeoutMs) && spec.timeoutMs > 0))
    throw new SpecError('timeout_s', `must be a positive number of seconds, got ${spec.timeoutMs / 1000}`);
  if (spec.webhook) checkWebhookUrl(spec.webhook.url);
  checkMaskSpec(spec);
}

function checkMaskSpec(spec: JobSpec): void {
  const m = spec.mask;
  if ((m || spec.outpaint) && spec.kind !== 'img2img') throw new SpecError(m ? 'mask' : 'outpaint', 'needs an init image: use img2img');
  if (m && spec.outpaint) throw new SpecError('outpaint', 'send either a mask or outpaint margins, not both');
  for (const [field, v] of [
    ['mask_blur', m?.blur],
    ['mask_blur_x', m?.blurX],
    ['mask_blur_y', m?.blurY],
    ['outpaint.blur', spec.outpaint?.blur],
  ] as const)
    if (v !== undefined && !(Number.isFinite(v) && v >= 0 && v <= MAX_MASK_BLUR)) throw new SpecError(field, `must be from 0 to ${MAX_MASK_BLUR}, got ${v}`);
  for (const [field, v] of [
    ['inpainting_fill', m?.fill],
    ['outpaint.fill', spec.outpaint?.fill],
  ] as const)
    if (v !== undefined && ![0, 1, 2, 3].includes(v))
      throw new SpecError(field, `must be 0 (fill), 1 (original), 2 (latent noise) or 3 (latent nothing), got ${v}`);
  if (m?.padding !== undefined && !(Number.isInteger(m.padding) && m.padding >= 0 && m.padding <= 2048))
    throw new SpecError('inpaint_full_res_padding', `must be an integer from 0 to 2048, got ${m.padding}`);
  const o = spec.outpaint;
  if (o) {
    for (const side of ['left', 'right', 'top', 'bottom'] as const) {
      const v = o[side];
      if (v !== undefined && !(Number.isInteger(v) && v >= 0 && v <= 2048))
        throw new SpecError(`outpaint.${side}`, `must be an integer from 0 to 2048, got ${v}`);
    }
    if (!((o.left ?? 0) + (o.right ?? 0) + (o.top ?? 0) + (o.bottom ?? 0) > 0)) throw new SpecError('outpaint', 'give at least one margin above 0');
  }
}

/** The hires size (A1111's rule) within the pixel limits; fields named as the client's surface calls them. */
function checkHiresLimits(spec: JobSpec, h: HiresSpec, limits: Limits): void {
  const a1111 = spec.sourceFields?.hires === 'enable_hr';
  const field = (native: string, a: string) => (a1111 ? a : `hires.${native}`);
  const sizeField = h.width || h.height ? field(h.width ? 'width' : 'height', h.width ? 'hr_resize_x' : 'hr_resize_y') : field('scale', 'hr_scale');
  if (spec.kind !== 'txt2img') throw new SpecError(spec.sourceFields?.hires ?? 'hires', 'hires fix is a txt2img feature');
  if (h.scale !== undefined && !(Number.isFinite(h.scale) && h.scale >= 1 && h.scale <= 8))
    throw new SpecError(field('scale', 'hr_scale'), `must be from 1 to 8, got ${h.scale}`);
  if (h.denoisingStrength !== undefined && !(h.denoisingStrength > 0 && h.denoisingStrength <= 1))
    throw new SpecError('denoising_strength', `must be above 0 and at most 1 with hires fix, got ${h.denoisingStrength}`);
  if (h.steps !== undefined && (!Number.isInteger(h.steps) || h.steps < 0 || h.steps > limits.maxSteps))
    throw new SpecError(field('steps', 'hr_second_pass_steps'), `must be an integer from 0 to ${limits.maxSteps}, got ${h.steps}`);
  const t = hiresTarget(spec.width, spec.height, { scale: h.scale, resizeX: h.width, resizeY: h.height });
  if (t.width > limits.maxWidth || t.height > limits.maxHeight || t.width * t.height > limits.maxPixels) {
    throw new SpecError(
      sizeField,
      `the hires size ${t.width}x${t.height} exceeds the limits (at most ${limits.maxWidth}x${limits.maxHeight} and ${limits.maxPixels} pixels); lower it`,
    );
  }
  if (t.width < 64 || t.height < 64) throw new SpecError(sizeField, `the hires size ${t.width}x${t.height} is below 64 pixels on a side`);
}

/** Webhooks go to http(s) URLs only (no file:, data:, ...). Throws SpecError('webhook'). */
export function checkWebhookUrl(url: string): void {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new SpecError('webhook', `is not a URL: ${JSON.stringify(url.slice(0, 200))}`);
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') throw new SpecError('webhook', `must be an http or https URL, got ${parsed.protocol}`);
  if (url.length > 2000) throw new SpecError('webhook', 'is longer than 2000 characters');
}

/** The number of images a spec produces. */
export function imageCount(spec: JobSpec): number {
  return spec.prompts.length * spec.imagesPerPrompt;
}

/** The three weight files of a face restorer (resolved from the models folder by the server). */
export interface FaceRestoreFiles {
  restorerPath: string;
  detectorPath: string;
  parserPath: string;
}

/** Throws SpecError(field) unless a face-restoration spec is a known model with weight/visibility in 0..1. */
export function checkRestoreFaces(r: RestoreFacesSpec, field = 'restore_faces'): void {
  if (r.model !== 'CodeFormer' && r.model !== 'GFPGAN')
    throw new SpecError(`${field}.model`, `must be "CodeFormer" or "GFPGAN", got ${JSON.stringify(r.model)}`);
  for (const key of ['weight', 'visibility'] as const) {
    const v = r[key];
    if (v !== undefined && !(typeof v === 'number' && Number.isFinite(v) && v >= 0 && v <= 1))
      throw new SpecError(`${field}.${key}`, `must be a number from 0 to 1, got ${JSON.stringify(v)}`);
  }
}

/** JobSpec -> the engine's request. The model and init image are resolved by the caller (executor). */
export function toGenerateRequest(
  spec: JobSpec,
  model: ModelRef,
  initImage?: RawImage,
  device?: GenerateRequest['device'],
  refiner?: ModelRef,
  inputs: {
    loraPaths?: ReadonlyMap<string, string>;
    hiresUpscalerPath?: string;
    mask?: RawImage;
    transparent?: TransparentSettings;
    faceFiles?: FaceRestoreFiles;
  } = {},
): GenerateRequest {
  return {
    model,
    prompts: spec.prompts,
    negativePrompt: spec.negativePrompts.length === 1 ? spec.negativePrompts[0] : spec.negativePrompts,
    imagesPerPrompt: spec.imagesPerPrompt,
    width: spec.width,
    height: spec.height,
    steps: spec.steps,
    cfgScale: spec.cfgScale,
    ...(spec.guidance !== undefined ? { guidance: spec.guidance } : {}),
    ...(spec.cfgAsGuidance ? { guidanceFromCfg: true } : {}),
    sampler: spec.sampler,
    schedule: spec.schedule,
    samplerOptions: { eta: spec.eta, sChurn: spec.sChurn, sTmin: spec.sTmin, sTmax: spec.sTmax, sNoise: spec.sNoise },
    seed: spec.seed,
    variation: { seed: spec.subseed, strength: spec.subseedStrength },
    seedResizeFrom: spec.seedResizeFromW && spec.seedResizeFromH ? { width: spec.seedResizeFromW, height: spec.seedResizeFromH } : undefined,
    rng: spec.rng,
    flavour: spec.flavour,
    sdeNoise: spec.sdeNoise,
    clipSkip: spec.clipSkip,
    init: initImage
      ? {
          image: initImage,
          strength: spec.denoisingStrength ?? SPEC_DEFAULTS.denoisingStrength,
          noiseMultiplier: spec.initialNoiseMultiplier,
          resizeMode: spec.resizeMode ? (spec.resizeMode as InitResizeMode) : undefined,
        }
      : undefined,
    // A refiner without a switch point never runs (as in A1111).
    refiner: refiner && spec.refinerSwitchAt !== undefined ? { model: refiner, switchAt: spec.refinerSwitchAt } : undefined,
    tiling: spec.tiling === true ? 'xy' : spec.tiling || undefined,
    deepCache: spec.deepCache,
    loras: spec.loras?.length
      ? spec.loras.map((l) => ({ name: l.name, path: inputs.loraPaths?.get(l.name) ?? l.name, te: l.weight, unet: l.unetWeight ?? l.weight }))
      : undefined,
    hires: spec.hires && {
      scale: spec.hires.scale,
      resizeX: spec.hires.width,
      resizeY: spec.hires.height,
      upscaler: spec.hires.upscaler ?? 'Latent',
      upscalerPath: inputs.hiresUpscalerPath,
      steps: spec.hires.steps,
      denoisingStrength: spec.hires.denoisingStrength ?? SPEC_DEFAULTS.denoisingStrength,
      sampler: spec.hires.sampler,
      schedule: spec.hires.schedule,
      prompt: spec.hires.prompt,
      negativePrompt: spec.hires.negativePrompt,
      cfgScale: spec.hires.cfgScale,
    },
    mask: inputs.mask && spec.mask ? maskSettings(spec.mask, inputs.mask) : undefined,
    outpaint: spec.outpaint && { ...spec.outpaint, fill: spec.outpaint.fill as 0 | 1 | 2 | 3 | undefined },
    transparent: inputs.transparent,
    restoreFaces: spec.restoreFaces && inputs.faceFiles ? { ...spec.restoreFaces, ...inputs.faceFiles } : undefined,
    batchWindow: spec.batchWindow,
    device,
  };
}

function maskSettings(m: MaskSpec, image: RawImage): MaskSettings {
  return {
    image,
    mode: m.mode,
    blurX: m.blurX ?? m.blur,
    blurY: m.blurY ?? m.blur,
    fill: m.fill as 0 | 1 | 2 | 3 | undefined,
    fullResolution: m.fullResolution,
    padding: m.padding,
    invert: m.invert,
    round: m.round,
  };
}
