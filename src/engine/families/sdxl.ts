// SDXL base: CLIP-L + OpenCLIP-bigG (penultimate layers joined, bigG's pooled projection), 1024 px, the UNet
// conditioned on the pooled embedding and six size/crop ids.
import { penultimateClipConditioning } from './clip-conditioning.ts';
import { SDXL_LATENTS } from './latent-spaces.ts';
import type { VaeConfig } from '../weights/types.ts';
import { mapHfClip, openClip } from './checkpoint-keys.ts';
import type { ModelFamily } from './types.ts';
import { addedConditionUnetFeeds, discreteTime } from './unet-feeds.ts';

/** The SDXL VAE overflows in fp16 unless a fixed VAE says otherwise (force_upcast false). */
export const sdxlVaeNeedsFp32 = (config: VaeConfig): boolean => config.force_upcast !== false;

export const sdxl: ModelFamily = {
  name: 'sdxl',
  // Two text encoders (kohya te1/te2, diffusers text_encoder_2), or transformer depth > 1 in SGM-named blocks.
  lora: {
    baseModelVersions: ['sdxl_base', 'sdxl_v'],
    keyPattern: /^lora_te[12]_|^text_encoder_2\.|^lora_unet_(input|output)_blocks_\d+_1_transformer_blocks_[1-9]/,
  },
  label: 'Stable Diffusion XL',
  matchesCheckpoint: (keys) => keys.hasPrefix('conditioner.embedders.0.transformer.') && keys.hasPrefix('conditioner.embedders.1.model.'),
  matchesFolder: (facts) => facts.textEncoders.has('text_encoder') && facts.textEncoders.has('text_encoder_2'),
  checkpoint: { unetPrefix: 'model.diffusion_model.', vaePrefix: 'first_stage_model.' },
  textEncoders: [
    { component: 'text_encoder', tokenizerRole: 'clip-l', openclip: false, checkpoint: { prefix: 'conditioner.embedders.0.transformer.', rename: mapHfClip } },
    {
      component: 'text_encoder_2',
      tokenizerRole: 'openclip-bigG',
      openclip: true,
      checkpoint: { prefix: 'conditioner.embedders.1.model.', rename: openClip({ dropLastLayer: false, withProjection: true }) },
    },
  ],
  defaultPrediction: (keys) => (keys.has('v_pred') ? 'v_prediction' : 'epsilon'),
  unet: {
    attentionHeads: { width: 64 },
    addedTimeIds: 6,
    upcastAttention: () => false,
    sampleSize: () => 128,
    buildOptions: { timeIds: 6 },
  },
  vae: { sampleSize: 1024, needsFp32: sdxlVaeNeedsFp32 },
  latentSpace: SDXL_LATENTS,
  conditioning: penultimateClipConditioning(true),
  // diffusers defaults: original size = target size = (height, width), crop (0, 0).
  diffusion: addedConditionUnetFeeds((_negative, { width, height }) => [height, width, 0, 0, height, width]),
  ...discreteTime,
  scheduleTables: 'sdxl',
};
