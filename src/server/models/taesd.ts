// TAESD / TAESDXL decoder files (tiny autoencoders for live previews) found where A1111 (models/VAE-approx),
// ComfyUI (models/vae_approx) or a plain models/taesd folder keep them, under their published names.
import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';

/** Folders searched under the models directory, first match wins. */
export const TAESD_FOLDERS = ['vae-approx', 'VAE-approx', 'vae_approx', 'taesd'];

/** Published file stems per latent space name (the engine's LatentSpace.name). */
const STEMS: Record<string, string> = { sd: 'taesd_decoder', sdxl: 'taesdxl_decoder' };
const EXTENSIONS = ['.safetensors', '.pth'];

/** The published decoder file name (no extension) for a latent space name. */
export function taesdStem(space: string): string {
  return STEMS[space] ?? `taesd_${space}_decoder`;
}

/** The decoder file per latent space that is present (checked per call, so files added later are used). */
export function findTaesdDecoders(modelsDir: string): Partial<Record<string, string>> {
  const found: Partial<Record<string, string>> = {};
  for (const [space, stem] of Object.entries(STEMS)) {
    for (const folder of TAESD_FOLDERS) {
      const file = EXTENSIONS.map((ext) => join(modelsDir, folder, stem + ext)).find((f) => existsSync(f) && statSync(f).isFile());
      if (file) {
        found[space] = file;
        break;
      }
    }
  }
  return found;
}
