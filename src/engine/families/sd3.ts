// Stable Diffusion 3 (medium): the MMDiT on 16-channel latents with classifier-free guidance, conditioned on CLIP-L and
// CLIP-G penultimate tokens (joined, zero-padded to T5's width) followed by T5-XXL tokens, and on both CLIPs' pooled
// projections; a flow schedule with a static shift of 3. Single files: Stability's all-in-one checkpoint
// (`model.diffusion_model.`, `text_encoders.clip_l.` / `clip_g.` / `t5xxl.`, `first_stage_model.`).
import { MMDIT_IO } from '../nets/mmdit.ts';
import { CLIP_TEXT_IO } from '../nets/clip-text.ts';
import type { Feed } from '../runtime.ts';
import { SD3_SCHEDULE } from '../samplers/flow.ts';
import type { Tensor } from '../tensor.ts';
import { mapHfClip } from './checkpoint-keys.ts';
import { concatFeatures } from './clip-conditioning.ts';
import { plainPromptText, runClip, runT5 } from './flow-prompt.ts';
import { SD3_LATENTS } from './latent-spaces.ts';
import type { FlowFamily } from './types.ts';

const JOINT_BLOCK_QKV = 'joint_blocks.0.x_block.attn.qkv.weight';

/** [1, T, D] -> [1, T, width], zeros on the right (diffusers' F.pad of the CLIP features). */
function padFeatures(t: Tensor, width: number): Tensor {
  const [, tokens, dim] = t.shape as [number, number, number];
  if (dim > width) throw new Error(`CLIP features (${dim}) are wider than the transformer's text width ${width}`);
  const data = new Float32Array(tokens * width);
  for (let i = 0; i < tokens; i++) data.set(t.data.subarray(i * dim, (i + 1) * dim), i * width);
  return { shape: [1, tokens, width], data };
}

/** [1, Ta, D] + [1, Tb, D] -> [1, Ta + Tb, D]. */
function concatTokens(a: Tensor, b: Tensor): Tensor {
  const data = new Float32Array(a.data.length + b.data.length);
  data.set(a.data);
  data.set(b.data, a.data.length);
  return { shape: [1, a.shape[1]! + b.shape[1]!, a.shape[2]!], data };
}

export const sd3: FlowFamily = {
  kind: 'flow',
  name: 'sd3',
  label: 'Stable Diffusion 3',
  matchesCheckpoint: (keys) => keys.has(JOINT_BLOCK_QKV) || keys.has(`model.diffusion_model.${JOINT_BLOCK_QKV}`),
  checkpoint: { unetPrefix: 'model.diffusion_model.', vaePrefix: 'first_stage_model.' },
  textEncoders: [
    { component: 'text_encoder', tokenizerRole: 'clip-l', openclip: false, checkpoint: { prefix: 'text_encoders.clip_l.transformer.', rename: mapHfClip } },
    {
      component: 'text_encoder_2',
      tokenizerRole: 'openclip-bigG',
      openclip: true,
      checkpoint: { prefix: 'text_encoders.clip_g.transformer.', rename: mapHfClip },
    },
  ],
  vae: { sampleSize: 1024, needsFp32: () => false },
  latentSpace: SD3_LATENTS,
  flow: {
    transformer: 'mmdit',
    t5: { component: 'text_encoder_3', tokenizerFolder: 'tokenizer_3', checkpointPrefixes: ['text_encoders.t5xxl.transformer.', 'text_encoders.t5xxl.'] },
    // StableDiffusion3Pipeline's max_sequence_length.
    t5Tokens: () => 256,
    defaultSchedule: () => SD3_SCHEDULE,
    spacing: 'sd3',
    guidance: 'cfg',
    nativeSize: 1024,
    async encode(encoders, prompt, field) {
      const text = plainPromptText(prompt, field);
      // diffusers' _get_clip_prompt_embeds: hidden_states[-2] (no final norm) and the projected pooled output.
      const opts = { penultimateWithoutNorm: true, textEmbeds: true };
      const l = await runClip(encoders, 0, text, opts);
      const g = await runClip(encoders, 1, text, opts);
      const clip = concatFeatures([l[CLIP_TEXT_IO.hidden]!, g[CLIP_TEXT_IO.hidden]!]);
      const width = encoders.contextDim;
      const t5 = (await runT5(encoders, text)) ?? { shape: [1, encoders.t5Tokens, width], data: new Float32Array(encoders.t5Tokens * width) };
      const pooled = concatFeatures([
        { ...l[CLIP_TEXT_IO.textEmbeds]!, shape: [1, 1, l[CLIP_TEXT_IO.textEmbeds]!.shape[1]!] },
        { ...g[CLIP_TEXT_IO.textEmbeds]!, shape: [1, 1, g[CLIP_TEXT_IO.textEmbeds]!.shape[1]!] },
      ]);
      return { txt: concatTokens(padFeatures(clip, width), t5), pooled: { shape: [1, pooled.shape[2]!], data: pooled.data } };
    },
    velocity: (run, rows) => {
      const batch = rows.txt.shape[0]!;
      return async (x, sigma) => {
        const channels = x.length / (batch * rows.height * rows.width);
        // The SD3 pipeline feeds scheduler.timesteps, sigma * 1000.
        const feeds: Record<string, Feed> = {
          [MMDIT_IO.x]: { shape: [batch, channels, rows.height, rows.width], data: x },
          [MMDIT_IO.timestep]: { shape: [batch], data: new Float32Array(batch).fill(Math.fround(sigma * 1000)) },
          [MMDIT_IO.context]: rows.txt,
          [MMDIT_IO.y]: rows.pooled,
        };
        const out = (await run(feeds))[MMDIT_IO.output];
        if (!out) throw new Error('the SD3 transformer returned no output');
        return out.data;
      };
    },
  },
};
