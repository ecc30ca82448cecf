// Name maps from the original LDM/SGM single-file layout (A1111 checkpoints) to diffusers/transformers names.
// The block structure (levels, resnets per level, which blocks have attention or resamplers) is read from the
// keys themselves, so the same code handles the 2-level test models, SD1/SD2 (4 levels) and SDXL (3 levels).
import { ModelFileError } from '../api.ts';
import type { TensorFile } from './tensor-file.ts';
import type { Recipe } from './sources.ts';

type RecipeMap = Map<string, Recipe>;

/** Keys under `prefix`, grouped by the dotted path: "input_blocks.4.1.proj_in.weight" etc. (prefix removed). */
function keysUnder(file: TensorFile, prefix: string): string[] {
  return file
    .names()
    .filter((k) => k.startsWith(prefix))
    .map((k) => k.slice(prefix.length));
}

function put(map: RecipeMap, file: TensorFile, name: string, key: string, shape?: number[]): void {
  if (map.has(name)) throw new ModelFileError(file.file, `two tensors map to the diffusers name "${name}" (second: "${key}")`);
  map.set(name, shape ? { kind: 'tensor', file, key, shape } : { kind: 'tensor', file, key });
}

// ---------------------------------------------------------------- UNet

const RESNET_RENAMES: [string, string][] = [
  ['in_layers.0.', 'norm1.'],
  ['in_layers.2.', 'conv1.'],
  ['emb_layers.1.', 'time_emb_proj.'],
  ['out_layers.0.', 'norm2.'],
  ['out_layers.3.', 'conv2.'],
  ['skip_connection.', 'conv_shortcut.'],
];

type SubKind = 'resnet' | 'attention' | 'downsample' | 'upsample';

function subKind(rest: string): SubKind {
  if (/^(in_layers|out_layers|emb_layers|skip_connection)\./.test(rest)) return 'resnet';
  if (rest.startsWith('op.')) return 'downsample';
  if (rest.startsWith('conv.')) return 'upsample';
  return 'attention';
}

function renameResnet(rest: string, file: TensorFile, key: string): string {
  for (const [from, to] of RESNET_RENAMES) if (rest.startsWith(from)) return to + rest.slice(from.length);
  throw new ModelFileError(file.file, `unexpected resnet tensor "${key}"`);
}

/** blocks.N.S.rest -> Map<N, Map<S, rest[]>>, in numeric order. */
function groupBlocks(keys: string[], blockPrefix: string): Map<number, Map<number, string[]>> {
  const out = new Map<number, Map<number, string[]>>();
  for (const k of keys) {
    if (!k.startsWith(blockPrefix)) continue;
    const m = /^(\d+)\.(\d+)\.(.+)$/.exec(k.slice(blockPrefix.length));
    if (!m) continue;
    const n = Number(m[1]);
    const s = Number(m[2]);
    if (!out.has(n)) out.set(n, new Map());
    const subs = out.get(n)!;
    if (!subs.has(s)) subs.set(s, []);
    subs.get(s)!.push(m[3]!);
  }
  return new Map([...out].sort((a, b) => a[0] - b[0]).map(([n, subs]) => [n, new Map([...subs].sort((a, b) => a[0] - b[0]))]));
}

function kindOf(rests: string[]): SubKind {
  return subKind(rests[0]!);
}

/** `model.diffusion_model.*` (prefix given) -> UNet2DConditionModel names. */

const VAE_MID_ATTENTION = /^(encoder|decoder)\.mid\.attn_1\.(norm|q|k|v|proj_out)\.(weight|bias)$/;
const VAE_ATTENTION_NAMES: Record<string, string> = { norm: 'group_norm', q: 'to_q', k: 'to_k', v: 'to_v', proj_out: 'to_out.0' };

