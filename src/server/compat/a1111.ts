// AUTOMATIC1111 WebUI API (/sdapi/v1/*), v1.10 shapes: txt2img / img2img map onto one native job and block
// until it is done (A1111 clients expect that). A1111's state is process-global; Kiln's is per API key: progress,
// interrupt and skip see and act on the caller's own jobs (admin keys, and a server without keys, on all), and
// settings are per key (key-settings.ts; which ones: a1111-options.ts). Discovery lists come from the registry
// and the engine's own lists.
// Unknown request fields are ignored, as A1111 does. Errors use A1111's {error, detail, body, errors} shape,
// schema errors FastAPI's 422 {detail: [{loc, msg, type}]}.
import { leftOutFields, sentFields } from '../model-presets.ts';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { loraMetadata } from '../models/loras.ts';
import { findTaesdDecoders } from '../models/taesd.ts';
import { a1111Embeddings } from '../models/embeddings.ts';
import { basename } from 'node:path';
import type { KilnServices } from '../services.ts';
import type { Job } from '../../queue/job.ts';
import { SPEC_DEFAULTS, type JobSpec, type RestoreFacesSpec } from '../../queue/job-spec.ts';
import { resolveSeed } from '../../engine/index.ts';
import type { ImageFormat } from '../../storage/encode.ts';
import { readInfotext } from '../../storage/encode.ts';
import { readPngText } from '../../storage/png-text.ts';
import { decodeBase64Field, storeMaskImage } from '../uploads.ts';
import { modelHashes, parseInfotext } from '../../engine/index.ts';
import { HttpError } from '../errors.ts';
import { previewPng } from '../preview.ts';
import { VERSION } from '../../version.ts';
import type { ModelEntry } from '../models/registry.ts';
import { baseSpec, floor8, jobFailure, notImplemented, ownerOf, promptNetworks, resultImages, waitForJob, storeImageField, submitWithInput } from './common.ts';
import { fastApiErrorHandlerWith } from './fastapi.ts';
import { isPoorMansOutpainting, poorMansOutpaint } from './a1111-outpaint.ts';
import { OptionsError, parseOptions } from './a1111-options.ts';
import { layerDiffuseFields, layerDiffuseScriptName } from './a1111-layerdiffuse.ts';
import { KeySettings } from '../key-settings.ts';
import { understandImage } from '../vision.ts';
import { seesAllJobs } from '../auth.ts';

// ---------------------------------------------------------------------------------------------------------
// Request schemas. Defaults are A1111's API defaults; `null` means "use the server setting".

type Prop = Record<string, unknown>;
const str = (d: string | null = null): Prop => ({ type: d === null ? ['string', 'null'] : 'string', default: d });
const int = (d: number | null): Prop => ({ type: d === null ? ['integer', 'null'] : 'integer', default: d });
const num = (d: number | null): Prop => ({ type: d === null ? ['number', 'null'] : 'number', default: d });
const bool = (d: boolean | null): Prop => ({ type: d === null ? ['boolean', 'null'] : 'boolean', default: d });
const strOrList: Prop = { anyOf: [{ type: 'string' }, { type: 'array', items: { type: 'string' } }, { type: 'null' }], default: '' };

const SHARED: Record<string, Prop> = {
  prompt: strOrList,
  negative_prompt: strOrList,
  styles: { type: ['array', 'null'], items: { type: 'string' }, default: [] },
  seed: int(-1),
  subseed: int(-1),
  subseed_strength: num(0),
  seed_resize_from_h: int(-1),
  seed_resize_from_w: int(-1),
  sampler_name: str(),
  sampler_index: str('Euler'),
  scheduler: str(),
  batch_size: { type: 'integer', minimum: 1, default: 1 },
  n_iter: { type: 'integer', minimum: 1, default: 1 },
  steps: { type: 'integer', minimum: 1, default: 50 },
  cfg_scale: num(7.0),
  // Forge: FLUX.1 dev's distilled guidance ("Distilled CFG Scale"); ignored by models without a guidance input.
  distilled_cfg_scale: num(null),
  width: { type: 'integer', minimum: 1, default: 512 },
  height: { type: 'integer', minimum: 1, default: 512 },
  restore_faces: bool(null),
  tiling: bool(null),
  do_not_save_samples: bool(false),
  do_not_save_grid: bool(false),
  eta: num(null),
  s_min_uncond: num(null),
  s_churn: num(null),
  s_tmax: num(null),
  s_tmin: num(null),
  s_noise: num(null),
  override_settings: { type: ['object', 'null'], default: {} },
  override_settings_restore_afterwards: bool(true),
  refiner_checkpoint: str(),
  refiner_switch_at: num(null),
  disable_extra_networks: bool(false),
  firstpass_image: str(),
  comments: { type: ['object', 'null'], default: null },
  script_name: str(),
  script_args: { type: ['array', 'null'], default: [] },
  send_images: bool(true),
  save_images: bool(false),
  alwayson_scripts: { type: ['object', 'null'], default: {} },
  force_task_id: str(),
  infotext: str(),
};

const TXT2IMG_ONLY: Record<string, Prop> = {
  enable_hr: bool(false),
  denoising_strength: num(0.75),
  firstphase_width: int(0),
  firstphase_height: int(0),
  hr_scale: num(2.0),
  hr_upscaler: str(),
  hr_second_pass_steps: int(0),
  hr_resize_x: int(0),
  hr_resize_y: int(0),
  hr_checkpoint_name: str(),
  hr_sampler_name: str(),
  hr_scheduler: str(),
  hr_prompt: str(''),
  hr_negative_prompt: str(''),
};

const IMG2IMG_ONLY: Record<string, Prop> = {
  init_images: { type: ['array', 'null'], items: { type: 'string' }, default: null },
  resize_mode: int(0),
  denoising_strength: num(0.75),
  image_cfg_scale: num(null),
  mask: str(),
  mask_blur_x: int(4),
  mask_blur_y: int(4),
  mask_blur: int(null),
  mask_round: bool(true),
  inpainting_fill: int(0),
  inpaint_full_res: bool(true),
  inpaint_full_res_padding: int(0),
  inpainting_mask_invert: int(0),
  initial_noise_multiplier: num(null),
  latent_mask: str(),
  include_init_images: bool(false),
};

