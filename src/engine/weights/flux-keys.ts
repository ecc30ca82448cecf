// Flux transformer weights under BFL's names, whichever layout they are stored in: the BFL/ComfyUI single file
// (optionally prefixed `model.diffusion_model.`) as is, and a diffusers `FluxTransformer2DModel` through the
// inverse of diffusers' convert_flux_to_diffusers.py: its split q/k/v (and single-block q/k/v/mlp) are stacked back
// along dim 0, and norm_out's (scale, shift) halves are swapped back to final_layer's (shift, scale).
import { ModelFileError } from '../api.ts';
import { RenamedWeights, type RenameSource as Source } from './renamed.ts';
import { storedWeights } from './sources.ts';
import type { TensorFile } from './tensor-file.ts';
import type { WeightSource } from './types.ts';

/** ComfyUI/Forge single files keep the diffusion network under this prefix (SD3 all-in-one files too). */
export const DIFFUSION_MODEL_PREFIX = 'model.diffusion_model.';

/** A transformer's tensors from its file(s), with the single-file prefix stripped when the names carry it. */
export function transformerTensors(label: string, files: TensorFile[]): WeightSource {
  const prefixed = files.some((f) => f.names().some((n) => n.startsWith(DIFFUSION_MODEL_PREFIX)));
  return storedWeights(label, files, prefixed ? DIFFUSION_MODEL_PREFIX : '');
}

export type FluxLayout = 'bfl' | 'diffusers';

/** Which layout a set of names is in (after any prefix is stripped); undefined: not a Flux transformer. */
export function fluxLayoutOf(source: WeightSource): FluxLayout | undefined {
  if (source.has('double_blocks.0.img_attn.qkv.weight')) return 'bfl';
  if (source.has('transformer_blocks.0.attn.to_q.weight') && source.has('single_transformer_blocks.0.proj_mlp.weight')) return 'diffusers';
  return undefined;
}

/** The Flux transformer in `source` under BFL names (a diffusers source is mapped; a BFL one is returned as is). */
export function fluxWeightsAsBfl(source: WeightSource): WeightSource {
  const layout = fluxLayoutOf(source);
  if (layout === 'bfl') return source;
  if (layout === 'diffusers') return new RenamedWeights(source, diffusersTable(source), 'Flux transformer');
  throw new ModelFileError('transformer', 'is not a Flux transformer (neither double_blocks.0.img_attn.qkv nor transformer_blocks.0.attn.to_q)');
}

/** The BFL <- diffusers table for every name `source` has; weight and bias alike. */
function diffusersTable(source: WeightSource): Map<string, Source> {
  const table = new Map<string, Source>();
  const both = (bfl: string, from: (suffix: string) => Source) => {
    for (const suffix of ['weight', 'bias']) {
      const s = from(suffix);
      const keys = s.kind === 'stack' ? s.keys : [s.key];
      if (keys.every((k) => source.has(k))) table.set(`${bfl}.${suffix}`, s);
    }
  };
  const same = (bfl: string, diff: string) => both(bfl, (x) => ({ kind: 'same', key: `${diff}.${x}` }));
  const stack = (bfl: string, diffs: string[]) => both(bfl, (x) => ({ kind: 'stack', keys: diffs.map((d) => `${d}.${x}`) }));
  const scale = (bfl: string, diff: string) => {
    if (source.has(`${diff}.weight`)) table.set(`${bfl}.scale`, { kind: 'same', key: `${diff}.weight` });
  };

  for (const [bfl, diff] of [
    ['time_in', 'time_text_embed.timestep_embedder'],
    ['vector_in', 'time_text_embed.text_embedder'],
    ['guidance_in', 'time_text_embed.guidance_embedder'],
  ] as const) {
    same(`${bfl}.in_layer`, `${diff}.linear_1`);
    same(`${bfl}.out_layer`, `${diff}.linear_2`);
  }
  same('img_in', 'x_embedder');
  same('txt_in', 'context_embedder');
  same('final_layer.linear', 'proj_out');
  both('final_layer.adaLN_modulation.1', (x) => ({ kind: 'swapHalves', key: `norm_out.linear.${x}` }));

  const names = source.names();
  const count = (prefix: string) => {
    let n = 0;
    for (const name of names) if (name.startsWith(prefix)) n = Math.max(n, Number.parseInt(name.slice(prefix.length), 10) + 1);
    return n;
  };
  for (let i = 0; i < count('transformer_blocks.'); i++) {
    const d = `transformer_blocks.${i}`;
    const p = `double_blocks.${i}`;
    same(`${p}.img_mod.lin`, `${d}.norm1.linear`);
    same(`${p}.txt_mod.lin`, `${d}.norm1_context.linear`);
    stack(`${p}.img_attn.qkv`, [`${d}.attn.to_q`, `${d}.attn.to_k`, `${d}.attn.to_v`]);
    stack(`${p}.txt_attn.qkv`, [`${d}.attn.add_q_proj`, `${d}.attn.add_k_proj`, `${d}.attn.add_v_proj`]);
    scale(`${p}.img_attn.norm.query_norm`, `${d}.attn.norm_q`);
    scale(`${p}.img_attn.norm.key_norm`, `${d}.attn.norm_k`);
    scale(`${p}.txt_attn.norm.query_norm`, `${d}.attn.norm_added_q`);
    scale(`${p}.txt_attn.norm.key_norm`, `${d}.attn.norm_added_k`);
    same(`${p}.img_attn.proj`, `${d}.attn.to_out.0`);
    same(`${p}.txt_attn.proj`, `${d}.attn.to_add_out`);
    same(`${p}.img_mlp.0`, `${d}.ff.net.0.proj`);
    same(`${p}.img_mlp.2`, `${d}.ff.net.2`);
    same(`${p}.txt_mlp.0`, `${d}.ff_context.net.0.proj`);
    same(`${p}.txt_mlp.2`, `${d}.ff_context.net.2`);
  }
  for (let i = 0; i < count('single_transformer_blocks.'); i++) {
    const d = `single_transformer_blocks.${i}`;
    const p = `single_blocks.${i}`;
    stack(`${p}.linear1`, [`${d}.attn.to_q`, `${d}.attn.to_k`, `${d}.attn.to_v`, `${d}.proj_mlp`]);
    same(`${p}.linear2`, `${d}.proj_out`);
    same(`${p}.modulation.lin`, `${d}.norm.linear`);
    scale(`${p}.norm.query_norm`, `${d}.attn.norm_q`);
    scale(`${p}.norm.key_norm`, `${d}.attn.norm_k`);
  }
  return table;
}