export function mapLdmUnet(file: TensorFile, prefix: string): RecipeMap {
  const keys = keysUnder(file, prefix);
  const map: RecipeMap = new Map();
  const mapped = new Set<string>();
  const add = (name: string, rest: string) => {
    put(map, file, name, prefix + rest);
    mapped.add(rest);
  };
  const simple: [string, string][] = [
    ['time_embed.0.', 'time_embedding.linear_1.'],
    ['time_embed.2.', 'time_embedding.linear_2.'],
    ['label_emb.0.0.', 'add_embedding.linear_1.'],
    ['label_emb.0.2.', 'add_embedding.linear_2.'],
    ['input_blocks.0.0.', 'conv_in.'],
    ['out.0.', 'conv_norm_out.'],
    ['out.2.', 'conv_out.'],
  ];
  for (const k of keys) for (const [from, to] of simple) if (k.startsWith(from)) add(to + k.slice(from.length), k);

  const addSub = (target: string, kind: SubKind, sourcePrefix: string, rests: string[]) => {
    for (const rest of rests) {
      const key = sourcePrefix + rest;
      if (kind === 'resnet') add(`${target}.${renameResnet(rest, file, prefix + key)}`, key);
      else if (kind === 'downsample') add(`${target}.${rest.replace(/^op\./, 'conv.')}`, key);
      else add(`${target}.${rest}`, key); // attention (Transformer2DModel) and upsampler keep their inner names
    }
  };

  // Down path: walk input_blocks 1.. in order; a downsampler closes a level.
  let level = 0;
  let j = 0;
  for (const [n, subs] of groupBlocks(keys, 'input_blocks.')) {
    if (n === 0) continue;
    let closesLevel = false;
    for (const [s, rests] of subs) {
      const kind = kindOf(rests);
      const src = `input_blocks.${n}.${s}.`;
      if (kind === 'downsample') {
        addSub(`down_blocks.${level}.downsamplers.0`, kind, src, rests);
        closesLevel = true;
      } else if (kind === 'resnet') addSub(`down_blocks.${level}.resnets.${j}`, kind, src, rests);
      else if (kind === 'attention') addSub(`down_blocks.${level}.attentions.${j}`, kind, src, rests);
      else throw new ModelFileError(file.file, `unexpected upsampler in ${prefix}${src}`);
    }
    if (closesLevel) {
      level++;
      j = 0;
    } else j++;
  }

  // Middle: resnet, attention, resnet.
  let midRes = 0;
  let midAttn = 0;
  for (const [, subs] of groupBlocks(
    keys.map((k) => k.replace(/^middle_block\./, 'middle_block.0.')),
    'middle_block.',
  )) {
    for (const [s, rests] of subs) {
      const kind = kindOf(rests);
      const src = `middle_block.${s}.`;
      if (kind === 'resnet') addSub(`mid_block.resnets.${midRes++}`, kind, src, rests);
      else if (kind === 'attention') addSub(`mid_block.attentions.${midAttn++}`, kind, src, rests);
      else throw new ModelFileError(file.file, `unexpected resampler in ${prefix}${src}`);
    }
  }

  // Up path: an upsampler closes a level; the last level has none.
  level = 0;
  j = 0;
  for (const [n, subs] of groupBlocks(keys, 'output_blocks.')) {
    let closesLevel = false;
    for (const [s, rests] of subs) {
      const kind = kindOf(rests);
      const src = `output_blocks.${n}.${s}.`;
      if (kind === 'upsample') {
        addSub(`up_blocks.${level}.upsamplers.0`, kind, src, rests);
        closesLevel = true;
      } else if (kind === 'resnet') addSub(`up_blocks.${level}.resnets.${j}`, kind, src, rests);
      else if (kind === 'attention') addSub(`up_blocks.${level}.attentions.${j}`, kind, src, rests);
      else throw new ModelFileError(file.file, `unexpected downsampler in ${prefix}${src}`);
    }
    if (closesLevel) {
      level++;
      j = 0;
    } else j++;
  }

  const unmapped = keys.filter((k) => !mapped.has(k));
  if (unmapped.length) {
    throw new ModelFileError(file.file, `unrecognised UNet tensors (not an SD1/SD2/SDXL UNet?): ${listSome(unmapped.map((k) => prefix + k))}`);
  }
  return map;
}

// ---------------------------------------------------------------- VAE

function renameVaeResnet(rest: string): string {
  return rest.replace(/^nin_shortcut\./, 'conv_shortcut.');
}

