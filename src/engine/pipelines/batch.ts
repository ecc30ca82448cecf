// The batch of a request, one entry per image: prompt, negative prompt, seed and variation seed.
import type { GenerateRequest } from '../api.ts';
import { batchSeeds, resolveSeed } from '../rng.ts';

export interface ImageBatch {
  count: number;
  prompts: string[];
  negatives: string[];
  seeds: number[];
  subseeds: number[];
  subseedStrength: number;
  /** Set when this is a window of a larger batch (batch-window.ts): its first image there, and the whole batch. */
  window?: { start: number; whole: ImageBatch };
}

export function expandBatch(req: GenerateRequest): ImageBatch {
  const perPrompt = req.imagesPerPrompt ?? 1;
  const count = req.prompts.length * perPrompt;
  const seed = resolveSeed(req.seed);
  const subseed = resolveSeed(req.variation?.seed, Math.random, 'subseed');
  const subseedStrength = req.variation?.strength ?? 0;
  const { seeds, subseeds } = batchSeeds(seed, subseed, subseedStrength, count);
  const negatives = req.prompts.map((_, i) => (Array.isArray(req.negativePrompt) ? (req.negativePrompt[i] ?? '') : (req.negativePrompt ?? '')));
  return {
    count,
    prompts: req.prompts.flatMap((p) => Array<string>(perPrompt).fill(p)),
    negatives: negatives.flatMap((n) => Array<string>(perPrompt).fill(n)),
    seeds,
    subseeds,
    subseedStrength,
  };
}
