// The model families the engine knows, and detection over them. A new family is one file beside this one
// and one entry here.
import { ModelFileError } from '../api.ts';
import { flux } from './flux.ts';
import { sd1 } from './sd1.ts';
import { sd3 } from './sd3.ts';
import { sd2 } from './sd2.ts';
import { sdxl } from './sdxl.ts';
import { sdxlRefiner } from './sdxl-refiner.ts';
import type { CheckpointKeys, FamilyName, FlowFamily, FolderFacts, ModelFamily, UnetFamily } from './types.ts';

/** Detection order: the first family that matches wins (their rules do not overlap today). */
export const FAMILIES: readonly ModelFamily[] = [flux, sd3, sdxl, sdxlRefiner, sd2, sd1];

/** The flow-transformer families (Flux, SD3): their diffusers folders have a transformer/ instead of a unet/. */
export const FLOW_FAMILIES: readonly FlowFamily[] = FAMILIES.filter((f): f is FlowFamily => f.kind === 'flow');

export function getFamily(name: FamilyName | string): ModelFamily {
  const f = FAMILIES.find((x) => x.name === name);
  if (!f) throw new Error(`unknown model family "${name}"; known: ${FAMILIES.map((x) => x.name).join(', ')}`);
  return f;
}

/** The latent space name ("sd", "sdxl") of a family, undefined for an unknown family name. */
export function latentSpaceOf(family: string): string | undefined {
  return FAMILIES.find((x) => x.name === family)?.latentSpace.name;
}

export function detectCheckpointFamily(keys: CheckpointKeys): ModelFamily | undefined {
  return FAMILIES.find((f) => f.matchesCheckpoint(keys));
}

export function detectFolderFamily(dir: string, facts: FolderFacts): UnetFamily {
  const f = FAMILIES.find((x): x is UnetFamily => x.kind !== 'flow' && x.matchesFolder(facts));
  if (!f) throw new ModelFileError(dir, `no known model family has text encoders ${JSON.stringify([...facts.textEncoders])}`);
  return f;
}

/** The family a LoRA file was made for, from its metadata, else its key names; undefined when neither says. */
export function detectLoraFamily(metadata: Record<string, string>, keys: string[]): FamilyName | undefined {
  const version = metadata.ss_base_model_version ?? '';
  const byMetadata = FAMILIES.find(
    (f) =>
      f.lora &&
      (f.lora.baseModelVersions.some((v) => version.startsWith(v)) || (f.lora.metadataFlag && metadata[f.lora.metadataFlag[0]] === f.lora.metadataFlag[1])),
  );
  if (byMetadata) return byMetadata.name;
  const byKeys = FAMILIES.filter((f) => f.lora?.keyPattern && keys.some((k) => f.lora!.keyPattern!.test(k)));
  return (byKeys.find((f) => byKeys.some((g) => f.lora?.narrows?.includes(g.name))) ?? byKeys[0])?.name;
}

/** For error messages: where each family keeps its text encoders in single-file checkpoints. */
export function checkpointLayouts(): string {
  return FAMILIES.map((f) => `${f.textEncoders.map((t) => `${t.checkpoint.prefix}*`).join(' + ')} (${f.label})`).join(', ');
}

export type * from './types.ts';
export { unetFamily } from './types.ts';
export { SD_LATENTS, SDXL_LATENTS, FLUX_LATENTS, SD3_LATENTS } from './latent-spaces.ts';