/** LDM VAE (`encoder.down.N...`, prefix e.g. "first_stage_model." or "") -> AutoencoderKL names. */
export function mapLdmVae(file: TensorFile, prefix: string): RecipeMap {
  // Standalone VAE files may also carry training leftovers (loss.*, model_ema.*): not part of the network.
  const keys = keysUnder(file, prefix).filter((k) => /^(encoder|decoder|quant_conv|post_quant_conv)\./.test(k));
  const map: RecipeMap = new Map();
  const upLevels = new Set(keys.map((k) => /^decoder\.up\.(\d+)\./.exec(k)?.[1]).filter((x) => x !== undefined)).size;
  const up = (level: string) => upLevels - 1 - Number(level);
  const vaeRules: [RegExp, (m: RegExpExecArray) => string][] = [
    [/^(encoder|decoder)\.(conv_in|conv_out)\.(.+)$/, (m) => `${m[1]}.${m[2]}.${m[3]}`],
    [/^(encoder|decoder)\.norm_out\.(.+)$/, (m) => `${m[1]}.conv_norm_out.${m[2]}`],
    [/^(quant_conv|post_quant_conv)\.(.+)$/, (m) => m[0]],
    [/^encoder\.down\.(\d+)\.block\.(\d+)\.(.+)$/, (m) => `encoder.down_blocks.${m[1]}.resnets.${m[2]}.${renameVaeResnet(m[3]!)}`],
    [/^encoder\.down\.(\d+)\.downsample\.(.+)$/, (m) => `encoder.down_blocks.${m[1]}.downsamplers.0.${m[2]}`],
    [/^decoder\.up\.(\d+)\.block\.(\d+)\.(.+)$/, (m) => `decoder.up_blocks.${up(m[1]!)}.resnets.${m[2]}.${renameVaeResnet(m[3]!)}`],
    [/^decoder\.up\.(\d+)\.upsample\.(.+)$/, (m) => `decoder.up_blocks.${up(m[1]!)}.upsamplers.0.${m[2]}`],
    [/^(encoder|decoder)\.mid\.block_([12])\.(.+)$/, (m) => `${m[1]}.mid_block.resnets.${Number(m[2]) - 1}.${renameVaeResnet(m[3]!)}`],
    [VAE_MID_ATTENTION, (m) => `${m[1]}.mid_block.attentions.0.${VAE_ATTENTION_NAMES[m[2]!]}.${m[3]}`],
  ];
  const unmapped: string[] = [];
  for (const k of keys) {
    const key = prefix + k;
    let name: string | undefined;
    let shape: number[] | undefined;
    for (const [pattern, rename] of vaeRules) {
      const m = pattern.exec(k);
      if (!m) continue;
      name = rename(m);
      // The LDM mid-block attention stores its projections as 1x1 convolutions; diffusers has linears.
      if (pattern === VAE_MID_ATTENTION) shape = squeezedLinear(file, key);
      break;
    }
    if (name) put(map, file, name, key, shape);
    else unmapped.push(key);
  }
  if (unmapped.length) throw new ModelFileError(file.file, `unrecognised VAE tensors: ${listSome(unmapped)}`);
  return map;
}

/** [C,C,1,1] conv weights used as a linear layer -> [C,C]; other shapes unchanged. */
function squeezedLinear(file: TensorFile, key: string): number[] | undefined {
  const s = file.entry(key).shape;
  return s.length === 4 && s[2] === 1 && s[3] === 1 ? [s[0]!, s[1]!] : undefined;
}

/** Diffusers-layout VAE file (possibly with the pre-0.14 attention names query/key/value/proj_attn). */
export function mapDiffusersVae(file: TensorFile, prefix: string): RecipeMap {
  const map: RecipeMap = new Map();
  const old: Record<string, string> = { query: 'to_q', key: 'to_k', value: 'to_v', proj_attn: 'to_out.0' };
  for (const k of keysUnder(file, prefix)) {
    const key = prefix + k;
    const m = /^(.*\.attentions\.\d+\.)(query|key|value|proj_attn|to_q|to_k|to_v|to_out\.0)\.(weight|bias)$/.exec(k);
    if (m) put(map, file, `${m[1]}${old[m[2]!] ?? m[2]}.${m[3]}`, key, squeezedLinear(file, key));
    else put(map, file, k, key);
  }
  return map;
}

// ---------------------------------------------------------------- text encoders

