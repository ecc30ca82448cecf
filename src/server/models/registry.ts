// The models folder and friendly labels. Layout (created on first start):
//   models/checkpoints/  *.safetensors single files, or diffusers folders (with model_index.json)
//   models/loras/  models/vae/ (A1111's models/VAE/ too)  models/embeddings/  models/upscalers/
//   models/clip_vision/  CLIP models (folders or .safetensors) for image embeddings and interrogation (ComfyUI's name)
// A checkpoint's name is its file/folder name without extension; labels come from config.modelAliases
// (seed 004: {"Amanatsu": "John6666__amanatsu-illustrious-v11-sdxl"}). Clients pick models by name or label
// only, never by path, so a request can never make the server read an arbitrary file.
import { existsSync, mkdirSync, readdirSync, realpathSync, statSync } from 'node:fs';
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
const PICKLED: Partial<Record<ModelKind, string[]>> = {
  checkpoint: ['.ckpt'],
  lora: ['.pt', '.ckpt', '.bin'],
  embedding: ['.pt', '.bin'],
  vae: ['.pt', '.ckpt', '.bin'],
};

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

  constructor(private readonly config: Pick<KilnConfig, 'modelsDir' | 'cacheDir' | 'model' | 'modelAliases' | 'tokenizer' | 'vae'>) {
    for (const folder of Object.values(MODEL_FOLDERS)) mkdirSync(join(config.modelsDir, folder), { recursive: true });
    this.refresh();
  }

  /** Re-reads the models folder (admin: POST /v1/models/refresh). */
  refresh(): void {
    const entries: ModelEntry[] = [];
    for (const [kind, folder] of Object.entries(MODEL_FOLDERS) as Array<[ModelKind, string]>)
      entries.push(...scanFolder(join(this.config.modelsDir, folder), kind));
    // A1111 keeps VAEs in models/VAE/: read it too (on a case-insensitive disk it is the same folder).
    const a1111Vae = join(this.config.modelsDir, 'VAE');
    if (existsSync(a1111Vae) && realpathSync(a1111Vae) !== realpathSync(join(this.config.modelsDir, MODEL_FOLDERS.vae))) {
      const have = new Set(entries.filter((e) => e.kind === 'vae').map((e) => e.name.toLowerCase()));
      entries.push(...scanFolder(a1111Vae, 'vae').filter((e) => !have.has(e.name.toLowerCase())));
    }
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

  /** A VAE by name, with or without its file extension (A1111's sd_vae values are file names), any case. */
  findVae(name: string): ModelEntry | undefined {
    const vaes = this.list('vae');
    const lower = name.toLowerCase();
    return vaes.find((e) => e.name === name) ?? vaes.find((e) => e.name.toLowerCase() === lower || basename(e.path).toLowerCase() === lower);
  }

  /**
   * A request's VAE choice -> the VAE file to use (undefined: the checkpoint's own). As A1111: "None" is the
   * checkpoint's own VAE, "Automatic" a VAE named like the checkpoint (`<name>` or `<name>.vae`) if there is one,
   * else the server's --vae; no choice means the server's --vae. Throws SpecError(field) for an unknown name.
   */
  resolveVae(choice: string | undefined, checkpoint: string | undefined, field = 'vae'): string | undefined {
    const lower = choice?.toLowerCase();
    if (lower === 'none') return undefined;
    if (choice !== undefined && lower !== 'automatic') {
      const entry = this.findVae(choice);
      if (entry) return entry.path;
      const known = this.list('vae').map((e) => e.name);
      throw new SpecError(
        field,
        `unknown VAE "${choice}"; choose one of: ${['Automatic', 'None', ...known].join(', ')} (GET /sdapi/v1/sd-vae; VAE files go in models/vae/)`,
      );
    }
    const ckpt = checkpoint === undefined ? this.defaultEntry : this.find(checkpoint);
    const named = lower === 'automatic' && ckpt ? (this.findVae(ckpt.name) ?? this.findVae(`${ckpt.name}.vae`)) : undefined;
    if (named) return named.path;
    return this.defaultVae();
  }

  /** The server's --vae as a file path: a name in the models folder or a path; undefined when none is set. */
  defaultVae(): string | undefined {
    const def = this.config.vae;
    if (!def) return undefined;
    const entry = this.findVae(def);
    if (entry) return entry.path;
    if (existsSync(resolve(def))) return resolve(def);
    throw new SpecError('vae', `the server's default VAE "${def}" (--vae) is neither in models/vae/ nor an existing path; fix --vae or send "None"`);
  }

  /** Name or label -> files for the engine, with the VAE the request chose. Throws SpecError('model'/'vae') with what is available. */
  async resolve(name: string | undefined, vae?: string): Promise<ModelRef> {
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
    const vaePath = this.resolveVae(vae, name);
    const ref: ModelRef = vaePath ? { path: entry.path, vae: vaePath } : { path: entry.path };
    return (entry.format === 'safetensors' || entry.format === 'pickle') && this.config.tokenizer ? { ...ref, tokenizerDir: this.config.tokenizer } : ref;
  }
}