const bodySchema = (extra: Record<string, Prop>) => ({ type: 'object', properties: { ...SHARED, ...extra } });

/** The A1111 request schema, optionally with other defaults (RunPod's seed 000 has its own). */
export function a1111BodySchema(kind: 'txt2img' | 'img2img', defaults: Record<string, unknown> = {}) {
  const props: Record<string, Prop> = { ...SHARED, ...(kind === 'txt2img' ? TXT2IMG_ONLY : IMG2IMG_ONLY) };
  for (const [k, v] of Object.entries(defaults)) props[k] = { ...props[k], default: v };
  return { type: 'object', properties: props };
}

// biome-ignore lint/suspicious/noExplicitAny: validated against a1111BodySchema before use; fields are read as the schema types them
export type Body = Record<string, any>;

// ---------------------------------------------------------------------------------------------------------
// Errors in A1111's shapes.

export function a1111Error(status: number, detail: string, name = 'HTTPException') {
  return { error: name, detail, body: '', errors: `${status}: ${detail}` };
}

const errorHandler = fastApiErrorHandlerWith({
  pydantic: 1,
  logPrefix: 'a1111 ',
  body: (c) => a1111Error(c.status, c.message, c.status === 501 ? 'NotImplementedError' : c.status >= 500 ? 'RuntimeError' : 'HTTPException'),
});

// ---------------------------------------------------------------------------------------------------------
// Checkpoints: titles and hashes as A1111 shows them ("name.safetensors [0123456789]").

interface CheckpointInfo {
  title: string;
  model_name: string;
  hash: string | null;
  sha256: string | null;
  filename: string;
  config: null;
}

async function checkpointInfo(entry: ModelEntry): Promise<CheckpointInfo> {
  // The engine's hash, so the title matches the infotext's "Model hash"; null for an unreadable entry.
  const hashes = await modelHashes(entry.path).catch(() => null);
  const sha256 = hashes?.sha256 ?? null;
  const hash = hashes?.shortHash ?? null;
  const fileName = basename(entry.path);
  return { title: hash ? `${fileName} [${hash}]` : fileName, model_name: entry.name, hash, sha256, filename: entry.path, config: null };
}

/** A1111 matches a checkpoint on title, file name, model name, short hash or sha256. */
async function findCheckpoint(kiln: KilnServices, name: string): Promise<CheckpointInfo | undefined> {
  const wanted = name.trim().toLowerCase();
  for (const entry of kiln.models.list('checkpoint')) {
    const info = await checkpointInfo(entry);
    const keys = [info.title, basename(entry.path), info.model_name, info.hash, info.sha256, ...entry.labels];
    if (keys.some((k) => k && k.toLowerCase() === wanted)) return info;
  }
  return undefined;
}

// ---------------------------------------------------------------------------------------------------------
// Infotext -> request fields (the `infotext` request field fills every field not set explicitly).

function applyInfotext(body: Body, explicit: Set<string>): void {
  const { prompt, negativePrompt, params } = parseInfotext(String(body.infotext));
  const set = (key: string, value: unknown) => {
    if (!explicit.has(key) && value !== undefined && !(typeof value === 'number' && Number.isNaN(value))) body[key] = value;
  };
  set('prompt', prompt);
  set('negative_prompt', negativePrompt);
  const n = (k: string) => (params[k] === undefined ? undefined : Number(params[k]));
  set('steps', n('Steps'));
  set('sampler_name', params.Sampler);
  set('scheduler', params['Schedule type']);
  set('cfg_scale', n('CFG scale'));
  set('distilled_cfg_scale', n('Distilled CFG Scale'));
  set('seed', n('Seed'));
  set('subseed', n('Variation seed'));
  set('subseed_strength', n('Variation seed strength'));
  set('denoising_strength', n('Denoising strength'));
  const size = /^(\d+)x(\d+)$/.exec(params.Size ?? '');
  if (size) {
    set('width', Number(size[1]));
    set('height', Number(size[2]));
  }
  const resize = /^(\d+)x(\d+)$/.exec(params['Seed resize from'] ?? '');
  if (resize) {
    set('seed_resize_from_w', Number(resize[1]));
    set('seed_resize_from_h', Number(resize[2]));
  }
  if (params['Clip skip'] && !explicit.has('override_settings'))
    body.override_settings = { ...(body.override_settings ?? {}), CLIP_stop_at_last_layers: Number(params['Clip skip']) };
}

// ---------------------------------------------------------------------------------------------------------

const SAMPLE_FORMATS: Record<string, ImageFormat> = { png: 'png', jpg: 'jpeg', jpeg: 'jpeg', webp: 'webp' };

const UPSCALER_NAMES = ['None', 'Lanczos', 'Nearest'];
const LATENT_UPSCALE_MODES = [
  'Latent',
  'Latent (antialiased)',
  'Latent (bicubic)',
  'Latent (bicubic antialiased)',
  'Latent (nearest)',
  'Latent (nearest-exact)',
];

/** "YYYYMMDDhhmmss" in local time, as A1111's job_timestamp. */
function timestamp(ms: number): string {
  const d = new Date(ms);
  const p = (n: number) => String(n).padStart(2, '0');
  return `${d.getFullYear()}${p(d.getMonth() + 1)}${p(d.getDate())}${p(d.getHours())}${p(d.getMinutes())}${p(d.getSeconds())}`;
}

/** Settings an A1111 request runs under: the selected checkpoint and POST /options values. */
export interface A1111Context {
  model?: string;
  options: Record<string, unknown>;
  /** The request's fields as sent, before schema defaults (model presets fill only what was left out). */
  sent?: Record<string, unknown>;
}

/** The A1111 request fields behind each field a model preset can fill (stored options count as sent). */
const A1111_PRESET_SOURCES = {
  steps: ['steps'],
  cfgScale: ['cfg_scale'],
  sampler: ['sampler_name', 'sampler_index'],
  schedule: ['scheduler'],
  width: ['width'],
  height: ['height'],
  clipSkip: ['override_settings.CLIP_stop_at_last_layers', 'options.CLIP_stop_at_last_layers'],
} as const;

