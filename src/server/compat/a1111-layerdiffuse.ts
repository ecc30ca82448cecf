// A1111 `alwayson_scripts` in the shape Forge's LayerDiffuse extension (lllyasviel/sd-forge-layerdiffuse) takes:
// {"LayerDiffuse": {"args": [enabled, method, weight, ending_step, fg_image, bg_image, blend_image, resize_mode,
// output_origin, fg_additional_prompt, bg_additional_prompt, blend_additional_prompt]}} (the script's title, any
// case). `method` is the extension's label or its index in the extension's list. Kiln does the two SDXL
// "Only Generate Transparent Image" methods; the others, and "Stop At" below 1, answer a 4xx naming the argument.
import type { JobSpec } from '../../queue/job-spec.ts';
import { HttpError } from '../errors.ts';

/** The extension's methods, in its order (an integer `method` indexes this list). */
const METHODS = [
  '(SD1.5) Only Generate Transparent Image (Attention Injection)',
  '(SD1.5) From Foreground to Background (need batch size 2)',
  '(SD1.5) From Background to Foreground (need batch size 2)',
  '(SD1.5) Generate Everything Together (need batch size 3)',
  '(SDXL) Only Generate Transparent Image (Attention Injection)',
  '(SDXL) Only Generate Transparent Image (Conv Injection)',
  '(SDXL) From Foreground to Blending',
  '(SDXL) From Foreground and Blending to Background',
  '(SDXL) From Background to Blending',
  '(SDXL) From Background and Blending to Foreground',
  '(SDXL) From Background to Foreground',
  '(SDXL) From Foreground to Background',
];
const SUPPORTED: Record<string, 'attention' | 'conv'> = { [METHODS[4]!]: 'attention', [METHODS[5]!]: 'conv' };

/** The script's key in alwayson_scripts, if the request has it. */
export function layerDiffuseScriptName(scripts: Record<string, unknown> | null | undefined): string | undefined {
  return Object.keys(scripts ?? {}).find((k) => k.toLowerCase() === 'layerdiffuse');
}

/** The script's arguments -> the spec's transparency fields (empty when disabled). Throws HttpError naming the argument. */
export function layerDiffuseFields(
  scripts: Record<string, unknown>,
  name: string,
): Pick<JobSpec, 'transparentBackground' | 'transparentOptions' | 'sourceFields'> {
  const field = `alwayson_scripts.${name}.args`;
  const raw = (scripts[name] as { args?: unknown } | null)?.args;
  if (!Array.isArray(raw)) throw new HttpError(422, 'invalid_request', `${field}: must be a list [enabled, method, weight, ending_step, ...]`, field);
  const [enabled, method = METHODS[4], weight = 1, endingStep = 1] = raw as unknown[];
  if (enabled !== true) return {};
  const label = typeof method === 'number' && Number.isInteger(method) ? METHODS[method] : method;
  const choice = typeof label === 'string' ? SUPPORTED[label] : undefined;
  if (!choice)
    throw new HttpError(
      422,
      'invalid_request',
      `${field}[1]: method ${JSON.stringify(method)} is not available; Kiln does ${Object.keys(SUPPORTED)
        .map((m) => `"${m}"`)
        .join(' and ')} (or 4 and 5)`,
      `${field}[1]`,
    );
  if (typeof weight !== 'number' || !Number.isFinite(weight) || weight < 0 || weight > 2)
    throw new HttpError(422, 'invalid_request', `${field}[2]: weight must be a number from 0 to 2, got ${JSON.stringify(weight)}`, `${field}[2]`);
  if (endingStep !== 1)
    throw new HttpError(422, 'invalid_request', `${field}[3]: "Stop At" below 1 (switching back to the plain UNet) is not supported; send 1`, `${field}[3]`);
  return {
    transparentBackground: true,
    transparentOptions: { method: choice, weight },
    sourceFields: { transparentBackground: `alwayson_scripts.${name}`, output: 'override_settings.samples_format' },
  };
}
