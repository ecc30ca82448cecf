// Engine-side checks of a generation request. The server validates earlier with its own limits; these
// guard every other caller (CLI, library use) so bad input always becomes a KilnInputError naming the field.
import { validateMask } from './inpaint.ts';
import { checkResizeMode } from './init-fit.ts';
import { KilnInputError, MAX_DEEP_CACHE_INTERVAL, type GenerateRequest, type SamplingFlavour, type SdeNoise, type Tiling } from '../api.ts';

/**
 * `textEncoderLayers`: the fewest layers among the loaded models' text encoders, the deepest clip skip they
 * allow (12 for real SD models; fewer in small or pruned ones).
 */
export function validateRequest(req: GenerateRequest, latentFactor: number, textEncoderLayers = 12): void {
  const int = (v: unknown, field: string, min: number, max: number) => {
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
      throw new KilnInputError(`${field} must be an integer from ${min} to ${max}, got ${JSON.stringify(v)}`, field);
    }
  };
  const num = (v: unknown, field: string, min: number, max: number) => {
    if (typeof v !== 'number' || !Number.isFinite(v) || v < min || v > max) {
      throw new KilnInputError(`${field} must be a number from ${min} to ${max}, got ${JSON.stringify(v)}`, field);
    }
  };
  if (!Array.isArray(req.prompts) || req.prompts.length === 0) throw new KilnInputError('at least one prompt is required', 'prompt');
  req.prompts.forEach((p, i) => {
    if (typeof p !== 'string') throw new KilnInputError(`prompt ${i} must be a string`, 'prompt');
  });
  if (Array.isArray(req.negativePrompt) && req.negativePrompt.length !== req.prompts.length) {
    throw new KilnInputError(`negative_prompt has ${req.negativePrompt.length} entries for ${req.prompts.length} prompts`, 'negative_prompt');
  }
  int(req.imagesPerPrompt ?? 1, 'n_iter', 1, 1000);
  int(req.width, 'width', latentFactor, 16384);
  int(req.height, 'height', latentFactor, 16384);
  if (req.width % latentFactor !== 0) throw new KilnInputError(`width must be a multiple of ${latentFactor}, got ${req.width}`, 'width');
  if (req.height % latentFactor !== 0) throw new KilnInputError(`height must be a multiple of ${latentFactor}, got ${req.height}`, 'height');
  int(req.steps, 'steps', 1, 1000);
  num(req.cfgScale, 'cfg_scale', 0, 100);
  if (req.clipSkip !== undefined) {
    int(req.clipSkip, 'clip_skip', 1, 12);
    if (req.clipSkip > textEncoderLayers) {
      throw new KilnInputError(
        `clip_skip must be an integer from 1 to ${textEncoderLayers} for this model (its text encoder has ${textEncoderLayers} layers), got ${req.clipSkip}`,
        'clip_skip',
      );
    }
  }
  if (req.variation) num(req.variation.strength, 'subseed_strength', 0, 1);
  if (req.samplerOptions?.eta !== undefined) num(req.samplerOptions.eta, 'eta', 0, 10);
  if (req.init) {
    num(req.init.strength, 'denoising_strength', 0, 1);
    if (req.init.noiseMultiplier !== undefined) num(req.init.noiseMultiplier, 'initial_noise_multiplier', 0, 2);
    const { width, height, channels, data } = req.init.image;
    if (data.length !== width * height * channels) throw new KilnInputError('init image data does not match its size', 'init_images');
    checkResizeMode(req.init.resizeMode);
    if ((req.init.resizeMode ?? 0) !== 0 && (req.mask || req.outpaint)) {
      throw new KilnInputError('resize_mode 1-3 apply to plain img2img; inpainting and outpainting fit the image with resize_mode 0', 'resize_mode');
    }
    if (req.init.resizeMode === 3 && (width < 2 * latentFactor || height < 2 * latentFactor)) {
      throw new KilnInputError(
        `resize_mode 3 encodes the init image at its own size: it must be at least ${2 * latentFactor}x${2 * latentFactor} pixels`,
        'init_images',
      );
    }
  }
  if (req.mask) {
    if (!req.init) throw new KilnInputError('mask: a mask needs an init image to repaint (img2img)', 'mask');
    validateMask(req.mask);
  }
  if (req.refiner) num(req.refiner.switchAt, 'refiner_switch_at', 0, 1);
  if ((req.loras?.length ?? 0) > 64) throw new KilnInputError(`at most 64 LoRAs per request, got ${req.loras!.length}`, 'loras');
  for (const [i, l] of (req.loras ?? []).entries()) {
    num(l.te, `loras[${i}].te`, -5, 5);
    num(l.unet, `loras[${i}].unet`, -5, 5);
  }
  if (req.flavour !== undefined && !FLAVOURS.includes(req.flavour)) {
    throw new KilnInputError(`flavour must be "diffusers" or "a1111", got ${JSON.stringify(req.flavour)}`, 'flavour');
  }
  if (req.sdeNoise !== undefined && !SDE_NOISES.includes(req.sdeNoise)) {
    throw new KilnInputError(`noise must be "brownian" or "gaussian", got ${JSON.stringify(req.sdeNoise)}`, 'noise');
  }
  if (req.deepCache) {
    const { interval, branch } = req.deepCache;
    if (!Number.isInteger(interval) || interval < 1 || interval > MAX_DEEP_CACHE_INTERVAL) {
      throw new KilnInputError(
        `deep_cache.interval must be an integer from 1 to ${MAX_DEEP_CACHE_INTERVAL} (1 = off), got ${JSON.stringify(interval)}`,
        'deep_cache.interval',
      );
    }
    // The model's own upper bound is checked when its graph is cut (nets/unet.ts stepReuseCut).
    if (branch !== undefined && (!Number.isInteger(branch) || branch < 0)) {
      throw new KilnInputError(`deep_cache.branch must be a non-negative integer (0 = the shallowest cut), got ${JSON.stringify(branch)}`, 'deep_cache.branch');
    }
  }
  if (req.tiling !== undefined && !TILINGS.includes(req.tiling)) {
    throw new KilnInputError(`tiling must be one of ${TILINGS.map((t) => JSON.stringify(t)).join(', ')}, got ${JSON.stringify(req.tiling)}`, 'tiling');
  }
}

const TILINGS: readonly unknown[] = ['xy', 'x', 'y'] satisfies Tiling[];
const FLAVOURS: readonly unknown[] = ['diffusers', 'a1111'] satisfies SamplingFlavour[];
const SDE_NOISES: readonly unknown[] = ['brownian', 'gaussian'] satisfies SdeNoise[];