/** A1111 "Restore faces" from the settings face_restoration_model (default CodeFormer) and code_former_weight (0.5). */
function facesFromOptions(value: (key: string, fallback: unknown) => unknown, overridden: (key: string) => boolean): RestoreFacesSpec {
  const fieldOf = (key: string) => (overridden(key) ? `override_settings.${key}` : key);
  const model = value('face_restoration_model', 'CodeFormer');
  if (model !== 'CodeFormer' && model !== 'GFPGAN') {
    const field = fieldOf('face_restoration_model');
    throw new HttpError(400, 'invalid_request', `${field}: must be "CodeFormer" or "GFPGAN", got ${JSON.stringify(model)}`, field);
  }
  const weight = value('code_former_weight', 0.5);
  if (typeof weight !== 'number' || !(weight >= 0 && weight <= 1)) {
    const field = fieldOf('code_former_weight');
    throw new HttpError(400, 'invalid_request', `${field}: must be a number from 0 to 1, got ${JSON.stringify(weight)}`, field);
  }
  return model === 'CodeFormer' ? { model, weight } : { model };
}

/**
 * An A1111 txt2img/img2img body (schema defaults filled) -> JobSpec. Every feature the body asks for is
 * mapped onto the job model (hires, LoRA tags, masks, ...); the capability check at submission answers 501
 * for the ones Kiln lacks. Throws HttpError/SpecError for bad values. Shared with the RunPod adapter, whose
 * input is an A1111-style body.
 */
export async function specFromA1111(kiln: KilnServices, body: Body, kind: 'txt2img' | 'img2img', ctx: A1111Context = { options: {} }): Promise<JobSpec> {
  const optionValue = (overrides: Record<string, unknown>, key: string, fallback: unknown) => overrides[key] ?? ctx.options[key] ?? fallback;
  const overrides = (body.override_settings ?? {}) as Record<string, unknown>;
  const outpaint = kind === 'img2img' && isPoorMansOutpainting(body.script_name) ? poorMansOutpaint(body.script_args) : undefined;
  if (body.script_name && !outpaint) throw new HttpError(422, 'invalid_request', 'Script not found');
  const layerDiffuse = layerDiffuseScriptName(body.alwayson_scripts);
  for (const name of Object.keys(body.alwayson_scripts ?? {}))
    if (name !== layerDiffuse) throw new HttpError(422, 'invalid_request', `always on script ${name} not found`);
  const transparency = layerDiffuse ? layerDiffuseFields(body.alwayson_scripts!, layerDiffuse) : {};
  const vae = optionValue(overrides, 'sd_vae', 'Automatic');

  const count = body.batch_size * body.n_iter;
  const prompts: string[] = Array.isArray(body.prompt) ? body.prompt : [body.prompt ?? ''];
  if (prompts.length === 0) throw new HttpError(422, 'invalid_request', 'prompt: the list is empty', 'prompt');
  const negList: string[] = Array.isArray(body.negative_prompt) ? body.negative_prompt : [body.negative_prompt ?? ''];
  const negativePrompts = negList.length === prompts.length || negList.length === 1 ? negList : [negList[0] ?? ''];
  const strip = (p: string) => p.replace(/<[a-z]+:[^>]+>/gi, '');

  let model = ctx.model;
  const ckpt = overrides.sd_model_checkpoint;
  if (typeof ckpt === 'string' && ckpt) {
    const found = await findCheckpoint(kiln, ckpt);
    if (found) model = found.model_name; // an unknown checkpoint is silently dropped, as in A1111
  }
  let refiner: string | undefined;
  if (body.refiner_checkpoint && body.refiner_checkpoint !== 'None') {
    const found = await findCheckpoint(kiln, String(body.refiner_checkpoint));
    if (!found)
      throw new HttpError(
        400,
        'invalid_request',
        `refiner_checkpoint: Could not find checkpoint with name ${String(body.refiner_checkpoint)}`,
        'refiner_checkpoint',
      );
    refiner = found.model_name;
  }
  // Integer settings are bounded as A1111's own sliders are; override_settings names the request's field.
  const intSetting = (key: string, fallback: number, min: number, max: number): number => {
    const v = optionValue(overrides, key, fallback);
    if (typeof v === 'number' && Number.isInteger(v) && v >= min && v <= max) return v;
    const field = key in overrides ? `override_settings.${key}` : key;
    throw new HttpError(400, 'invalid_request', `${field}: must be an integer from ${min} to ${max}, got ${JSON.stringify(v)}`, field);
  };
  const clip = intSetting('CLIP_stop_at_last_layers', 1, 1, 12);
  const format = SAMPLE_FORMATS[String(optionValue(overrides, 'samples_format', 'png')).toLowerCase()];
  if (!format) throw new HttpError(400, 'invalid_request', 'override_settings.samples_format: must be png, jpg or webp', 'samples_format');
  const positive = (n: number | null | undefined) => (typeof n === 'number' && n > 0 ? n : undefined);
  const networks = body.disable_extra_networks ? {} : promptNetworks(prompts);
  const hires = hiresOf(body, kind);
  const restoreFaces =
    body.restore_faces === true
      ? facesFromOptions(
          (k, d) => optionValue(overrides, k, d),
          (k) => k in overrides,
        )
      : undefined;

  const spec = baseSpec({
    kind,
    model,
    prompts: body.disable_extra_networks ? prompts.map(strip) : prompts,
    negativePrompts: body.disable_extra_networks ? negativePrompts.map(strip) : negativePrompts,
    imagesPerPrompt: Array.isArray(body.prompt) ? 1 : count,
    width: floor8(body.width),
    height: floor8(body.height),
    steps: body.steps,
    cfgScale: body.cfg_scale,
    ...(typeof body.distilled_cfg_scale === 'number' ? { guidance: body.distilled_cfg_scale } : {}),
    sampler: body.sampler_name || body.sampler_index || 'Euler',
    schedule: body.scheduler || 'Automatic',
    // A1111's own sampling conventions, Brownian-tree noise for the SDE samplers included (seed 000 too).
    flavour: 'a1111',
    seed: resolveSeed(body.seed),
    subseed: resolveSeed(body.subseed, Math.random, 'subseed'),
    subseedStrength: body.subseed_strength ?? 0,
    seedResizeFromW: positive(body.seed_resize_from_w),
    seedResizeFromH: positive(body.seed_resize_from_h),
    clipSkip: clip > 1 ? clip : undefined,
    eta: body.eta ?? undefined,
    sChurn: body.s_churn ?? undefined,
    sTmin: body.s_tmin ?? undefined,
    // A1111 treats s_tmax 0 as infinity.
    sTmax: positive(body.s_tmax),
    sNoise: body.s_noise ?? undefined,
    output: { format, quality: intSetting('jpeg_quality', 80, 1, 100), response: 'base64' },
    refiner,
    refinerSwitchAt: refiner ? (body.refiner_switch_at ?? 0.8) : undefined,
    loras: networks.loras,
    hypernetworks: networks.hypernetworks,
    hires: hires?.hires,
    restoreFaces,
    tiling: body.tiling === true || undefined,
    sMinUncond: positive(body.s_min_uncond),
    etaNoiseSeedDelta: Number(optionValue(overrides, 'eta_noise_seed_delta', 0)) || undefined,
    vae: vae ? String(vae) : undefined,
    transparentBackground: transparency.transparentBackground,
    transparentOptions: transparency.transparentOptions,
    leftOut: leftOutFields(ctx.sent && { ...ctx.sent, options: ctx.options }, A1111_PRESET_SOURCES),
  });
  spec.sourceFields = {
    ...transparency.sourceFields,
    ...networks.sourceFields,
    ...hires?.sourceFields,
    etaNoiseSeedDelta: 'override_settings.eta_noise_seed_delta',
    vae: 'override_settings.sd_vae',
  };
  if (kind === 'img2img') {
    const inits: string[] = body.init_images ?? [];
    if (inits.length === 0) throw new HttpError(404, 'not_found', 'Init image not found');
    if (body.mask) {
      const blur = body.mask_blur ?? Math.max(body.mask_blur_x ?? 4, body.mask_blur_y ?? 4);
      spec.mask = {
        blur,
        invert: body.inpainting_mask_invert === 1,
        fill: body.inpainting_fill,
        fullResolution: body.inpaint_full_res,
        padding: body.inpaint_full_res_padding,
        blurX: body.mask_blur ?? body.mask_blur_x ?? 4,
        blurY: body.mask_blur ?? body.mask_blur_y ?? 4,
        round: body.mask_round,
      };
    }
    if (outpaint) spec.outpaint = outpaint;
    spec.resizeMode = body.resize_mode ?? 0;
    spec.inputImageCount = new Set(inits).size;
    spec.initialNoiseMultiplier = body.initial_noise_multiplier ?? undefined;
    spec.sourceFields = { ...spec.sourceFields, inputImageCount: 'init_images' };
    spec.denoisingStrength = body.denoising_strength ?? 0.75;
    kiln.checkSpec({ ...spec, initImage: 'pending' });
    if (spec.mask) {
      const maskBytes = decodeBase64Field(body.mask, 'mask', kiln.config.limits);
      spec.mask.image = await storeMaskImage(maskBytes, kiln.storage, kiln.config.limits, 'mask', { invert: spec.mask.invert });
    }
    try {
      spec.initImage = await storeImageField(kiln, inits[0]!, 'init_images');
    } catch (e) {
      if (spec.mask?.image) await kiln.storage.remove(spec.mask.image).catch(() => undefined);
      throw e;
    }
  }
  return spec;
}

