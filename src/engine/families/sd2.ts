// Stable Diffusion 2.x: OpenCLIP-H text encoder (its last layer dropped), 64-wide attention heads. Single files
// default to v-prediction at 768 px (the SD2.x 768 models); SD2-base 512 models need prediction 'epsilon'.
import { singleClipConditioning } from './clip-conditioning.ts';
import { SD_LATENTS } from './latent-spaces.ts';
import { openClip } from './checkpoint-keys.ts';
import type { FolderFacts, ModelFamily } from './types.ts';
import { discreteTime, textOnlyUnetFeeds } from './unet-feeds.ts';

/** One text encoder that is OpenCLIP-H: 1024-wide cross-attention or a gelu encoder. */
export function looksLikeSd2(facts: FolderFacts): boolean {
  return facts.unetConfig.cross_attention_dim === 1024 || facts.textEncoderConfigs.text_encoder?.hidden_act === 'gelu';
}

export const sd2: ModelFamily = {
  name: 'sd2',
  lora: { baseModelVersions: ['sd_v2'], metadataFlag: ['ss_v2', 'True'] },
  label: 'Stable Diffusion 2.x',
  matchesCheckpoint: (keys) => keys.hasPrefix('cond_stage_model.model.'),
  matchesFolder: (facts) => facts.textEncoders.has('text_encoder') && !facts.textEncoders.has('text_encoder_2') && looksLikeSd2(facts),
  checkpoint: { unetPrefix: 'model.diffusion_model.', vaePrefix: 'first_stage_model.' },
  textEncoders: [
    {
      component: 'text_encoder',
      tokenizerRole: 'openclip-h',
      openclip: true,
      checkpoint: { prefix: 'cond_stage_model.model.', rename: openClip({ dropLastLayer: true, withProjection: false }) },
    },
  ],
  defaultPrediction: () => 'v_prediction',
  unet: {
    attentionHeads: { width: 64 },
    // SD2-768 (v) checkpoints overflow in fp16 attention; diffusers turns on upcasting for them.
    upcastAttention: (prediction) => prediction === 'v_prediction',
    sampleSize: (prediction) => (prediction === 'v_prediction' ? 96 : 64),
    buildOptions: {},
  },
  vae: { sampleSize: 768, needsFp32: () => false },
  latentSpace: SD_LATENTS,
  conditioning: singleClipConditioning,
  diffusion: textOnlyUnetFeeds,
  ...discreteTime,
  scheduleTables: 'sd1',
};
