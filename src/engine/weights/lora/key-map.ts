// Which model tensor each LoRA module patches, built from the model's own tensor names (ComfyUI's approach:
// never parse a LoRA key back, underscores are ambiguous). Every diffusers-named weight "P.weight" of the UNet
// gets the names LoRA trainers give it: kohya `lora_unet_<P with _>`, diffusers/PEFT `unet.<P>`; a UNet read
// from a single file also gets its LDM/SGM path `lora_unet_<ldm with _>` and `diffusion_model.<ldm>` (SDXL
// kohya files and LayerDiffuse patches use SGM paths). Text encoders are read under HF CLIP names even from
// OpenCLIP single files (fused q/k/v split on read), so q/k/v LoRAs patch their own slices and the graph is
// built from the patched parts.
import type { LoadedModel } from '../model.ts';
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
  for (const path of layerPaths(model.unet)) {
    const target: LoraTarget = { component: 'unet', path };
    add(`lora_unet_${path.replaceAll('.', '_')}`, target);
    add(`unet.${path}`, target);
    const recipe = model.unet instanceof MappedWeights ? model.unet.recipe(`${path}.weight`) : undefined;
    if (recipe?.kind === 'tensor' && recipe.key.startsWith(LDM_UNET_PREFIX) && recipe.key.endsWith('.weight')) {
      const ldm = recipe.key.slice(LDM_UNET_PREFIX.length, -'.weight'.length);
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
    }
  });
  return map;
}
