// SD3/SD3.5 MMDiT weights under the original (Stability / sd3_medium.safetensors) names, whichever layout they are
// stored in: the original single file (optionally prefixed `model.diffusion_model.`, stripped by the caller) as is,
// and a diffusers `SD3Transformer2DModel` through the inverse of diffusers' convert_sd3_to_diffusers.py: split q/k/v
// stacked back into `attn.qkv`, and the (scale, shift) halves of norm_out and of the last, pre-only context block's
// norm swapped back to (shift, scale).
import { ModelFileError } from '../api.ts';
import { RenamedWeights, type RenameSource } from './renamed.ts';
import type { WeightSource } from './types.ts';

export type Sd3Layout = 'original' | 'diffusers';

/** Which layout a set of names is in; undefined: not an SD3 MMDiT. */
export function sd3LayoutOf(source: WeightSource): Sd3Layout | undefined {
  if (source.has('joint_blocks.0.x_block.attn.qkv.weight')) return 'original';
  if (source.has('transformer_blocks.0.attn.to_q.weight') && source.has('pos_embed.pos_embed')) return 'diffusers';
  return undefined;
}

/** The MMDiT in `source` under the original names (a diffusers source is mapped; an original one returned as is). */
export function sd3WeightsAsOriginal(source: WeightSource): WeightSource {
  const layout = sd3LayoutOf(source);
  if (layout === 'original') return source;
  if (layout === 'diffusers') return new RenamedWeights(source, diffusersTable(source), 'SD3 transformer');
  throw new ModelFileError('transformer', 'is not an SD3 MMDiT (neither joint_blocks.0.x_block.attn.qkv nor transformer_blocks.0.attn.to_q with pos_embed)');
}

function diffusersTable(source: WeightSource): Map<string, RenameSource> {
  const table = new Map<string, RenameSource>();
  const both = (name: string, from: (suffix: string) => RenameSource) => {
    for (const suffix of ['weight', 'bias']) {
      const s = from(suffix);
      if ((s.kind === 'stack' ? s.keys : [s.key]).every((k) => source.has(k))) table.set(`${name}.${suffix}`, s);
    }
  };
  const same = (name: string, diff: string) => both(name, (x) => ({ kind: 'same', key: `${diff}.${x}` }));
  const swapped = (name: string, diff: string) => both(name, (x) => ({ kind: 'swapHalves', key: `${diff}.${x}` }));
  const stack = (name: string, diffs: string[]) => both(name, (x) => ({ kind: 'stack', keys: diffs.map((d) => `${d}.${x}`) }));

  table.set('pos_embed', { kind: 'same', key: 'pos_embed.pos_embed' });
  same('x_embedder.proj', 'pos_embed.proj');
  same('t_embedder.mlp.0', 'time_text_embed.timestep_embedder.linear_1');
  same('t_embedder.mlp.2', 'time_text_embed.timestep_embedder.linear_2');
  same('y_embedder.mlp.0', 'time_text_embed.text_embedder.linear_1');
  same('y_embedder.mlp.2', 'time_text_embed.text_embedder.linear_2');
  same('context_embedder', 'context_embedder');
  swapped('final_layer.adaLN_modulation.1', 'norm_out.linear');
  same('final_layer.linear', 'proj_out');

  let depth = 0;
  for (const name of source.names()) {
    const m = /^transformer_blocks\.(\d+)\./.exec(name);
    if (m) depth = Math.max(depth, Number(m[1]) + 1);
  }
  for (let i = 0; i < depth; i++) {
    const d = `transformer_blocks.${i}`;
    const x = `joint_blocks.${i}.x_block`;
    const c = `joint_blocks.${i}.context_block`;
    // The pre-only context block (no to_add_out) stores AdaLayerNormContinuous: (scale, shift).
    const preOnly = !source.has(`${d}.attn.to_add_out.weight`);
    same(`${x}.adaLN_modulation.1`, `${d}.norm1.linear`);
    (preOnly ? swapped : same)(`${c}.adaLN_modulation.1`, `${d}.norm1_context.linear`);
    stack(`${x}.attn.qkv`, [`${d}.attn.to_q`, `${d}.attn.to_k`, `${d}.attn.to_v`]);
    stack(`${c}.attn.qkv`, [`${d}.attn.add_q_proj`, `${d}.attn.add_k_proj`, `${d}.attn.add_v_proj`]);
    same(`${x}.attn.proj`, `${d}.attn.to_out.0`);
    same(`${c}.attn.proj`, `${d}.attn.to_add_out`);
    same(`${x}.mlp.fc1`, `${d}.ff.net.0.proj`);
    same(`${x}.mlp.fc2`, `${d}.ff.net.2`);
    same(`${c}.mlp.fc1`, `${d}.ff_context.net.0.proj`);
    same(`${c}.mlp.fc2`, `${d}.ff_context.net.2`);
    // SD3.5: per-head QK RMS norm scales (both streams), and MMDiT-X's image-only attn2 (its 9-chunk norm1 above).
    same(`${x}.attn.ln_q`, `${d}.attn.norm_q`);
    same(`${x}.attn.ln_k`, `${d}.attn.norm_k`);
    same(`${c}.attn.ln_q`, `${d}.attn.norm_added_q`);
    same(`${c}.attn.ln_k`, `${d}.attn.norm_added_k`);
    stack(`${x}.attn2.qkv`, [`${d}.attn2.to_q`, `${d}.attn2.to_k`, `${d}.attn2.to_v`]);
    same(`${x}.attn2.proj`, `${d}.attn2.to_out.0`);
    same(`${x}.attn2.ln_q`, `${d}.attn2.norm_q`);
    same(`${x}.attn2.ln_k`, `${d}.attn2.norm_k`);
  }
  return table;
}
