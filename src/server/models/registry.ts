// The models folder and friendly labels. Layout (created on first start):
//   models/checkpoints/  *.safetensors single files, or diffusers folders (with model_index.json)
//   models/loras/  models/vae/  models/embeddings/  models/upscalers/
//   models/clip_vision/  CLIP models (folders or .safetensors) for image embeddings and interrogation (ComfyUI's name)
// A checkpoint's name is its file/folder name without extension; labels come from config.modelAliases
// (seed 004: {"Amanatsu": "John6666__amanatsu-illustrious-v11-sdxl"}). Clients pick models by name or label
// only, never by path, so a request can never make the server read an arbitrary file.
import { existsSync, mkdirSync, readdirSync, statSync } from 'node:fs';
import { basename, extname, join, resolve } from 'node:path';
import type { ModelRef } from '../../engine/index.ts';
import { SpecError } from '../../queue/job-spec.ts';
import type { KilnConfig } from '../config.ts';
import { hfCachePath, isHfRepoId } from './hf.ts';

export type ModelKind = 'checkpoint' | 'lora' | 'vae' | 'embedding' | 'upscaler' | 'clip_vision';
export const MODEL_FOLDERS: Record<ModelKind, string> = {
  checkpoint: 'checkpoints',
  lora: 'loras',
  vae: 'vae',
  embedding: 'embeddings',
  upscaler: 'upscalers',
  clip_vision: 'clip_vision',
};

export interface ModelEntry {
  name: string;
  kind: ModelKind;
  /** Friendly labels pointing at this model. */
  labels: string[];
  path: string;
  /** 'pickle': a .ckpt single file, read by the engine's restricted (no-code) torch reader. */
  format: 'diffusers' | 'safetensors' | 'pickle' | 'other';
  source: 'models-dir' | 'config' | 'huggingface';
}

function isDiffusersFolder(p: string): boolean {
  return existsSync(join(p, 'model_index.json'));
}

/** Pickled torch files each kind lists (read by the engine's restricted unpickler, never executed). */
const PICKLED: Partial<Record<ModelKind, string[]>> = { checkpoint: ['.ckpt'], lora: ['.pt', '.ckpt', '.bin'], embedding: ['.pt', '.bin'] };

function scanFolder(dir: string, kind: ModelKind): ModelEntry[] {
  if (!existsSync(dir)) return [];
  const out: ModelEntry[] = [];
  for (const file of readdirSync(dir).sort()) {
    if (file.startsWith('.')) continue;
    const p = join(dir, file);
    const st = statSync(p);
    if (st.isDirectory()) {
      if (kind === 'checkpoint' ? isDiffusersFolder(p) : true) out.push({ name: file, kind, labels: [], path: p, format: 'diffusers', source: 'models-dir' });
    } else if (extname(file) === '.safetensors') {
      out.push({ name: basename(file, '.safetensors'), kind, labels: [], path: p, format: 'safetensors', source: 'models-dir' });
    } else if (PICKLED[kind]?.includes(extname(file).toLowerCase())) {
      // A .safetensors twin of the same name wins; the .ckpt is then not listed twice.
      if (!existsSync(join(dir, `${basename(file, extname(file))}.safetensors`)))
        out.push({ name: basename(file, extname(file)), kind, labels: [], path: p, format: 'pickle', source: 'models-dir' });
    } else if (kind === 'upscaler' && ['.onnx', '.pth'].includes(extname(file))) {
      out.push({ name: basename(file, extname(file)), kind, labels: [], path: p, format: 'other', source: 'models-dir' });
    }
  }
  return out;
}

export class ModelRegistry {
  private entries: ModelEntry[] = [];
  private defaultEntry?: ModelEntry;

  constructor(private readonly config: Pick<KilnConfig, 'modelsDir' | 'cacheDir' | 'model' | 'modelAliases' | 'tokenizer'>) {
    for (const folder of Object.values(MODEL_FOLDERS)) mkdirSync(join(config.modelsDir, folder), { recursive: true });
    this.refresh();
  }

