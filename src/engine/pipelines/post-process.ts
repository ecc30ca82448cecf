// Stage 5, post-processing: each decoded image with its seed, prompts and A1111 infotext.
import type { GenerateRequest, GeneratedImage, RawImage } from '../api.ts';
import { buildInfotext } from '../infotext.ts';
import type { SamplingPlan } from '../samplers/index.ts';
import { VERSION } from '../../version.ts';
import type { ImageBatch } from './batch.ts';

export interface ImageProvenance {
  plan: SamplingPlan;
  modelName: string;
  modelHash: string;
  refinerName?: string;
  /** Stage-specific infotext entries (inpainting). */
  extra?: [string, string | number][];
}

export function finishImages(images: RawImage[], req: GenerateRequest, batch: ImageBatch, p: ImageProvenance): GeneratedImage[] {
  return images.map((image, i) => {
    const infotext = buildInfotext({
      prompt: batch.prompts[i]!,
      negativePrompt: batch.negatives[i]!,
      steps: req.steps,
      sampler: p.plan.samplerName,
      scheduleType: req.schedule && req.schedule.toLowerCase() !== 'automatic' ? p.plan.scheduleLabel : undefined,
      cfgScale: req.cfgScale,
      seed: batch.seeds[i]!,
      width: req.width,
      height: req.height,
      modelHash: p.modelHash,
      modelName: p.modelName,
      denoisingStrength: req.init?.strength,
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
      extra: p.extra,
      version: `kiln-${VERSION}`,
    });
    return { image, seed: batch.seeds[i]!, subseed: batch.subseeds[i]!, prompt: batch.prompts[i]!, negativePrompt: batch.negatives[i]!, infotext };
  });
}
