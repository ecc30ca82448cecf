// Stable Diffusion 1.x: OpenAI CLIP-L text encoder, 8 attention heads per level, 512 px, epsilon prediction.
import { singleClipConditioning } from './clip-conditioning.ts';
import { SD_LATENTS } from './latent-spaces.ts';
import { looksLikeSd2 } from './sd2.ts';
import { mapHfClip } from './checkpoint-keys.ts';
import type { ModelFamily } from './types.ts';
import { discreteTime, textOnlyUnetFeeds } from './unet-feeds.ts';

export const sd1: ModelFamily = {
  name: 'sd1',
  lora: { baseModelVersions: ['sd_v1'] },
  label: 'Stable Diffusion 1.x',
  matchesCheckpoint: (keys) => keys.hasPrefix('cond_stage_model.transformer.'),
  matchesFolder: (facts) => facts.textEncoders.has('text_encoder') && !facts.textEncoders.has('text_encoder_2') && !looksLikeSd2(facts),
  checkpoint: { unetPrefix: 'model.diffusion_model.', vaePrefix: 'first_stage_model.' },
  textEncoders: [
    { component: 'text_encoder', tokenizerRole: 'clip-l', openclip: false, checkpoint: { prefix: 'cond_stage_model.transformer.', rename: mapHfClip } },
  ],
  defaultPrediction: (keys) => (keys.has('v_pred') ? 'v_prediction' : 'epsilon'),
  unet: {
    attentionHeads: { count: 8 },
    upcastAttention: () => false,
    sampleSize: () => 64,
    buildOptions: {},
  },
  vae: { sampleSize: 512, needsFp32: () => false },
  latentSpace: SD_LATENTS,
  conditioning: singleClipConditioning,
  diffusion: textOnlyUnetFeeds,
  ...discreteTime,
  scheduleTables: 'sd1',
};
