// The hires-fix stage, A1111's StableDiffusionProcessingTxt2Img (v1.9/1.10: calculate_target_resolution,
// sample_hr_pass): the first pass's latents are upscaled (in latent space with a latent mode, otherwise decoded,
// resized with resize_image(0, ...) through the named upscaler and encoded again), cropped when both target
// sides were given, noised with fresh noise from the same seeds at the new size, and denoised by a second pass
// over the last `hr steps + 1` sigmas of an int(steps / strength)-step schedule.
import { KilnInputError, type GenerateRequest, type HiresRequest, type RawImage } from '../api.ts';
import { planSampling, type SamplingPlan } from '../samplers/index.ts';
import { PIL_UPSCALERS, resizeImage, type UpscaleStep } from './a1111-resize.ts';
import { LATENT_UPSCALE_MODES, upscaleLatent } from './latent-upscale.ts';
import type { ModelSessions } from './model-sessions.ts';
import { A1111_TILE, A1111_TILE_OVERLAP, upscaleWithModel } from './upscale-image.ts';
import { openUpscaler, type UpscalerSettings } from './upscaler-model.ts';
import { vaeDecode, vaeEncode, vaeTilesFor } from './vae-tiles.ts';

/** The built-in image upscalers (besides model files) A1111 lists. */
export const BUILTIN_IMAGE_UPSCALERS = ['None', 'Lanczos', 'Nearest'] as const;

/** A1111's calculate_target_resolution: the upscaled size, and how many latent pixels to crop per axis. */
export interface HiresTarget {
  width: number;
  height: number;
  truncateX: number;
  truncateY: number;
}

const floorDiv = (a: number, b: number) => Math.floor(a / b);

export function hiresTarget(width: number, height: number, h: Pick<HiresRequest, 'scale' | 'resizeX' | 'resizeY'>, latentFactor = 8): HiresTarget {
  const rx = h.resizeX ?? 0;
  const ry = h.resizeY ?? 0;
  if (rx === 0 && ry === 0) {
    const scale = h.scale ?? 2;
    return { width: Math.trunc(width * scale), height: Math.trunc(height * scale), truncateX: 0, truncateY: 0 };
  }
  if (ry === 0) return { width: rx, height: floorDiv(rx * height, width), truncateX: 0, truncateY: 0 };
  if (rx === 0) return { width: floorDiv(ry * width, height), height: ry, truncateX: 0, truncateY: 0 };
  const cover = width / height < rx / ry ? { width: rx, height: floorDiv(rx * height, width) } : { width: floorDiv(ry * width, height), height: ry };
  return { ...cover, truncateX: floorDiv(cover.width - rx, latentFactor), truncateY: floorDiv(cover.height - ry, latentFactor) };
}

/** The latent size of the second pass after the crop: [h, w]. */
export function hiresLatentSize(t: HiresTarget, latentFactor: number): [number, number] {
  return [floorDiv(t.height, latentFactor) - t.truncateY, floorDiv(t.width, latentFactor) - t.truncateX];
}

/** Checks the hires settings; throws KilnInputError naming the field. */
export function validateHires(req: GenerateRequest, latentFactor: number): void {
  const h = req.hires;
  if (!h) return;
  if (req.init) throw new KilnInputError('hires fix is a txt2img feature; it cannot be combined with an init image', 'hires');
  const num = (v: unknown, field: string, min: number, max: number) => {
    if (v !== undefined && (typeof v !== 'number' || !Number.isFinite(v) || v < min || v > max)) {
      throw new KilnInputError(`${field} must be a number from ${min} to ${max}, got ${JSON.stringify(v)}`, field);
    }
  };
  num(h.scale, 'hr_scale', 1, 8);
  num(h.resizeX, 'hr_resize_x', 0, 16384);
  num(h.resizeY, 'hr_resize_y', 0, 16384);
  num(h.steps, 'hr_second_pass_steps', 0, 1000);
  num(h.denoisingStrength, 'denoising_strength', 0.01, 1);
  if (typeof h.denoisingStrength !== 'number') throw new KilnInputError('denoising_strength is required with hires fix', 'denoising_strength');
  num(h.cfgScale, 'hr_cfg', 0, 100);
  if (!isLatentUpscaler(h.upscaler) && !(BUILTIN_IMAGE_UPSCALERS as readonly string[]).includes(h.upscaler) && !h.upscalerPath) {
    throw new KilnInputError(
      `hr_upscaler ${JSON.stringify(h.upscaler)} is unknown; use one of ${[...Object.keys(LATENT_UPSCALE_MODES), ...BUILTIN_IMAGE_UPSCALERS].join(', ')} or an installed upscaler model`,
      'hr_upscaler',
    );
  }
  const t = hiresTarget(req.width, req.height, h, latentFactor);
  const [lh, lw] = hiresLatentSize(t, latentFactor);
  if (lh < 1 || lw < 1) throw new KilnInputError(`the hires size ${t.width}x${t.height} is smaller than one latent pixel`, 'hr_scale');
}

export function isLatentUpscaler(name: string): boolean {
  return Object.hasOwn(LATENT_UPSCALE_MODES, name);
}

