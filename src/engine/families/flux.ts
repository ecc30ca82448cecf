// FLUX.1 (dev and schnell): a rectified-flow transformer on 2x2-packed 16-channel latents, conditioned on T5-XXL
// tokens and CLIP-L's pooled output. dev has a distilled-guidance input (no negative batch) and a resolution-
// dependent schedule shift; schnell has neither. Single files: BFL's transformer file (optionally under ComfyUI's
// `model.diffusion_model.`), or ComfyUI all-in-one files with `text_encoders.clip_l.` / `text_encoders.t5xxl.` / `vae.`.
import { mapHfClip } from './checkpoint-keys.ts';
import { fluxVelocity } from './flux-latents.ts';
import { plainPromptText, runClip, runT5 } from './flow-prompt.ts';
import { FLUX_LATENTS } from './latent-spaces.ts';
import { FLUX_DEV_SCHEDULE, FLUX_SCHNELL_SCHEDULE } from '../samplers/flow.ts';
import { CLIP_TEXT_IO } from '../nets/clip-text.ts';
import type { FlowFamily } from './types.ts';

const DOUBLE_BLOCK_QKV = 'double_blocks.0.img_attn.qkv.weight';

export const flux: FlowFamily = {
  kind: 'flow',
  name: 'flux',
  label: 'FLUX.1',
  matchesCheckpoint: (keys) => keys.has(DOUBLE_BLOCK_QKV) || keys.has(`model.diffusion_model.${DOUBLE_BLOCK_QKV}`),
  checkpoint: { unetPrefix: 'model.diffusion_model.', vaePrefix: 'vae.' },
  textEncoders: [
    { component: 'text_encoder', tokenizerRole: 'clip-l', openclip: false, checkpoint: { prefix: 'text_encoders.clip_l.transformer.', rename: mapHfClip } },
  ],
  vae: { sampleSize: 1024, needsFp32: () => false },
  latentSpace: FLUX_LATENTS,
  flow: {
    transformer: 'flux',
    t5: { component: 'text_encoder_2', tokenizerFolder: 'tokenizer_2', checkpointPrefixes: ['text_encoders.t5xxl.transformer.', 'text_encoders.t5xxl.'] },
    // FluxPipeline's max_sequence_length 512 (dev); BFL's CLI uses 256 for schnell.
    t5Tokens: (guidance) => (guidance ? 512 : 256),
    defaultSchedule: (guidance) => (guidance ? FLUX_DEV_SCHEDULE : FLUX_SCHNELL_SCHEDULE),
    spacing: 'flux',
    guidance: 'distilled',
    nativeSize: 1024,
    async encode(encoders, prompt, field) {
      const text = plainPromptText(prompt, field);
      const pooled = (await runClip(encoders, 0, text, { hidden: false, pooled: true }))[CLIP_TEXT_IO.pooled];
      const txt = await runT5(encoders, text);
      if (!pooled) throw new Error('the CLIP-L encoder returned no pooled output');
      if (!txt) throw new Error('a FLUX.1 model needs its T5 encoder');
      return { txt, pooled };
    },
    velocity: (run, rows) => fluxVelocity(run, { txt: rows.txt, y: rows.pooled, guidance: rows.guidance, height: rows.height, width: rows.width }),
  },
};
