// txt2img and img2img over one loaded model (and an optional SDXL refiner): prompts -> conditioning ->
// seeded noise -> sampler over a CFG denoiser -> VAE decode -> 8-bit images with their infotext.
import { KilnInputError, type GenerateOptions, type GenerateRequest, type GenerateResult, type GeneratedImage, type ProgressEvent } from '../api.ts';
import { decodedToImages, imageToTensor, resizeImage } from '../image.ts';
import { buildInfotext } from '../infotext.ts';
import { VERSION } from '../../version.ts';
import { approxCheapPreview, previewLatentSpace } from '../preview.ts';
import { batchSeeds, createNoise, resolveSeed, type BatchNoise } from '../rng.ts';
import { runSession } from '../runtime.ts';
import {
  addNoise,
  countEvals,
  createModelSchedule,
  img2imgSigmasDiffusers,
  makeDenoiser,
  planSampling,
  runSampler,
  type Denoiser,
  type SamplingPlan,
} from '../samplers/index.ts';
import type { BetaSchedule } from '../samplers/index.ts';
import type { Tensor } from '../tensor.ts';
import { encodePrompt, stackConditionings, zerosLike, type Conditioning } from './conditioning.ts';
import type { ModelSessions } from './model-sessions.ts';
import { validateRequest } from './validate.ts';

/** Test and advanced hooks: fixed noise instead of the seeded generator (reference comparisons). */
export interface NoiseOverrides {
  /** Unit noise [B,C,h,w] for the initial latent (txt2img) or the img2img add-noise. */
  initialNoise?: Float32Array;
  /** img2img: unit noise for sampling the VAE's latent distribution. */
  vaeSampleNoise?: Float32Array;
  /** img2img: the init image as float pixels [1,3,H,W] in [-1,1] instead of req.initImage's 8-bit data. */
  initImagePixels?: Tensor;
  /** Receives the final latents (before decode) for comparisons. */
  onFinalLatents?: (latents: Tensor) => void;
}

export interface PipelineModels {
  base: ModelSessions;
  refiner?: ModelSessions;
}

/** How many images share one UNet call (x2 for CFG); larger batches are split so memory stays bounded. */
const MAX_UNET_BATCH_IMAGES = 4;

