// Stage 5, post-processing: each decoded image with its seed, prompts and A1111 infotext.
import type { GenerateRequest, GeneratedImage, RawImage } from '../api.ts';
import { buildInfotext, type InfotextFields } from '../infotext.ts';
import type { SamplingPlan } from '../samplers/index.ts';
import { VERSION } from '../../version.ts';
import type { ImageBatch } from './batch.ts';

export interface ImageProvenance {
  plan: SamplingPlan;
  modelName: string;
  modelHash: string;
  refinerName?: string;
  loraHashes?: string;
  /** The hires pass's sampler, when hires fix ran. */
  hiresSamplerName?: string;
  /** Stage-specific infotext entries (inpainting). */
  extra?: [string, string | number][];
  /** Flow models: the CFG scale actually used (Flux: 1, no CFG batch) and Flux dev's distilled guidance. */
  cfgScale?: number;
  distilledGuidance?: number;
}

export function finishImages(images: RawImage[], req: GenerateRequest, batch: ImageBatch, p: ImageProvenance): GeneratedImage[] {
  return images.map((image, i) => {
    const infotext = buildInfotext({
      prompt: batch.prompts[i]!,
      negativePrompt: batch.negatives[i]!,
      steps: req.steps,
      sampler: p.plan.samplerName,
      scheduleType: req.schedule && req.schedule.toLowerCase() !== 'automatic' ? p.plan.scheduleLabel : undefined,
      cfgScale: p.cfgScale ?? req.cfgScale,
      distilledCfgScale: p.distilledGuidance,
      seed: batch.seeds[i]!,
      faceRestoration: req.restoreFaces?.model,
      width: req.width,
      height: req.height,
      modelHash: p.modelHash,
      modelName: p.modelName,
      denoisingStrength: req.init?.strength ?? req.hires?.denoisingStrength,
      clipSkip: req.clipSkip ?? 1,
      subseed: batch.subseeds[i],
      subseedStrength: batch.subseedStrength,
      seedResizeFromW: req.seedResizeFrom?.width,
      seedResizeFromH: req.seedResizeFrom?.height,
      eta: req.samplerOptions?.eta,
      rng: req.rng,
      refiner: p.refinerName,
      refinerSwitchAt: p.refinerName ? req.refiner?.switchAt : undefined,
      tiling: req.tiling,
      deepCache: req.deepCache && req.deepCache.interval > 1 ? { interval: req.deepCache.interval, branch: req.deepCache.branch ?? 0 } : undefined,
      loraHashes: p.loraHashes,
      noiseMultiplier: req.init?.noiseMultiplier,
      ...hiresInfotext(req, p, i, batch),
      extra: p.extra,
      version: `kiln-${VERSION}`,
    });
    return { image, seed: batch.seeds[i]!, subseed: batch.subseeds[i]!, prompt: batch.prompts[i]!, negativePrompt: batch.negatives[i]!, infotext };
  });
}

/** A1111's hires extra_generation_params, in its insertion order (processing.py txt2img init). */
function hiresInfotext(req: GenerateRequest, p: ImageProvenance, i: number, batch: ImageBatch): Partial<InfotextFields> {
  const h = req.hires;
  if (!h) return {};
  const resize = (h.resizeX ?? 0) > 0 || (h.resizeY ?? 0) > 0;
  return {
    hiresSampler: h.sampler && p.hiresSamplerName !== p.plan.samplerName ? p.hiresSamplerName : undefined,
    hiresScheduleType: h.schedule && h.schedule.toLowerCase() !== 'automatic' ? h.schedule : undefined,
    hiresPrompt: h.prompt !== undefined && h.prompt !== batch.prompts[i] ? h.prompt : undefined,
    hiresNegativePrompt: h.negativePrompt !== undefined && h.negativePrompt !== batch.negatives[i] ? h.negativePrompt : undefined,
    hiresCfg: h.cfgScale !== undefined && h.cfgScale !== req.cfgScale ? h.cfgScale : undefined,
    hiresUpscale: resize ? undefined : (h.scale ?? 2),
    hiresResize: resize ? `${h.resizeX ?? 0}x${h.resizeY ?? 0}` : undefined,
    hiresSteps: h.steps || undefined,
    hiresUpscaler: h.upscaler,
  };
}
