// A window of a batch: images start..start+count-1 of a request's whole batch, generated exactly as they would be
// in the whole batch. This is what lets a large batch be split over several workers and put back together byte
// for byte. What an image's pixels depend on besides its own seed, and how a window keeps each the same:
// - its seed and variation seed (seed + i): the window takes them from the whole batch;
// - the prompt conditioning, padded to the longest prompt of the batch (77-token chunks): the window conditions
//   the whole batch's prompts (encodings are cached per text) and keeps its rows;
// - which images share a network call (cfg.ts runs sub-batches of MAX_NET_BATCH_IMAGES): a window starts on a
//   multiple of it, so every call holds the same images as in the whole batch;
// - samplers that couple the batch (DPM adaptive sizes its steps by an error norm over every image): such a
//   request cannot be split (batchSplitRefusal).
// Every other stage (noise, img2img encode, decode, face restoration, transparency) works image by image.
import { KilnInputError, type GenerateRequest } from '../api.ts';
import { parseSamplerName } from '../samplers/index.ts';
import type { ImageBatch } from './batch.ts';
import { MAX_NET_BATCH_IMAGES } from './denoisers/cfg.ts';

/** A batch window's first image must be a multiple of this (see the top of this file). */
export const BATCH_WINDOW_ALIGN = MAX_NET_BATCH_IMAGES;

export interface BatchWindow {
  /** The first image of the window in the whole batch (a multiple of BATCH_WINDOW_ALIGN). */
  start: number;
  count: number;
}

/** Samplers whose step for one image depends on the other images of the batch. */
const BATCH_COUPLED_SAMPLERS = new Set(['dpm_adaptive']);

/**
 * Why a request's batch cannot be split into windows without changing pixels, or undefined when it can.
 * `samplers`: the sampler names the request uses (first pass, hires pass), as the client gave them.
 */
export function batchSplitRefusal(samplers: ReadonlyArray<string | undefined>): string | undefined {
  for (const name of samplers) {
    if (name === undefined) continue;
    const id = samplerId(name);
    if (id && BATCH_COUPLED_SAMPLERS.has(id)) return `the ${name} sampler sizes its steps over the whole batch`;
  }
  return undefined;
}

function samplerId(name: string): string | undefined {
  try {
    return parseSamplerName(name).sampler;
  } catch {
    return undefined;
  }
}

/** The window of a whole batch (checked); the result remembers the whole batch for conditioning. */
export function windowBatch(whole: ImageBatch, window: GenerateRequest['batchWindow']): ImageBatch {
  if (!window) return whole;
  const { start, count } = window;
  if (!Number.isInteger(start) || start < 0 || start % BATCH_WINDOW_ALIGN !== 0 || start >= whole.count)
    throw new KilnInputError(
      `batch_window.start must be a multiple of ${BATCH_WINDOW_ALIGN} below the batch size ${whole.count}, got ${JSON.stringify(start)}`,
      'batch_window',
    );
  if (!Number.isInteger(count) || count < 1 || start + count > whole.count)
    throw new KilnInputError(`batch_window.count must be 1 to ${whole.count - start}, got ${JSON.stringify(count)}`, 'batch_window');
  const end = start + count;
  return {
    count,
    prompts: whole.prompts.slice(start, end),
    negatives: whole.negatives.slice(start, end),
    seeds: whole.seeds.slice(start, end),
    subseeds: whole.subseeds.slice(start, end),
    subseedStrength: whole.subseedStrength,
    window: { start, whole },
  };
}