export async function runPipeline(models: PipelineModels, req: GenerateRequest, opts: GenerateOptions = {}, overrides: NoiseOverrides = {}): Promise<GenerateResult> {
  const started = Date.now();
  const { base, refiner } = models;
  validateRequest(req, base.latentFactor);
  const progress = progressReporter(opts.onProgress);
  const timings = { loadMs: base.buildMs + (refiner?.buildMs ?? 0), encodeMs: 0, sampleMs: 0, decodeMs: 0, totalMs: 0 };

  // Seeds and prompts, expanded to one entry per image.
  const perPrompt = req.imagesPerPrompt ?? 1;
  const count = req.prompts.length * perPrompt;
  const seed = resolveSeed(req.seed);
  const subseed = resolveSeed(req.subseed);
  const subseedStrength = req.subseedStrength ?? 0;
  const { seeds, subseeds } = batchSeeds(seed, subseed, subseedStrength, count);
  const negatives = req.prompts.map((_, i) => (Array.isArray(req.negativePrompt) ? req.negativePrompt[i] ?? '' : req.negativePrompt ?? ''));
  const imagePrompts = req.prompts.flatMap((p) => Array<string>(perPrompt).fill(p));
  const imageNegatives = negatives.flatMap((n) => Array<string>(perPrompt).fill(n));

  // Conditioning.
  progress({ phase: 'encoding', step: 0, totalSteps: 0, fraction: 0.01 });
  const t0 = Date.now();
  const clipSkip = req.clipSkip ?? 1;
  const baseCond = await conditionBatch(base, imagePrompts, imageNegatives, clipSkip);
  const refinerCond = refiner ? await conditionBatch(refiner, imagePrompts, imageNegatives, clipSkip) : undefined;
  timings.encodeMs = Date.now() - t0;

  // Sampling plan.
  const sc = base.model.schedulerConfig;
  const modelSchedule = createModelSchedule({
    betaStart: sc.beta_start,
    betaEnd: sc.beta_end,
    betaSchedule: sc.beta_schedule as BetaSchedule,
    numTrainTimesteps: sc.num_train_timesteps,
    trainedBetas: sc.trained_betas ?? undefined,
  });
  const plan = planSampling({
    sampler: req.sampler,
    schedule: req.schedule,
    steps: req.steps,
    model: modelSchedule,
    family: base.model.family.startsWith('sdxl') ? 'sdxl' : 'sd1',
  });

  const latentH = req.height / base.latentFactor;
  const latentW = req.width / base.latentFactor;
  const shape: [number, number, number] = [base.latentChannels, latentH, latentW];
  const noise = createNoise({
    seeds,
    subseeds,
    subseedStrength,
    resizeFrom: req.seedResizeFromW && req.seedResizeFromH ? { width: req.seedResizeFromW, height: req.seedResizeFromH } : undefined,
    latentFactor: base.latentFactor,
    shape,
    source: req.rng ?? 'cpu',
  });
  const initialNoise = overrides.initialNoise ?? noise.initial;

  // Starting latent: pure noise (txt2img) or the encoded init image noised to the first sigma (img2img).
  let sigmas = plan.sigmas;
  let x: Float32Array;
  if (req.initImage) {
    const strength = req.denoisingStrength ?? 0.75;
    sigmas = img2imgSigmasDiffusers(plan.sigmas, strength);
    const pixels = overrides.initImagePixels ?? imageToTensor(await resizeImage(req.initImage, req.width, req.height));
    const initLatent = await encodeInitImage(base, pixels, count, overrides.vaeSampleNoise ?? noise.next());
    x = sigmas.length > 1 ? addNoise(initLatent, initialNoise, sigmas[0]!) : initLatent;
  } else {
    x = new Float32Array(initialNoise.length);
    const scale = initialNoiseScale(plan);
    for (let i = 0; i < x.length; i++) x[i] = initialNoise[i]! * scale;
  }

  // Denoise.
  const t1 = Date.now();
  const totalEvals = countEvals(plan.sampler, sigmas);
  const baseDenoiser = cfgDenoiser(base, baseCond, req, plan, modelSchedule, count, shape);
  let denoise: Denoiser = baseDenoiser;
  if (refiner && refinerCond && req.refinerSwitchAt !== undefined && req.refinerSwitchAt < 1) {
    // A1111: the base runs the first `switchAt` fraction of the steps, the refiner the rest, same sigmas.
    const refinerDenoiser = cfgDenoiser(refiner, refinerCond, req, plan, modelSchedule, count, shape);
    const switchIndex = Math.min(sigmas.length - 1, Math.max(0, Math.round(req.refinerSwitchAt * (sigmas.length - 1))));
    const switchSigma = sigmas[switchIndex]!;
    denoise = (xs, sigma) => (sigma > switchSigma ? baseDenoiser(xs, sigma) : refinerDenoiser(xs, sigma));
  }
  // Live previews: keep the denoiser's latest x0 estimate and map it to RGB every N evaluations.
  const previewEvery = opts.onProgress && opts.preview && opts.preview.everyEvals > 0 ? Math.floor(opts.preview.everyEvals) || 1 : 0;
  let lastDenoised: Float32Array | undefined;
  if (previewEvery > 0) {
    const inner = denoise;
    denoise = async (xs, sigma) => (lastDenoised = await inner(xs, sigma));
  }
  const previewSpace = previewLatentSpace(base.model.family);
  const previewAt = (done: number, total: number) =>
    previewEvery > 0 && lastDenoised && (done % previewEvery === 0 || done >= total) ? approxCheapPreview(lastDenoised, shape[0], shape[1], shape[2], previewSpace) : undefined;
  let latents =
    sigmas.length > 1
      ? await runSampler(plan.sampler, {
          denoise,
          x,
          sigmas,
          noise: () => noise.next(),
          options: { eta: req.eta, sChurn: req.sChurn, sTmin: req.sTmin, sTmax: req.sTmax, sNoise: req.sNoise },
          signal: opts.signal,
          onProgress: (done, total) => {
            const preview = previewAt(done, total);
            progress({ phase: 'sampling', step: done, totalSteps: total, fraction: 0.05 + 0.85 * (done / Math.max(total, totalEvals)), ...(preview ? { preview } : {}) });
          },
        })
      : x;
  lastDenoised = undefined;
  // Samplers that stop at sigma_min (DDIM/PLMS as diffusers) leave x in sigma space; the VAE wants VP space.
  const lastSigma = sigmas[sigmas.length - 1]!;
  if (lastSigma > 0) {
    const s = 1 / Math.sqrt(1 + lastSigma * lastSigma);
    latents = latents.map((v) => v * s);
  }
  timings.sampleMs = Date.now() - t1;
  overrides.onFinalLatents?.({ shape: [count, ...shape], data: latents });

  // Decode, one image at a time to bound memory at large sizes.
  if (opts.signal?.aborted) throw abortError();
  progress({ phase: 'decoding', step: totalEvals, totalSteps: totalEvals, fraction: 0.92 });
  const t2 = Date.now();
  const decoder = await base.vaeDecoder();
  const per = shape[0] * shape[1] * shape[2];
  const modelName = base.model.name;
  const modelHash = await base.model.hash();
  const images: GeneratedImage[] = [];
  for (let i = 0; i < count; i++) {
    const latent = { shape: [1, ...shape], data: latents.slice(i * per, (i + 1) * per) };
    const { image } = await runSession(decoder, { latent });
    const [raw] = decodedToImages(image!);
    const infotext = buildInfotext({
      prompt: imagePrompts[i]!,
      negativePrompt: imageNegatives[i]!,
      steps: req.steps,
      sampler: plan.samplerName,
      scheduleType: req.schedule && req.schedule.toLowerCase() !== 'automatic' ? plan.scheduleLabel : undefined,
      cfgScale: req.cfgScale,
      seed: seeds[i]!,
      width: req.width,
      height: req.height,
      modelHash,
      modelName,
      denoisingStrength: req.initImage ? req.denoisingStrength ?? 0.75 : undefined,
      clipSkip,
      subseed: subseeds[i],
      subseedStrength,
      seedResizeFromW: req.seedResizeFromW,
      seedResizeFromH: req.seedResizeFromH,
      eta: req.eta,
      rng: req.rng,
      refiner: refiner ? refiner.model.name : undefined,
      refinerSwitchAt: refiner ? req.refinerSwitchAt : undefined,
      version: `kiln-${VERSION}`,
    });
    images.push({ image: raw!, seed: seeds[i]!, subseed: subseeds[i]!, prompt: imagePrompts[i]!, negativePrompt: imageNegatives[i]!, infotext });
  }
  timings.decodeMs = Date.now() - t2;
  timings.totalMs = Date.now() - started;
  progress({ phase: 'decoding', step: totalEvals, totalSteps: totalEvals, fraction: 1 });
  return { images, timings };
}