  /** Re-reads the models folder (admin: POST /v1/models/refresh). */
  refresh(): void {
    const entries: ModelEntry[] = [];
    for (const [kind, folder] of Object.entries(MODEL_FOLDERS) as Array<[ModelKind, string]>)
      entries.push(...scanFolder(join(this.config.modelsDir, folder), kind));
    // Downloaded Hugging Face models are checkpoints too, named by repo id.
    const hfRoot = join(this.config.cacheDir, 'huggingface');
    if (existsSync(hfRoot)) {
      for (const dir of readdirSync(hfRoot)) {
        const p = join(hfRoot, dir);
        if (isDiffusersFolder(p))
          entries.push({ name: dir.replace('--', '/'), kind: 'checkpoint', labels: [], path: p, format: 'diffusers', source: 'huggingface' });
      }
    }
    this.entries = entries;
    this.defaultEntry = undefined;
    const def = this.config.model;
    if (def) {
      const found = this.find(def, entries);
      if (found) this.defaultEntry = found;
      else if (existsSync(resolve(def))) {
        const p = resolve(def);
        const format = statSync(p).isDirectory() ? 'diffusers' : 'safetensors';
        this.defaultEntry = { name: basename(p, '.safetensors'), kind: 'checkpoint', labels: [], path: p, format, source: 'config' };
        entries.push(this.defaultEntry);
      }
    }
    for (const [label, target] of Object.entries(this.config.modelAliases)) {
      const e = this.find(target, entries);
      if (e && !e.labels.includes(label)) e.labels.push(label);
    }
  }

  private find(name: string, entries = this.entries): ModelEntry | undefined {
    const lower = name.toLowerCase();
    const aliasTarget = Object.entries(this.config.modelAliases).find(([label]) => label.toLowerCase() === lower)?.[1];
    if (aliasTarget && aliasTarget.toLowerCase() !== lower) return this.find(aliasTarget, entries);
    const checkpoints = entries.filter((e) => e.kind === 'checkpoint');
    return (
      checkpoints.find((e) => e.name === name) ??
      checkpoints.find((e) => e.name.toLowerCase() === lower || basename(e.path).toLowerCase() === lower) ??
      checkpoints.find((e) => e.labels.some((l) => l.toLowerCase() === lower))
    );
  }

  list(kind: ModelKind = 'checkpoint'): ModelEntry[] {
    return this.entries.filter((e) => e.kind === kind);
  }

  get default(): ModelEntry | undefined {
    return this.defaultEntry;
  }

  /** True when `name` (or the default, if undefined) names a known checkpoint. */
  has(name: string | undefined): boolean {
    return name === undefined ? this.defaultEntry !== undefined : this.find(name) !== undefined;
  }

  /** Name or label -> files for the engine. Throws SpecError('model') with what is available. */
  async resolve(name: string | undefined): Promise<ModelRef> {
    const entry = name === undefined ? this.defaultEntry : this.find(name);
    if (!entry) {
      const known = this.list().flatMap((e) => [e.name, ...e.labels]);
      if (name === undefined) throw new SpecError('model', 'no model was given and the server has no default model (start it with --model)');
      const hint =
        isHfRepoId(name) && !existsSync(hfCachePath(this.config.cacheDir, name))
          ? ' (Hugging Face models are only downloaded when configured as the server model)'
          : '';
      throw new SpecError('model', `unknown model "${name}"${hint}; available: ${known.length ? known.join(', ') : 'none'}`);
    }
    // Single files carry no tokenizer: the configured folder (if any) supplies it; folders bring their own.
    return (entry.format === 'safetensors' || entry.format === 'pickle') && this.config.tokenizer
      ? { path: entry.path, tokenizerDir: this.config.tokenizer }
      : { path: entry.path };
  }
}
