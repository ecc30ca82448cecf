// Which model tensor each LoRA module patches, built from the model's own tensor names (ComfyUI's approach:
// never parse a LoRA key back, underscores are ambiguous). Every diffusers-named weight "P.weight" of the UNet
// gets the names LoRA trainers give it: kohya `lora_unet_<P with _>`, diffusers/PEFT `unet.<P>`; a UNet read
// from a single file also gets its LDM/SGM path `lora_unet_<ldm with _>` and `diffusion_model.<ldm>` (SDXL
// kohya files and LayerDiffuse patches use SGM paths). Text encoders are read under HF CLIP names even from
// OpenCLIP single files (fused q/k/v split on read), so q/k/v LoRAs patch their own slices and the graph is
// built from the patched parts.
import { requireUnetConfig, type LoadedModel } from '../model.ts';
import { MappedWeights } from '../sources.ts';
import type { WeightSource } from '../types.ts';

/** A patchable layer: its component ("unet" or the text encoder's index) and its diffusers parameter path. */
export interface LoraTarget {
  component: 'unet' | number;
  /** e.g. "down_blocks.0.resnets.0.conv1" (the tensors are path + ".weight" / ".bias"). */
  path: string;
}

const LDM_UNET_PREFIX = 'model.diffusion_model.';

function layerPaths(weights: WeightSource): string[] {
  return weights
    .names()
    .filter((n) => n.endsWith('.weight'))
    .map((n) => n.slice(0, -'.weight'.length));
}

export function buildKeyMap(model: LoadedModel): Map<string, LoraTarget> {
  const map = new Map<string, LoraTarget>();
  const add = (key: string, target: LoraTarget) => {
    if (!map.has(key)) map.set(key, target);
  };
  const unetConfig = requireUnetConfig(model);
  const upHasAttention = (i: number) => /CrossAttn/.test(unetConfig.up_block_types[i] ?? '');
  for (const path of layerPaths(model.unet)) {
    const target: LoraTarget = { component: 'unet', path };
    add(`lora_unet_${path.replaceAll('.', '_')}`, target);
    add(`unet.${path}`, target);
    const recipe = model.unet instanceof MappedWeights ? model.unet.recipe(`${path}.weight`) : undefined;
    const ldm =
      recipe?.kind === 'tensor' && recipe.key.startsWith(LDM_UNET_PREFIX) && recipe.key.endsWith('.weight')
        ? recipe.key.slice(LDM_UNET_PREFIX.length, -'.weight'.length)
        : model.format === 'diffusers'
          ? diffusersToLdmUnetPath(path, unetConfig.layers_per_block, upHasAttention)
          : undefined;
    if (ldm) {
      add(`lora_unet_${ldm.replaceAll('.', '_')}`, target);
      add(`diffusion_model.${ldm}`, target);
    }
  }
  const single = model.textEncoders.length === 1;
  model.textEncoders.forEach((te, index) => {
    const kohya = single ? ['lora_te_'] : [`lora_te${index + 1}_`];
    const diffusers = te.component === 'text_encoder_2' ? 'text_encoder_2.' : 'text_encoder.';
    for (const path of layerPaths(te.weights)) {
      const target: LoraTarget = { component: index, path };
      for (const p of kohya) add(`${p}${path.replaceAll('.', '_')}`, target);
      add(`${diffusers}${path}`, target);
      // The refiner's only encoder is diffusers' text_encoder_2; ComfyUI also maps "text_encoder." onto it.
      if (single) add(`text_encoder.${path}`, target);
    }
  });
  return map;
}

const RESNET_TO_LDM: Array<[string, string]> = [
  ['norm1', 'in_layers.0'],
  ['conv1', 'in_layers.2'],
  ['time_emb_proj', 'emb_layers.1'],
  ['norm2', 'out_layers.0'],
  ['conv2', 'out_layers.3'],
  ['conv_shortcut', 'skip_connection'],
];
const TOP_TO_LDM: Array<[string, string]> = [
  ['conv_in', 'input_blocks.0.0'],
  ['time_embedding.linear_1', 'time_embed.0'],
  ['time_embedding.linear_2', 'time_embed.2'],
  ['add_embedding.linear_1', 'label_emb.0.0'],
  ['add_embedding.linear_2', 'label_emb.0.2'],
  ['conv_norm_out', 'out.0'],
  ['conv_out', 'out.2'],
];

/**
 * A diffusers UNet layer path in the LDM/SGM layout (for diffusers folders, whose SDXL kohya LoRAs use SGM names):
 * level i, item j -> input_blocks.{1 + i(L+1) + j}, output_blocks.{i(L+1) + j}, L = layers_per_block (the rule
 * of A1111's convert_diffusers_name_to_compvis and kohya's make_unet_conversion_map). Undefined when unknown.
 */
export function diffusersToLdmUnetPath(path: string, layersPerBlock: number, upHasAttention: (i: number) => boolean): string | undefined {
  for (const [from, to] of TOP_TO_LDM) if (path === from) return to;
  const inner = (rest: string, kind: string) => {
    if (kind === 'attentions') return rest;
    const hit = RESNET_TO_LDM.find(([from]) => rest === from || rest.startsWith(`${from}.`));
    return hit ? hit[1] + rest.slice(hit[0].length) : undefined;
  };
  const L = layersPerBlock;
  let m = /^down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)$/.exec(path);
  if (m) {
    const rest = inner(m[4]!, m[2]!);
    return rest && `input_blocks.${1 + Number(m[1]) * (L + 1) + Number(m[3])}.${m[2] === 'resnets' ? 0 : 1}.${rest}`;
  }
  m = /^down_blocks\.(\d+)\.downsamplers\.0\.conv$/.exec(path);
  if (m) return `input_blocks.${(Number(m[1]) + 1) * (L + 1)}.0.op`;
  m = /^up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)$/.exec(path);
  if (m) {
    const rest = inner(m[4]!, m[2]!);
    return rest && `output_blocks.${Number(m[1]) * (L + 1) + Number(m[3])}.${m[2] === 'resnets' ? 0 : 1}.${rest}`;
  }
  m = /^up_blocks\.(\d+)\.upsamplers\.0\.conv$/.exec(path);
  if (m) return `output_blocks.${Number(m[1]) * (L + 1) + L}.${upHasAttention(Number(m[1])) ? 2 : 1}.conv`;
  m = /^mid_block\.(resnets|attentions)\.(\d+)\.(.+)$/.exec(path);
  if (m) {
    const rest = inner(m[3]!, m[1]!);
    return rest && `middle_block.${m[1] === 'attentions' ? 1 : 2 * Number(m[2])}.${rest}`;
  }
  return undefined;
}