/**
 * diffusers starts every scheduler on "leading" timesteps (our DDIM schedule) from sqrt(sigma0^2 + 1) times
 * unit noise rather than sigma0; keep that so a seed gives diffusers' image with that schedule too.
 */
function initialNoiseScale(plan: SamplingPlan): number {
  const s0 = plan.sigmas[0]!;
  return plan.schedule === 'ddim' ? Math.sqrt(s0 * s0 + 1) : plan.initialNoiseScale;
}

interface BatchConditioning {
  /** [2B, T, D]: the B negatives then the B positives, as diffusers batches CFG. */
  hidden: Tensor;
  pooled?: Tensor;
}

async function conditionBatch(ms: ModelSessions, prompts: string[], negatives: string[], clipSkip: number): Promise<BatchConditioning> {
  const cache = new Map<string, Conditioning>();
  const encode = async (text: string, field: string) => {
    let c = cache.get(text);
    if (!c) {
      c = await encodePrompt(ms, text, { clipSkip, field });
      cache.set(text, c);
    }
    return c;
  };
  const positives = [];
  for (const p of prompts) positives.push(await encode(p, 'prompt'));
  const zerosForEmpty = ms.model.family === 'sdxl';
  const negs = [];
  for (const [i, n] of negatives.entries()) negs.push(n === '' && zerosForEmpty ? zerosLike(positives[i]!) : await encode(n, 'negative_prompt'));
  const filler = (await encode('', 'negative_prompt')).hidden;
  return stackConditionings([...negs, ...positives], filler);
}

/** SDXL's extra UNet inputs: pooled text embeds and the size/crop (base) or size/crop/aesthetic (refiner) ids. */
function addedConditions(ms: ModelSessions, cond: BatchConditioning, rows: number[], req: GenerateRequest, count: number): Record<string, Tensor> {
  if (!cond.pooled) return {};
  const pdim = cond.pooled.shape[1]!;
  const textEmbeds = new Float32Array(rows.length * pdim);
  rows.forEach((r, i) => textEmbeds.set(cond.pooled!.data.subarray(r * pdim, (r + 1) * pdim), i * pdim));
  const refiner = ms.model.family === 'sdxl-refiner';
  const idsPer = refiner ? 5 : 6;
  const timeIds = new Float32Array(rows.length * idsPer);
  rows.forEach((r, i) => {
    const negative = r < count;
    // diffusers defaults: original size = target size = (height, width), crop (0, 0); aesthetic 6.0 / 2.5.
    const ids = refiner ? [req.height, req.width, 0, 0, negative ? 2.5 : 6.0] : [req.height, req.width, 0, 0, req.height, req.width];
    timeIds.set(ids, i * idsPer);
  });
  return { text_embeds: { shape: [rows.length, pdim], data: textEmbeds }, time_ids: { shape: [rows.length, idsPer], data: timeIds } };
}