/** Hugging Face CLIPTextModel layout already (SD1 `cond_stage_model.transformer.`, SDXL embedder 0). */
export function mapHfClip(file: TensorFile, prefix: string): RecipeMap {
  const map: RecipeMap = new Map();
  let positions: number | undefined;
  for (const k of keysUnder(file, prefix)) {
    // Older transformers versions saved without the "text_model." level.
    const name = k.startsWith('text_model.') || k.startsWith('text_projection') ? k : `text_model.${k}`;
    if (name === 'text_model.embeddings.position_ids') continue; // regenerated below (often stored damaged as float)
    if (name === 'text_model.embeddings.position_embedding.weight') positions = file.entry(prefix + k).shape[0];
    put(map, file, name, prefix + k);
  }
  if (positions === undefined) throw new ModelFileError(file.file, `no CLIP position embedding under "${prefix}"`);
  map.set('text_model.embeddings.position_ids', { kind: 'arange', shape: [1, positions] });
  return map;
}

export interface OpenClipOptions {
  /** SD2 runs OpenCLIP-H up to its penultimate layer; diffusers stores it as a 23-layer CLIPTextModel. */
  dropLastLayer: boolean;
  /** Keep the projection (SDXL's bigG is CLIPTextModelWithProjection; SD2's text encoder has none). */
  withProjection: boolean;
}

/** OpenCLIP text tower (`cond_stage_model.model.` / `conditioner.embedders.1.model.`) -> CLIPTextModel names. */
export function mapOpenClip(file: TensorFile, prefix: string, opts: OpenClipOptions): RecipeMap {
  const keys = keysUnder(file, prefix);
  const map: RecipeMap = new Map();
  const layerIds = keys
    .map((k) => /^transformer\.resblocks\.(\d+)\./.exec(k)?.[1])
    .filter((x) => x !== undefined)
    .map(Number);
  const layers = layerIds.length ? Math.max(...layerIds) + 1 : 0;
  if (layers === 0) throw new ModelFileError(file.file, `no OpenCLIP transformer layers under "${prefix}"`);
  const keep = opts.dropLastLayer ? layers - 1 : layers;
  const unmapped: string[] = [];
  const blockRenames: Record<string, string> = {
    'ln_1.': 'layer_norm1.',
    'ln_2.': 'layer_norm2.',
    'attn.out_proj.': 'self_attn.out_proj.',
    'mlp.c_fc.': 'mlp.fc1.',
    'mlp.c_proj.': 'mlp.fc2.',
  };
  for (const k of keys) {
    const key = prefix + k;
    const finalNorm = /^ln_final\.(weight|bias)$/.exec(k);
    const block = /^transformer\.resblocks\.(\d+)\.(.+)$/.exec(k);
    if (k === 'positional_embedding') {
      put(map, file, 'text_model.embeddings.position_embedding.weight', key);
      map.set('text_model.embeddings.position_ids', { kind: 'arange', shape: [1, file.entry(key).shape[0]!] });
    } else if (k === 'token_embedding.weight') put(map, file, 'text_model.embeddings.token_embedding.weight', key);
    else if (finalNorm) put(map, file, `text_model.final_layer_norm.${finalNorm[1]}`, key);
    else if (k === 'text_projection') {
      if (opts.withProjection) map.set('text_projection.weight', { kind: 'transpose', file, key });
    } else if (k === 'logit_scale' || k === 'attn_mask') {
      // contrastive-training scalar and the causal-mask buffer: not weights of the text encoder
    } else if (block) {
      const layer = Number(block[1]);
      if (layer >= keep) continue;
      const rest = block[2]!;
      const base = `text_model.encoder.layers.${layer}.`;
      const fused = /^attn\.in_proj_(weight|bias)$/.exec(rest);
      if (fused) {
        ['q_proj', 'k_proj', 'v_proj'].forEach((proj, part) => {
          map.set(`${base}self_attn.${proj}.${fused[1]}`, { kind: 'rows', file, key, part, parts: 3 });
        });
        continue;
      }
      const rename = Object.entries(blockRenames).find(([from]) => rest.startsWith(from));
      if (rename) put(map, file, base + rename[1] + rest.slice(rename[0].length), key);
      else unmapped.push(key);
    } else if (!k.startsWith('visual.')) unmapped.push(key);
  }
  if (unmapped.length) throw new ModelFileError(file.file, `unrecognised OpenCLIP text tensors: ${listSome(unmapped)}`);
  return map;
}

function listSome(names: string[]): string {
  const shown = names
    .slice(0, 5)
    .map((n) => `"${n}"`)
    .join(', ');
  return names.length > 5 ? `${shown} and ${names.length - 5} more` : shown;
}
