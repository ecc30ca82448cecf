// SDXL refiner: OpenCLIP-bigG only, the UNet conditioned on size, crop and an aesthetic score (5 ids).
import { penultimateClipConditioning } from './clip-conditioning.ts';
import { SDXL_LATENTS } from './latent-spaces.ts';
import { sdxlVaeNeedsFp32 } from './sdxl.ts';
import { openClip } from './checkpoint-keys.ts';
import type { ModelFamily } from './types.ts';
import { addedConditionUnetFeeds, discreteTime } from './unet-feeds.ts';

/** diffusers' defaults: aesthetic score 6.0 for the prompt, 2.5 for the negative. */
const AESTHETIC_SCORE = { positive: 6.0, negative: 2.5 };

export const sdxlRefiner: ModelFamily = {
  name: 'sdxl-refiner',
  // By keys (kohya SGM names): the refiner's up levels 1 and 2 (output blocks 3-8) have 4 transformer blocks; the
  // base's output blocks 3-5 have 2 and 6-8 none, SD1/SD2's have 1.
  lora: {
    baseModelVersions: ['sdxl_refiner'],
    keyPattern: /^lora_unet_output_blocks_([678]_1_transformer_blocks_[1-3]|[345]_1_transformer_blocks_[23])_/,
    narrows: ['sdxl'],
  },
  label: 'Stable Diffusion XL refiner',
  matchesCheckpoint: (keys) => keys.hasPrefix('conditioner.embedders.0.model.'),
  matchesFolder: (facts) => facts.textEncoders.has('text_encoder_2') && !facts.textEncoders.has('text_encoder'),
  checkpoint: { unetPrefix: 'model.diffusion_model.', vaePrefix: 'first_stage_model.' },
  textEncoders: [
    {
      component: 'text_encoder_2',
      tokenizerRole: 'openclip-bigG',
      openclip: true,
      checkpoint: { prefix: 'conditioner.embedders.0.model.', rename: openClip({ dropLastLayer: false, withProjection: true }) },
    },
  ],
  defaultPrediction: (keys) => (keys.has('v_pred') ? 'v_prediction' : 'epsilon'),
  unet: {
    attentionHeads: { width: 64 },
    addedTimeIds: 5,
    upcastAttention: () => false,
    sampleSize: () => 128,
    buildOptions: { timeIds: 5 },
  },
  vae: { sampleSize: 1024, needsFp32: sdxlVaeNeedsFp32 },
  latentSpace: SDXL_LATENTS,
  conditioning: penultimateClipConditioning(false),
  diffusion: addedConditionUnetFeeds((negative, { width, height }) => [height, width, 0, 0, negative ? AESTHETIC_SCORE.negative : AESTHETIC_SCORE.positive]),
  ...discreteTime,
  scheduleTables: 'sdxl',
};