/** Classifier-free guidance over the UNet: eps = uncond + cfg * (cond - uncond), in sub-batches. */
function cfgDenoiser(
  ms: ModelSessions,
  cond: BatchConditioning,
  req: GenerateRequest,
  plan: SamplingPlan,
  schedule: ReturnType<typeof createModelSchedule>,
  count: number,
  shape: [number, number, number],
): Denoiser {
  const per = shape[0] * shape[1] * shape[2];
  const [, tokens, dim] = cond.hidden.shape as [number, number, number];
  // As diffusers: guidance only above 1. Distilled models (SDXL Turbo/Lightning, LCM) run with cfg 0 or 1 and
  // then need no negative batch at all, which halves the UNet work.
  const useCfg = req.cfgScale > 1;
  // The conditioning of each UNet sub-batch is the same at every step: gather it once.
  const subBatches: { start: number; n: number; rows: number[]; hidden: Tensor; added: Record<string, Tensor> }[] = [];
  for (let start = 0; start < count; start += MAX_UNET_BATCH_IMAGES) {
    const n = Math.min(MAX_UNET_BATCH_IMAGES, count - start);
    const imgs = Array.from({ length: n }, (_, i) => start + i);
    // Rows of the conditioning batch: negatives are 0..count-1, positives count..2count-1.
    const rows = useCfg ? [...imgs, ...imgs.map((i) => i + count)] : imgs.map((i) => i + count);
    const hidden = new Float32Array(rows.length * tokens * dim);
    rows.forEach((r, j) => hidden.set(cond.hidden.data.subarray(r * tokens * dim, (r + 1) * tokens * dim), j * tokens * dim));
    subBatches.push({ start, n, rows, hidden: { shape: [rows.length, tokens, dim], data: hidden }, added: addedConditions(ms, cond, rows, req, count) });
  }
  const modelFn = async (xScaled: Float32Array, timestep: number): Promise<Float32Array> => {
    const unet = await ms.unet();
    const out = new Float32Array(xScaled.length);
    for (const { start, n, rows, hidden, added } of subBatches) {
      const batch = rows.length;
      const sample = new Float32Array(batch * per);
      rows.forEach((r, j) => sample.set(xScaled.subarray((r % count) * per, ((r % count) + 1) * per), j * per));
      const { out: pred } = await runSession(unet, {
        sample: { shape: [batch, ...shape], data: sample },
        timestep: { shape: [batch], data: new Float32Array(batch).fill(timestep) },
        encoder_hidden_states: hidden,
        ...added,
      });
      for (let i = 0; i < n; i++) {
        const target = out.subarray((start + i) * per, (start + i + 1) * per);
        if (!useCfg) {
          target.set(pred!.data.subarray(i * per, (i + 1) * per));
          continue;
        }
        const u = pred!.data.subarray(i * per, (i + 1) * per);
        const c = pred!.data.subarray((n + i) * per, (n + i + 1) * per);
        for (let k = 0; k < per; k++) target[k] = u[k]! + req.cfgScale * (c[k]! - u[k]!);
      }
    }
    return out;
  };
  return makeDenoiser(modelFn, { prediction: ms.model.prediction, schedule, timestep: plan.timestepMode });
}

/** img2img: VAE-encode the init image and sample its latent distribution, scaled into latent space. */
async function encodeInitImage(ms: ModelSessions, pixels: Tensor, count: number, sampleNoise: Float32Array): Promise<Float32Array> {
  const encoder = await ms.vaeEncoder();
  const { mean, logvar } = await runSession(encoder, { image: pixels });
  const per = mean!.data.length;
  const out = new Float32Array(count * per);
  const scale = ms.scalingFactor;
  for (let i = 0; i < count; i++)
    for (let k = 0; k < per; k++) {
      const std = Math.exp(0.5 * logvar!.data[k]!);
      out[i * per + k] = scale * (mean!.data[k]! + std * sampleNoise[i * per + k]!);
    }
  return out;
}

function progressReporter(cb?: (e: ProgressEvent) => void): (e: ProgressEvent) => void {
  return (e) => {
    if (!cb) return;
    try {
      cb(e);
    } catch {
      // A listener's failure must not break the generation.
    }
  };
}

function abortError(): Error {
  const e = new Error('generation was cancelled');
  e.name = 'AbortError';
  return e;
}

export type { BatchNoise };
export { KilnInputError };