/** A1111's hires-fix fields (txt2img: enable_hr; either kind: firstpass_image) as the job model's hires pass. */
function hiresOf(body: Body, kind: 'txt2img' | 'img2img'): Pick<JobSpec, 'hires' | 'sourceFields'> | undefined {
  const enabled = kind === 'txt2img' && body.enable_hr === true;
  if (!enabled && !body.firstpass_image) return undefined;
  const positive = (n: unknown) => (typeof n === 'number' && n > 0 ? n : undefined);
  const hrCheckpoint = body.hr_checkpoint_name;
  if (enabled && hrCheckpoint && hrCheckpoint !== 'Use same checkpoint') notImplemented('a separate checkpoint for the hires pass', 'hr_checkpoint_name');
  return {
    hires: {
      scale: positive(body.hr_scale),
      upscaler: body.hr_upscaler || undefined,
      steps: positive(body.hr_second_pass_steps),
      denoisingStrength: body.denoising_strength ?? undefined,
      width: positive(body.hr_resize_x),
      height: positive(body.hr_resize_y),
      sampler: body.hr_sampler_name && body.hr_sampler_name !== 'Use same sampler' ? body.hr_sampler_name : undefined,
      schedule: body.hr_scheduler && body.hr_scheduler !== 'Use same scheduler' ? body.hr_scheduler : undefined,
      prompt: body.hr_prompt || undefined,
      negativePrompt: body.hr_negative_prompt || undefined,
    },
    sourceFields: { hires: enabled ? 'enable_hr' : 'firstpass_image' },
  };
}

/** How an A1111 interrupt or skip stopped a job, kept in the job record (Job.extra.a1111Stop). */
type StopKind = 'interrupted' | 'skipped';
const stopOf = (job: Job | undefined): StopKind | undefined => job?.extra.a1111Stop as StopKind | undefined;

