// The upscalers a request may name: A1111's latent modes and built-in resizes, and the model files in
// models/upscalers/ that the engine can actually read (a 0-byte, corrupt or not-yet-supported file is left out
// of every listing, and naming it is a 400 that says why). Listings show paths relative to the models folder.
import { BUILTIN_IMAGE_UPSCALERS, inspectUpscaler, LATENT_UPSCALE_MODES } from '../engine/index.ts';
import { SpecError } from '../queue/job-spec.ts';
import type { ModelRegistry } from './models/registry.ts';
import { InspectedFiles } from './models/inspected-files.ts';

export interface UpscalerFile {
  name: string;
  /** Absolute path (never shown to clients). */
  path: string;
  /** Path relative to the models folder ("upscalers/4x-UltraSharp.safetensors"). */
  relativePath: string;
  arch: string;
  scale: number;
}

export const LATENT_UPSCALER_NAMES: readonly string[] = Object.keys(LATENT_UPSCALE_MODES);

export class UpscalerCatalog {
  /** Header inspections by path, size and mtime: a file is read once until it changes. */
  private readonly inspected: InspectedFiles<UpscalerFile>;

  constructor(models: ModelRegistry, modelsDir: string) {
    this.inspected = new InspectedFiles(
      models,
      modelsDir,
      'upscaler',
      (e, relativePath) => ({ name: e.name, path: e.path, relativePath, ...inspectUpscaler(e.path) }),
      (st) => (!st.isFile() ? 'is not a file' : st.size === 0 ? 'is empty (0 bytes)' : undefined),
    );
  }

  /** Model upscalers the engine can run. */
  files(): UpscalerFile[] {
    return this.inspected.readable();
  }

  /** Every name a hires/extras request may use. */
  names(opts: { latent: boolean }): string[] {
    return [...(opts.latent ? LATENT_UPSCALER_NAMES : []), ...BUILTIN_IMAGE_UPSCALERS, ...this.files().map((f) => f.name)];
  }

  /** The weights file of a model upscaler; undefined for a built-in or latent name. */
  resolve(name: string): string | undefined {
    return this.files().find((f) => f.name === name)?.path;
  }

  /** Throws SpecError(field) unless `name` is usable: unknown names list the valid ones; unreadable files say why. */
  check(name: string, field: string, opts: { latent: boolean }): void {
    if (opts.latent && LATENT_UPSCALER_NAMES.includes(name)) return;
    if ((BUILTIN_IMAGE_UPSCALERS as readonly string[]).includes(name)) return;
    const found = this.inspected.all().find((i) => (i.ok ? i.file.name : i.name) === name);
    if (found?.ok) return;
    if (found) throw new SpecError(field, `the upscaler file "${name}" cannot be used: ${found.reason}`);
    throw new SpecError(field, `unknown upscaler "${name}"; available: ${this.names(opts).join(', ')}`);
  }
}
