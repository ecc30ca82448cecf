// Feeds of the diffusers UNet2DConditionModel graph (nets/unet.ts) shared by the SD families: sample, timestep
// and the text hidden states; SDXL adds its pooled text embedding and size/crop ids (time_ids).
import { createModelSchedule, makeDenoiser, type BetaSchedule } from '../samplers/index.ts';
import type { Feed } from '../runtime.ts';
import type { Tensor } from '../tensor.ts';
import type { SchedulerConfig } from '../weights/types.ts';
import type { ConditionRows, DiffusionExtras, DiffusionFeeds, UnetFamily } from './types.ts';

const stepFeeds: DiffusionFeeds['stepFeeds'] = (x, at, condition) => ({
  sample: x,
  timestep: { shape: [x.shape[0]!], data: new Float32Array(x.shape[0]!).fill(at.timestep) },
  ...condition,
});

/** Extra UNet input channels per image, concatenated after the latent (inpainting UNets: mask + masked-image latent). */
export interface ConcatChannels {
  channels: number;
  /** [count, channels, h, w] */
  data: Float32Array;
}

/**
 * A 9-channel inpainting UNet's sample: each row's scaled latent, then its image's extra channels, as diffusers'
 * StableDiffusionInpaintPipeline builds it (`cat([latents, mask, masked_image_latents], dim=1)`).
 */
export function withConcatChannels(sample: Float32Array, images: number[], shape: readonly [number, number, number], extra: ConcatChannels): Tensor {
  const [c, h, w] = shape;
  const per = c * h * w;
  const perExtra = extra.channels * h * w;
  const out = new Float32Array(images.length * (per + perExtra));
  images.forEach((img, j) => {
    out.set(sample.subarray(j * per, (j + 1) * per), j * (per + perExtra));
    out.set(extra.data.subarray(img * perExtra, (img + 1) * perExtra), j * (per + perExtra) + per);
  });
  return { shape: [images.length, c + extra.channels, h, w], data: out };
}

/** An inpainting UNet (SD1.5/SD2/SDXL inpainting): its input conv takes the latent plus a mask and a masked-image latent. */
export function isInpaintingUnet(inChannels: number, latentChannels: number): boolean {
  return inChannels === 2 * latentChannels + 1;
}

/** SD1/SD2: text hidden states only. */
export const textOnlyUnetFeeds: DiffusionFeeds = {
  conditionFeeds: (rows) => ({ encoder_hidden_states: rows.hidden }),
  stepFeeds,
  output: 'out',
};

/**
 * SDXL: also the pooled text embedding (text_embeds) and one row of `timeIds(negative, extras)` per batch row
 * (time_ids).
 */
export function addedConditionUnetFeeds(timeIds: (negative: boolean, extras: DiffusionExtras) => number[]): DiffusionFeeds {
  return {
    conditionFeeds(rows: ConditionRows, extras: DiffusionExtras): Record<string, Feed> {
      const pooled = rows.pooled;
      if (!pooled) throw new Error('internal error: this family needs a pooled text embedding');
      const n = rows.negative.length;
      const ids = rows.negative.map((negative) => timeIds(negative, extras));
      const perRow = ids[0]!.length;
      const timeData = new Float32Array(n * perRow);
      ids.forEach((row, i) => timeData.set(row, i * perRow));
      return {
        encoder_hidden_states: rows.hidden,
        text_embeds: pooled,
        time_ids: { shape: [n, perRow], data: timeData },
      };
    },
    stepFeeds,
    output: 'out',
  };
}

/** The discrete-time (1000 training steps) schedule and eps/v denoiser every SD family uses. */
export const discreteTime: Pick<UnetFamily, 'modelSchedule' | 'denoiser'> = {
  modelSchedule: (sc: SchedulerConfig, flavour?: 'diffusers' | 'a1111') =>
    createModelSchedule({
      betaStart: sc.beta_start,
      betaEnd: sc.beta_end,
      betaSchedule: sc.beta_schedule as BetaSchedule,
      numTrainTimesteps: sc.num_train_timesteps,
      trainedBetas: sc.trained_betas ?? undefined,
      float64Cumprod: flavour === 'a1111',
    }),
  denoiser: makeDenoiser,
};
