// LayerDiffuse's files in the models folder and the checks a transparent request gets before it is queued (so a
// request that cannot be transparent answers 4xx, never a silent RGB image or a failed job): the files exist
// (else they are named with the folder to put them in and where to download them), the checkpoint is SDXL (else
// its family is named), and the output format can hold alpha (JPEG cannot).
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { ModelFileError, type TransparentSettings } from '../../engine/index.ts';
import { SpecError, type JobSpec } from '../../queue/job-spec.ts';
import { HttpError } from '../errors.ts';

/** The models-folder subfolder of the files. */
export const LAYERDIFFUSE_FOLDER = 'layerdiffuse';
/** Where the released files are. */
export const LAYERDIFFUSE_DOWNLOAD = 'https://huggingface.co/LayerDiffusion/layerdiffusion-v1';

/** The UNet patches by method, as Forge's LayerDiffuse extension names them; the decoder they share. */
export const LAYERDIFFUSE_FILES = {
  attention: 'layer_xl_transparent_attn.safetensors',
  conv: 'layer_xl_transparent_conv.safetensors',
  decoder: 'vae_transparent_decoder.safetensors',
} as const;

/** The diffusers release (lllyasviel/LayerDiffuse_Diffusers), used when the forge-format file is absent. */
export const LAYERDIFFUSE_DIFFUSERS_FILES: Partial<Record<keyof typeof LAYERDIFFUSE_FILES, string>> = {
  attention: 'ld_diffusers_sdxl_attn.safetensors',
  decoder: 'ld_diffusers_sdxl_vae_transparent_decoder.safetensors',
};

/** The families the files are for (only SDXL's are released as plain patches). */
const FAMILY = 'sdxl';

export type TransparentMethod = 'attention' | 'conv';

/** The files are not installed: 422 naming each missing file, the folder and the download. */
export class LayerDiffuseFilesMissing extends HttpError {
  constructor(
    readonly missing: string[],
    folder: string,
    field: string,
  ) {
    super(
      422,
      'model_files_missing',
      `${field}: transparent images need LayerDiffuse's ${missing.join(' and ')}, not found in ${folder}; download ${missing.length > 1 ? 'them' : 'it'} from ${LAYERDIFFUSE_DOWNLOAD} into that folder (file names as released)`,
      field,
    );
    this.name = 'LayerDiffuseFilesMissing';
  }
}

/** The request field that asked for transparency, in the client's terms. */
export function transparentField(spec: JobSpec): string {
  return spec.sourceFields?.transparentBackground ?? 'transparent';
}

/** The files for `method`, or LayerDiffuseFilesMissing. */
export function layerDiffuseFiles(modelsDir: string, method: TransparentMethod, field = 'transparent'): { patch: string; decoder: string } {
  const folder = join(modelsDir, LAYERDIFFUSE_FOLDER);
  const missing: string[] = [];
  const find = (role: keyof typeof LAYERDIFFUSE_FILES) => {
    const names = [LAYERDIFFUSE_FILES[role], LAYERDIFFUSE_DIFFUSERS_FILES[role]].filter((n): n is string => n !== undefined);
    const found = names.map((n) => join(folder, n)).find((f) => existsSync(f));
    if (!found) missing.push(LAYERDIFFUSE_FILES[role]);
    return found ?? '';
  };
  const patch = find(method);
  const decoder = find('decoder');
  if (missing.length) throw new LayerDiffuseFilesMissing(missing, folder, field);
  return { patch, decoder };
}

/** The engine's settings for a transparent spec (files resolved); undefined when the spec is not transparent. */
export function transparentSettings(spec: JobSpec, modelsDir: string): TransparentSettings | undefined {
  if (!spec.transparentBackground) return undefined;
  const files = layerDiffuseFiles(modelsDir, spec.transparentOptions?.method ?? 'attention', transparentField(spec));
  return { ...files, family: FAMILY, tta: spec.transparentOptions?.tta, weight: spec.transparentOptions?.weight, preview: spec.transparentOptions?.preview };
}

/**
 * The executor's resolver: as transparentSettings, but files that vanished after submission fail the job as a
 * model-file error (422 "model"), like any unusable model file, rather than an internal one.
 */
export function jobTransparentSettings(spec: JobSpec, modelsDir: string): TransparentSettings | undefined {
  try {
    return transparentSettings(spec, modelsDir);
  } catch (e) {
    if (e instanceof LayerDiffuseFilesMissing) throw new ModelFileError(join(modelsDir, LAYERDIFFUSE_FOLDER), e.message);
    throw e;
  }
}

/** Everything a transparent spec needs before queueing; `modelFamily` is the checkpoint's (null when unknown). */
export function checkTransparentSpec(spec: JobSpec, modelsDir: string, modelFamily: string | null | undefined): void {
  if (!spec.transparentBackground) return;
  const field = transparentField(spec);
  if (spec.output.format === 'jpeg')
    throw new SpecError(spec.sourceFields?.output ?? 'output.format', 'JPEG has no alpha channel, so it cannot hold a transparent image; ask for png or webp');
  if (spec.mask) throw new SpecError(field, 'inpainting with a transparent result is not supported; send either the mask or transparency');
  if (modelFamily && modelFamily !== FAMILY)
    throw new SpecError(field, `transparent images (LayerDiffuse) need an SDXL checkpoint, but the model is ${modelFamily}; choose an SDXL model`);
  transparentSettings(spec, modelsDir);
}