export async function a1111Routes(app: FastifyInstance): Promise<void> {
  const kiln = app.kiln;
  const settings = new KeySettings();

  app.setErrorHandler(errorHandler);
  // A1111 stamps every response with how long it took.
  app.addHook('onRequest', async (req) => {
    (req as FastifyRequest & { a1111Start?: bigint }).a1111Start = process.hrtime.bigint();
  });
  app.addHook('onSend', async (req, reply) => {
    const start = (req as FastifyRequest & { a1111Start?: bigint }).a1111Start;
    if (start !== undefined) reply.header('x-process-time', String(Number(process.hrtime.bigint() - start) / 1e9));
  });
  // Which fields the client really sent (before schema defaults fill the rest), for `infotext`.
  const recordExplicit = async (req: FastifyRequest) => {
    const b = req.body;
    (req as FastifyRequest & { explicit?: Set<string> }).explicit = new Set(b && typeof b === 'object' ? Object.keys(b) : []);
  };

  const currentTitle = async (model: string | undefined): Promise<string | null> => {
    const entry = model ? kiln.models.list('checkpoint').find((e) => e.name === model) : kiln.models.default;
    return entry ? (await checkpointInfo(entry)).title : null;
  };

  const toSpec = (req: FastifyRequest, body: Body, kind: 'txt2img' | 'img2img') =>
    specFromA1111(kiln, body, kind, { ...settings.effective(req.principal), sent: sentFields(req) });

  /** The `info` JSON string A1111 returns. */
  function info(body: Body, job: Job, infotexts: string[]): string {
    const spec = job.spec;
    const images = job.result?.images ?? [];
    const params = infotexts[0] ? parseInfotext(infotexts[0]).params : {};
    const allPrompts = images.length ? images.map((i) => i.prompt) : spec.prompts.flatMap((p) => Array<string>(spec.imagesPerPrompt).fill(p));
    const allNegatives = images.length
      ? images.map((i) => i.negativePrompt)
      : allPrompts.map((_, i) => spec.negativePrompts[Math.floor(i / spec.imagesPerPrompt)] ?? spec.negativePrompts[0] ?? '');
    const allSeeds = images.length ? images.map((i) => i.seed) : allPrompts.map((_, i) => spec.seed + (spec.subseedStrength > 0 ? 0 : i));
    const allSubseeds = images.length ? images.map((i) => i.subseed) : allPrompts.map((_, i) => spec.subseed + i);
    const out = {
      prompt: allPrompts[0] ?? '',
      all_prompts: allPrompts,
      negative_prompt: allNegatives[0] ?? '',
      all_negative_prompts: allNegatives,
      seed: allSeeds[0] ?? spec.seed,
      all_seeds: allSeeds,
      subseed: allSubseeds[0] ?? spec.subseed,
      all_subseeds: allSubseeds,
      subseed_strength: spec.subseedStrength,
      width: spec.width,
      height: spec.height,
      sampler_name: params.Sampler ?? spec.sampler,
      cfg_scale: spec.cfgScale,
      steps: spec.steps,
      batch_size: body.batch_size,
      restore_faces: body.restore_faces ?? false,
      face_restoration_model: spec.restoreFaces?.model ?? null,
      sd_model_name: params.Model ?? spec.model ?? kiln.models.default?.name ?? null,
      sd_model_hash: params['Model hash'] ?? null,
      sd_vae_name: null,
      sd_vae_hash: null,
      seed_resize_from_w: body.seed_resize_from_w ?? -1,
      seed_resize_from_h: body.seed_resize_from_h ?? -1,
      denoising_strength: spec.kind === 'img2img' ? spec.denoisingStrength : (body.denoising_strength ?? null),
      extra_generation_params: {},
      index_of_first_image: 0,
      infotexts,
      styles: body.styles ?? [],
      job_timestamp: timestamp(job.startedAt ?? job.createdAt),
      clip_skip: spec.clipSkip ?? 1,
      is_using_inpainting_conditioning: false,
      version: `kiln-${VERSION}`,
    };
    return JSON.stringify(out);
  }

  async function generate(req: FastifyRequest, reply: FastifyReply, kind: 'txt2img' | 'img2img') {
    const body = req.body as Body;
    if (body.infotext) applyInfotext(body, (req as FastifyRequest & { explicit?: Set<string> }).explicit ?? new Set());
    const spec = await toSpec(req, body, kind);
    // force_task_id is kept with the job, so /internal/progress finds it (after a restart too).
    const externalId = body.force_task_id ? String(body.force_task_id) : undefined;
    const job = await submitWithInput(kiln, spec, () => kiln.submit(spec, { owner: ownerOf(req), externalId }));
    const done = await waitForJob(kiln, reply, job);
    if (body.override_settings_restore_afterwards === false) {
      // Kept as the caller's settings, like POST /options: known keys with valid values only.
      const kept = parseOptions((body.override_settings ?? {}) as Record<string, unknown>, false);
      settings.set(req.principal, kept.values, kept.checkpoint !== undefined ? spec.model : undefined);
    }
    // An interrupted job returns what it has, as A1111's blocked call does (here: nothing yet).
    if (done.state !== 'succeeded' && !(done.state === 'cancelled' && stopOf(done))) throw jobFailure(done);
    const images = await resultImages(kiln, done);
    const infotexts = images.map((i) => i.meta.infotext);
    const { infotext: _drop, ...parameters } = body;
    return {
      images: body.send_images === false ? [] : images.map((i) => i.bytes.toString('base64')),
      parameters: { ...parameters, ...(kind === 'img2img' && !body.include_init_images ? { init_images: null } : {}) },
      info: info(body, done, infotexts),
    };
  }

  const txt2imgSchema = { tags: ['a1111'], summary: 'A1111 txt2img (blocks until done).', body: bodySchema(TXT2IMG_ONLY) };
  const img2imgSchema = { tags: ['a1111'], summary: 'A1111 img2img (blocks until done).', body: bodySchema(IMG2IMG_ONLY) };
  app.post('/sdapi/v1/txt2img', { preValidation: recordExplicit, schema: txt2imgSchema }, (req, reply) => generate(req, reply, 'txt2img'));
  app.post('/sdapi/v1/img2img', { preValidation: recordExplicit, schema: img2imgSchema }, (req, reply) => generate(req, reply, 'img2img'));

  // A1111's progress and interrupt act on "the" running job. Here: the caller's own (admins: anyone's).
  const ownerFilter = (req: FastifyRequest) => (seesAllJobs(req.principal) ? undefined : req.principal.name);
  const runningJob = async (req: FastifyRequest): Promise<Job | undefined> =>
    (await kiln.queue.list({ owner: ownerFilter(req), state: 'running', limit: 1 }))[0];
  const queuedCount = async (req: FastifyRequest): Promise<number> => {
    const owner = ownerFilter(req);
    if (owner === undefined) return (await kiln.queue.counts()).queued;
    return (await kiln.queue.list({ owner, state: 'queued', limit: kiln.config.queue.maxQueued + 1 })).length;
  };
  app.get(
    '/sdapi/v1/progress',
    {
      schema: {
        tags: ['a1111'],
        summary: 'Progress of the running generation.',
        querystring: { type: 'object', properties: { skip_current_image: { type: 'boolean', default: false } } },
      },
    },
    async (req) => {
      const job = await runningJob(req);
      const queued = await queuedCount(req);
      const skipImage = (req.query as { skip_current_image?: boolean }).skip_current_image === true;
      // As A1111's flags: set by an interrupt or skip until the caller's next job.
      const [latest] = await kiln.queue.list({ owner: ownerFilter(req), limit: 1 });
      const base = { skipped: stopOf(latest) === 'skipped', interrupted: stopOf(latest) === 'interrupted', stopping_generation: false };
      if (!job) {
        return {
          progress: 0,
          eta_relative: 0,
          state: { ...base, job: '', job_count: 0, job_timestamp: latest ? timestamp(latest.createdAt) : '0', job_no: 0, sampling_step: 0, sampling_steps: 0 },
          current_image: null,
          textinfo: null,
        };
      }
      const progress = Math.min(1, 0.01 + job.progress);
      const elapsed = (Date.now() - (job.startedAt ?? Date.now())) / 1000;
      // Read after the job: on a shared (Redis) queue a newer preview may have come meanwhile; the step it shows
      // was reached, so the answer never pairs a preview with an older step.
      const preview = skipImage ? undefined : await previewPng(kiln.queue, job.id);
      return {
        progress,
        eta_relative: Math.max(0, elapsed / progress - elapsed),
        state: {
          ...base,
          job: `Batch 1 out of 1`,
          job_count: 1 + queued,
          job_timestamp: timestamp(job.startedAt ?? job.createdAt),
          job_no: 0,
          sampling_step: Math.max(job.step, preview?.step ?? 0),
          sampling_steps: job.totalSteps || job.spec.steps,
        },
        // A1111 sends the live preview as bare base64 PNG (no data: prefix), and null when asked to skip it.
        current_image: preview?.png.toString('base64') ?? null,
        textinfo: job.phase ? `${job.phase}` : null,
      };
    },
  );

  app.post(
    '/internal/progress',
    {
      schema: {
        tags: ['a1111'],
        summary: 'Per-task progress (send force_task_id with the generation).',
        body: {
          type: 'object',
          properties: {
            id_task: { type: ['string', 'null'] },
            id_live_preview: { type: 'integer', default: -1 },
            live_preview: { type: 'boolean', default: true },
          },
        },
      },
    },
    async (req) => {
      const {
        id_task,
        id_live_preview: knownPreview = -1,
        live_preview: wantPreview = true,
      } = req.body as { id_task?: string | null; id_live_preview?: number; live_preview?: boolean };
      // Task ids are chosen by clients: with API keys, each key sees only its own tasks.
      const job = id_task ? await kiln.queue.findByExternalId(id_task, ownerFilter(req)) : undefined;
      if (!job)
        return { active: false, queued: false, completed: false, progress: null, eta: null, live_preview: null, id_live_preview: -1, textinfo: 'Waiting...' };
      const active = job.state === 'running';
      const completed = job.state === 'succeeded' || job.state === 'failed' || job.state === 'cancelled';
      const eta = await kiln.queue.etaSeconds(job);
      // As A1111: a data URL only when the preview is newer than the one the client says it has.
      const preview = active && wantPreview ? await previewPng(kiln.queue, job.id) : undefined;
      const fresh = preview && preview.seq !== knownPreview ? preview : undefined;
      return {
        active,
        queued: job.state === 'queued',
        completed,
        progress: completed ? 1 : active ? job.progress : null,
        eta: eta ?? null,
        live_preview: fresh ? `data:image/png;base64,${fresh.png.toString('base64')}` : null,
        id_live_preview: fresh ? fresh.seq : knownPreview,
        textinfo: completed ? null : active ? (job.phase ?? 'running') : 'In queue...',
      };
    },
  );

  /**
   * The job an interrupt stops: the running one (admins: anyone's); for a user key whose job still waits behind
   * others, that user's next queued job, so their blocked txt2img call ends as in A1111.
   */
  const jobToStop = async (req: FastifyRequest): Promise<Job | undefined> => {
    const running = await runningJob(req);
    const owner = ownerFilter(req);
    if (running || owner === undefined) return running;
    return (await kiln.queue.list({ owner, state: 'queued', limit: kiln.config.queue.maxQueued + 1 })).at(-1);
  };
  const stop = async (req: FastifyRequest, kind: StopKind) => {
    const job = await jobToStop(req);
    if (job) {
      // Marked first, so the blocked generate call sees why its job ended.
      await kiln.queue.updateExtra(job.id, { a1111Stop: kind });
      await kiln.queue.cancel(job.id);
    }
    return {};
  };
  app.post(
    '/sdapi/v1/interrupt',
    { schema: { tags: ['a1111'], summary: 'Stop your running generation at the next step (admin keys: the running one, whoever owns it).' } },
    async (req) => stop(req, 'interrupted'),
  );
  // Kiln runs a whole batch as one job, so skipping "the current image" stops the job like interrupt.
  app.post(
    '/sdapi/v1/skip',
    { schema: { tags: ['a1111'], summary: 'Skip your current generation (stops the job; admin keys: the running one).' } },
    async (req) => stop(req, 'skipped'),
  );

  // Discovery.
  app.get('/sdapi/v1/samplers', { schema: { tags: ['a1111'] } }, async () => {
    const list = (await kiln.engine.listSamplers()) as Array<{ name: string; aliases?: string[]; options?: object }>;
    return list.map((s) => ({ name: s.name, aliases: s.aliases ?? [], options: s.options ?? {} }));
  });
  app.get('/sdapi/v1/schedulers', { schema: { tags: ['a1111'] } }, async () => kiln.engine.listSchedules());
  app.get('/sdapi/v1/sd-models', { schema: { tags: ['a1111'] } }, async () => Promise.all(kiln.models.list('checkpoint').map(checkpointInfo)));
  app.get('/sdapi/v1/sd-vae', { schema: { tags: ['a1111'] } }, async () => kiln.models.list('vae').map((v) => ({ model_name: v.name, filename: v.path })));
  app.get('/sdapi/v1/loras', { schema: { tags: ['a1111'] } }, async () =>
    kiln.models.list('lora').map((l) => {
      // A1111 lists the safetensors metadata and the trainer's output name as the alias; an unreadable file still lists.
      const metadata = loraMetadata(l.path);
      return { name: l.name, alias: metadata.ss_output_name ?? l.name, path: l.path, metadata };
    }),
  );
  app.post('/sdapi/v1/refresh-loras', { schema: { tags: ['a1111'] } }, async () => {
    kiln.models.refresh();
    return null;
  });
  app.post('/sdapi/v1/refresh-checkpoints', { schema: { tags: ['a1111'] } }, async () => {
    kiln.models.refresh();
    return null;
  });
  // Models load on demand and idle ones are freed by the engine, so these are no-ops that succeed.
  app.post('/sdapi/v1/unload-checkpoint', { schema: { tags: ['a1111'] } }, async () => null);
  app.post('/sdapi/v1/reload-checkpoint', { schema: { tags: ['a1111'] } }, async () => null);
  app.get('/sdapi/v1/upscalers', { schema: { tags: ['a1111'] } }, async () => [
    ...UPSCALER_NAMES.map((name) => ({ name, model_name: null, model_path: null, model_url: null, scale: 4 })),
    // Only files the engine can read, with paths relative to the models folder (never the server's own paths).
    ...kiln.upscalers.files().map((u) => ({ name: u.name, model_name: u.arch, model_path: u.relativePath, model_url: null, scale: u.scale })),
  ]);
  app.get('/sdapi/v1/latent-upscale-modes', { schema: { tags: ['a1111'] } }, async () => LATENT_UPSCALE_MODES.map((name) => ({ name })));
  app.get('/sdapi/v1/embeddings', { schema: { tags: ['a1111'] } }, async () => a1111Embeddings(kiln.models));
  app.get('/sdapi/v1/prompt-styles', { schema: { tags: ['a1111'] } }, async () => []);
  app.get('/sdapi/v1/face-restorers', { schema: { tags: ['a1111'] } }, async () => kiln.faceRestorers.list());
  // A1111's InterrogateRequest {image, model}: "clip" is its CLIP interrogator (Kiln's has no BLIP caption in
  // front); DeepDanbooru is not available. Unknown models and a missing image are 404s, as A1111 answers them.
  app.post(
    '/sdapi/v1/interrogate',
    { schema: { tags: ['a1111'], summary: 'A prompt for an image (CLIP interrogator).', body: { type: 'object' } } },
    async (req, reply) => {
      const body = req.body as { image?: unknown; model?: unknown };
      const model = body.model === undefined ? 'clip' : String(body.model);
      if (typeof body.image !== 'string' || body.image === '')
        throw new HttpError(404, 'not_found', 'Image not found: send the image as base64 in "image"', 'image');
      if (model === 'deepdanbooru') notImplemented('DeepDanbooru tagging (interrogate model "deepdanbooru"; use "clip")', 'model');
      if (model !== 'clip') throw new HttpError(404, 'not_found', `Model not found: "${model}"; Kiln interrogates with "clip"`, 'model');
      const image = decodeBase64Field(body.image, 'image', kiln.config.limits);
      const { output } = await understandImage(kiln, req, reply, { kind: 'interrogate', image, field: 'image', vision: {} });
      return { caption: output.prompt ?? '' };
    },
  );

  // Settings, per key (a1111-options.ts): only the ones Kiln acts on are stored; others are ignored.
  const options = async (req: FastifyRequest) => {
    const mine = settings.effective(req.principal);
    const title = await currentTitle(mine.model);
    return {
      samples_format: 'png',
      jpeg_quality: 80,
      CLIP_stop_at_last_layers: 1,
      eta_noise_seed_delta: 0,
      sd_vae: 'Automatic',
      live_previews_enable: kiln.config.previewEvery > 0,
      show_progress_every_n_steps: kiln.config.previewEvery > 0 ? kiln.config.previewEvery : -1,
      show_progress_type: Object.keys(findTaesdDecoders(kiln.config.modelsDir)).length > 0 ? 'TAESD' : 'Approx cheap',
      sd_checkpoint_hash: title?.match(/\[([0-9a-f]+)\]$/)?.[1] ?? null,
      ...mine.options,
      sd_model_checkpoint: title,
    };
  };
  app.get('/sdapi/v1/options', { schema: { tags: ['a1111'], summary: 'Your settings (with API keys: per key, over the shared ones admins set).' } }, options);
  app.post(
    '/sdapi/v1/options',
    {
      schema: {
        tags: ['a1111'],
        summary:
          'Change settings Kiln acts on (samples_format, jpeg_quality, CLIP_stop_at_last_layers, eta_noise_seed_delta, sd_vae, sd_model_checkpoint); others are ignored and named in the x-kiln-ignored-options header. A user key changes its own settings; an admin key changes the shared ones, sd_model_checkpoint included (the model A1111 requests use unless a key chose its own).',
        body: { type: 'object' },
      },
    },
    async (req, reply) => {
      let parsed: ReturnType<typeof parseOptions>;
      try {
        parsed = parseOptions(req.body as Record<string, unknown>);
      } catch (e) {
        if (e instanceof OptionsError) throw new HttpError(422, 'invalid_request', e.message, e.field);
        throw e;
      }
      let model: string | undefined;
      if (parsed.checkpoint !== undefined) {
        const found = await findCheckpoint(kiln, parsed.checkpoint);
        if (!found) throw new HttpError(500, 'internal', `model ${JSON.stringify(parsed.checkpoint)} not found`);
        // A1111 loads the checkpoint before answering; so does Kiln when the engine can preload.
        await kiln.engine.load?.({ path: found.filename });
        model = found.model_name;
      }
      settings.set(req.principal, parsed.values, model);
      if (parsed.ignored.length) {
        const names = parsed.ignored.slice(0, 20).map((k) => k.replace(/[^\w.-]/g, '_').slice(0, 64));
        reply.header('x-kiln-ignored-options', names.join(',') + (parsed.ignored.length > 20 ? `,+${parsed.ignored.length - 20} more` : ''));
      }
      return null;
    },
  );
  app.get('/sdapi/v1/cmd-flags', { schema: { tags: ['a1111'] } }, async () => ({ api: true, nowebui: true }));

  app.post(
    '/sdapi/v1/png-info',
    {
      schema: {
        tags: ['a1111'],
        summary: 'Read the generation parameters from an image.',
        body: { type: 'object', required: ['image'], properties: { image: { type: 'string' } } },
      },
    },
    async (req) => {
      const { image } = req.body as { image: string };
      if (!image) return { info: '', items: {}, parameters: {} };
      let bytes: Buffer;
      try {
        bytes = decodeBase64Field(image, 'image', kiln.config.limits);
      } catch (e) {
        throw new HttpError(500, 'internal', (e as Error).message);
      }
      let text: string | undefined;
      let items: Record<string, string> = {};
      try {
        text = await readInfotext(bytes);
        if (bytes.subarray(1, 4).toString('latin1') === 'PNG') {
          const { parameters: _p, ...rest } = readPngText(bytes);
          items = rest;
        }
      } catch {
        throw new HttpError(500, 'internal', 'image: cannot identify image file');
      }
      return { info: text ?? '', items, parameters: text ? generationParameters(text) : {} };
    },
  );

  /** One image through A1111 Extras as an upscale job; resolves to the stored result and its parameters text. */
  async function extrasUpscale(req: FastifyRequest, reply: FastifyReply, body: Body, image: string, field: string) {
    const mode = body.resize_mode === 1 ? 1 : 0;
    const spec = baseSpec({
      kind: 'upscale',
      prompts: [''],
      upscale: {
        mode,
        scale: mode === 0 ? Number(body.upscaling_resize ?? 2) : undefined,
        width: mode === 1 ? Number(body.upscaling_resize_w ?? 512) : undefined,
        height: mode === 1 ? Number(body.upscaling_resize_h ?? 512) : undefined,
        crop: mode === 1 ? body.upscaling_crop !== false : undefined,
        upscaler1: String(body.upscaler_1 ?? 'None'),
        upscaler2: body.upscaler_2 && body.upscaler_2 !== 'None' ? String(body.upscaler_2) : undefined,
        upscaler2Visibility: typeof body.extras_upscaler_2_visibility === 'number' ? body.extras_upscaler_2_visibility : undefined,
        restoreFaces: extrasFaces(body),
      },
      output: { ...SPEC_DEFAULTS.output, format: 'png' },
    });
    kiln.checkSpec({ ...spec, initImage: 'pending' });
    spec.initImage = await storeImageField(kiln, image, field);
    const job = await submitWithInput(kiln, spec, () => kiln.submit(spec, { owner: ownerOf(req) }));
    const done = await waitForJob(kiln, reply, job);
    if (done.state !== 'succeeded') throw jobFailure(done);
    const [result] = await resultImages(kiln, done);
    return result!;
  }
  /** Extras' GFPGAN and CodeFormer passes (A1111 runs them in this order, each only at a visibility above 0). */
  function extrasFaces(body: Body): RestoreFacesSpec[] | undefined {
    const number = (field: string, fallback: number) => {
      const v = body[field] ?? fallback;
      if (typeof v !== 'number' || !(v >= 0 && v <= 1))
        throw new HttpError(400, 'invalid_request', `${field}: must be a number from 0 to 1, got ${JSON.stringify(v)}`, field);
      return v;
    };
    const out: RestoreFacesSpec[] = [];
    const gfpgan = number('gfpgan_visibility', 0);
    if (gfpgan > 0) out.push({ model: 'GFPGAN', visibility: gfpgan });
    const codeformer = number('codeformer_visibility', 0);
    if (codeformer > 0) out.push({ model: 'CodeFormer', visibility: codeformer, weight: number('codeformer_weight', 0) });
    return out.length ? out : undefined;
  }
  const html = (text: string) => `<p>${text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;')}</p>`;

  app.post(
    '/sdapi/v1/extra-single-image',
    { schema: { tags: ['a1111'], summary: 'A1111 Extras: upscale one image (blocks until done).', body: { type: 'object' } } },
    async (req, reply) => {
      const body = req.body as Body;
      if (typeof body.image !== 'string' || body.image === '') throw new HttpError(422, 'validation', 'image: a base64 image is required');
      const r = await extrasUpscale(req, reply, body, body.image, 'image');
      return { html_info: html(r.meta.infotext), image: r.bytes.toString('base64') };
    },
  );
  app.post(
    '/sdapi/v1/extra-batch-images',
    { schema: { tags: ['a1111'], summary: 'A1111 Extras: upscale several images (blocks until done).', body: { type: 'object' } } },
    async (req, reply) => {
      const body = req.body as Body;
      const list = Array.isArray(body.imageList) ? (body.imageList as { data?: unknown }[]) : [];
      if (list.length === 0) throw new HttpError(422, 'validation', 'imageList: at least one {data, name} image is required');
      if (list.length > kiln.config.limits.maxImages)
        throw new HttpError(400, 'invalid_request', `imageList: ${list.length} images; the limit is ${kiln.config.limits.maxImages} per request`, 'imageList');
      const images: string[] = [];
      let info = '';
      for (const [i, item] of list.entries()) {
        if (typeof item?.data !== 'string') throw new HttpError(422, 'validation', `imageList.${i}.data: a base64 image is required`);
        const r = await extrasUpscale(req, reply, body, item.data, `imageList.${i}.data`);
        images.push(r.bytes.toString('base64'));
        info = r.meta.infotext;
      }
      return { html_info: html(info), images };
    },
  );
}

/** A1111's parse_generation_parameters: Prompt, Negative prompt, then each key, with "Size" split into -1/-2. */
export function generationParameters(text: string): Record<string, string | number> {
  const { prompt, negativePrompt, params } = parseInfotext(text);
  const out: Record<string, string | number> = { Prompt: prompt, 'Negative prompt': negativePrompt };
  for (const [k, v] of Object.entries(params)) {
    const size = /^(\d+)x(\d+)$/.exec(v);
    if (size) {
      out[`${k}-1`] = size[1]!;
      out[`${k}-2`] = size[2]!;
    } else out[k] = v;
  }
  if (out['Clip skip'] === undefined) out['Clip skip'] = '1';
  if (out['Schedule type'] === undefined) out['Schedule type'] = 'Automatic';
  return out;
}