/** The second pass's sigmas: the last steps+1 of an int(steps / min(strength, 0.999))-step schedule (fixed-steps img2img). */
export function hiresSigmas(ms: ModelSessions, req: GenerateRequest): { plan: SamplingPlan; sigmas: number[] } {
  const h = req.hires!;
  const steps = h.steps || req.steps;
  const total = Math.trunc(steps / Math.min(h.denoisingStrength, 0.999));
  const plan = planSampling({
    sampler: h.sampler ?? req.sampler,
    schedule: h.schedule ?? req.schedule,
    steps: Math.max(total, 1),
    model: ms.unetFamily.modelSchedule(ms.model.schedulerConfig, req.flavour),
    flavour: req.flavour,
    scheduleTables: ms.unetFamily.scheduleTables,
  });
  const tEnc = steps - 1;
  return { plan, sigmas: plan.sigmas.slice(Math.max(plan.sigmas.length - 1 - tEnc - 1, 0)) };
}

/**
 * Upscales the first pass's latents ([count, C, h, w], in the decoder's space) to the hires latent size:
 * F.interpolate for latent modes; otherwise decode -> uint8 (truncated, as A1111) -> resize_image -> encode.
 */
export async function upscaleFirstPass(
  ms: ModelSessions,
  req: GenerateRequest,
  latents: Float32Array,
  count: number,
  shape: [number, number, number],
  upscalerSettings: UpscalerSettings,
  onProgress: (fraction: number) => void,
): Promise<{ latents: Float32Array; shape: [number, number, number] }> {
  const h = req.hires!;
  const f = ms.latentFactor;
  const t = hiresTarget(req.width, req.height, h, f);
  const [c, lh, lw] = shape;
  const fullH = floorDiv(t.height, f);
  const fullW = floorDiv(t.width, f);
  const per = c * lh * lw;
  let up: Float32Array;
  if (isLatentUpscaler(h.upscaler)) {
    const { mode, antialias } = LATENT_UPSCALE_MODES[h.upscaler]!;
    up = upscaleLatent({ shape: [count, c, lh, lw], data: latents }, fullH, fullW, mode, antialias).data;
  } else {
    const step = await imageUpscaleStep(h, upscalerSettings);
    const decoder = await ms.vaeDecoder(req.tiling);
    const encoder = await ms.vaeEncoder(req.tiling);
    up = new Float32Array(count * c * fullH * fullW);
    for (let i = 0; i < count; i++) {
      const image = await vaeDecode(decoder, { shape: [1, ...shape], data: latents.slice(i * per, (i + 1) * per) }, f, req.tiling, vaeTilesFor(ms));
      // A1111 resizes to hr_upscale_to; the VAE needs whole latent pixels, so the image is fitted to those.
      const resized = await resizeImage(0, truncatedImage(image.data, lh * f, lw * f), fullW * f, fullH * f, step);
      const { mean } = await vaeEncode(encoder, unitToSigned(resized), f, req.tiling, vaeTilesFor(ms));
      // The latent distribution's mean: A1111 samples it from torch's unseeded global generator instead.
      up.set(
        mean.data.map((v) => v * ms.scalingFactor),
        i * c * fullH * fullW,
      );
      onProgress((i + 1) / count);
    }
  }
  return cropLatents(up, count, c, fullH, fullW, t);
}

/** resize_image's upscaler for a name: undefined for "None" (one Lanczos resize). */
async function imageUpscaleStep(h: HiresRequest, settings: UpscalerSettings): Promise<UpscaleStep | undefined> {
  if (h.upscaler === 'None') return undefined;
  if (h.upscaler === 'Lanczos' || h.upscaler === 'Nearest') return PIL_UPSCALERS[h.upscaler];
  const model = await openUpscaler(h.upscalerPath!, settings);
  return (img) => upscaleWithModel(model.run, img, A1111_TILE, A1111_TILE_OVERLAP);
}

/** VAE output in [-1, 1] -> uint8 RGB by A1111's (255 * clamp((x + 1) / 2, 0, 1)).astype(uint8): truncation. */
function truncatedImage(decoded: Float32Array, height: number, width: number): RawImage {
  const plane = height * width;
  const data = new Uint8Array(plane * 3);
  for (let ch = 0; ch < 3; ch++)
    for (let p = 0; p < plane; p++) {
      const v = Math.min(1, Math.max(0, (decoded[ch * plane + p]! + 1) / 2));
      data[p * 3 + ch] = Math.trunc(Math.fround(255 * v));
    }
  return { data, width, height, channels: 3 };
}

/** uint8 RGB -> [1, 3, H, W] float32 in [-1, 1] via float32(u8) / 255 (as A1111's np.float32 / 255). */
function unitToSigned(img: RawImage): { shape: number[]; data: Float32Array } {
  const plane = img.width * img.height;
  const data = new Float32Array(3 * plane);
  for (let p = 0; p < plane; p++) for (let ch = 0; ch < 3; ch++) data[ch * plane + p] = 2 * Math.fround(img.data[p * 3 + ch]! / 255) - 1;
  return { shape: [1, 3, img.height, img.width], data };
}

/** samples[:, :, ty//2 : H-(ty+1)//2, tx//2 : W-(tx+1)//2] */
function cropLatents(
  up: Float32Array,
  count: number,
  c: number,
  h: number,
  w: number,
  t: HiresTarget,
): { latents: Float32Array; shape: [number, number, number] } {
  if (t.truncateX === 0 && t.truncateY === 0) return { latents: up, shape: [c, h, w] };
  const top = floorDiv(t.truncateY, 2);
  const left = floorDiv(t.truncateX, 2);
  const oh = h - t.truncateY;
  const ow = w - t.truncateX;
  const out = new Float32Array(count * c * oh * ow);
  for (let p = 0; p < count * c; p++)
    for (let y = 0; y < oh; y++) out.set(up.subarray(p * h * w + (y + top) * w + left, p * h * w + (y + top) * w + left + ow), (p * oh + y) * ow);
  return { latents: out, shape: [c, oh, ow] };
}
