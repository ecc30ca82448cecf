// The model folders and friendly labels. A models root may be Kiln's own (checkpoints/ loras/ vae/ embeddings/
// upscalers/, created on first start when the root is new or empty), an AUTOMATIC1111 `models/` folder
// (Stable-diffusion/ Lora/ LyCORIS/ VAE/ ESRGAN/ RealESRGAN/, embeddings/ beside it at the webui root) or a
// ComfyUI `models/` folder (checkpoints/ loras/ vae/ upscale_models/ embeddings/); several roots can be given
// (config `modelRoots`). Kiln never creates folders inside a root it did not create. Sub-folders count: a model's
// name keeps its sub-path (`sdxl/juggernaut`), as A1111 shows it. Repos in the standard Hugging Face cache are
// checkpoints named by repo id. Labels come from config.modelAliases. Clients pick models by name or label only,
// never by path, so a request can never make the server read an arbitrary file.
// CLIP models for image embeddings and interrogation live in clip_vision/ (ComfyUI's name).
import { existsSync, mkdirSync, readdirSync, statSync } from 'node:fs';
import { basename, dirname, extname, join, resolve } from 'node:path';
import type { ModelRef } from '../../engine/index.ts';
import { SpecError } from '../../queue/job-spec.ts';
import type { KilnConfig } from '../config.ts';
import { cachedSnapshot, isHfRepoId, listCachedRepos } from '../../download/hf-hub.ts';

export type ModelKind = 'checkpoint' | 'lora' | 'vae' | 'embedding' | 'upscaler' | 'clip_vision';
/** Kiln's own folder names. */
export const MODEL_FOLDERS: Record<ModelKind, string> = {
  checkpoint: 'checkpoints',
  lora: 'loras',
  vae: 'vae',
  embedding: 'embeddings',
  upscaler: 'upscalers',
  clip_vision: 'clip_vision',
};

/** Every folder name a kind has in the layouts people keep (Kiln, ComfyUI, A1111); `../embeddings` is A1111's. */
export const KIND_FOLDERS: Record<ModelKind, string[]> = {
  checkpoint: ['checkpoints', 'Stable-diffusion'],
  lora: ['loras', 'Lora', 'LyCORIS'],
  vae: ['vae', 'VAE'],
  embedding: ['embeddings', '../embeddings'],
  upscaler: ['upscalers', 'upscale_models', 'ESRGAN', 'RealESRGAN'],
  clip_vision: ['clip_vision'],
};

export type RootLayout = 'kiln' | 'a1111' | 'comfyui' | 'other';

export function detectLayout(root: string): RootLayout {
  if (existsSync(join(root, 'Stable-diffusion')) || existsSync(join(root, 'Lora'))) return 'a1111';
  // Kiln's own layout first: it has a clip_vision/ folder too (ComfyUI's name), but upscalers/ is Kiln's alone.
  if (existsSync(join(root, 'upscalers')) && existsSync(join(root, 'checkpoints'))) return 'kiln';
  if (existsSync(join(root, 'upscale_models')) || existsSync(join(root, 'clip_vision')) || existsSync(join(root, 'diffusion_models'))) return 'comfyui';
  return 'other';
}

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

/** A folder that is one diffusers/PEFT-format LoRA or component rather than a sub-folder of files. */
function isModelFolder(p: string, kind: ModelKind): boolean {
  if (kind === 'checkpoint') return isDiffusersFolder(p);
  return ['pytorch_lora_weights.safetensors', 'adapter_model.safetensors', 'adapter_config.json', 'config.json'].some((f) => existsSync(join(p, f)));
}

/** Pickled torch files each kind lists (read by the engine's restricted unpickler, never executed). */
const PICKLED: Partial<Record<ModelKind, string[]>> = {
  checkpoint: ['.ckpt'],
  lora: ['.pt', '.ckpt', '.bin'],
  embedding: ['.pt', '.bin'],
  vae: ['.pt', '.ckpt', '.bin'],
};

/** Sub-folders deeper than this are not scanned (a symlink loop or a huge tree must not stall a refresh). */
const MAX_DEPTH = 6;
const MAX_ENTRIES_PER_FOLDER = 10_000;

function scanFolder(dir: string, kind: ModelKind, prefix = '', depth = 0, out: ModelEntry[] = []): ModelEntry[] {
  if (!existsSync(dir) || depth > MAX_DEPTH) return out;
  let names: string[];
  try {
    names = readdirSync(dir).sort().slice(0, MAX_ENTRIES_PER_FOLDER);
  } catch {
    return out;
  }
  const add = (name: string, p: string, format: ModelEntry['format']) =>
    out.push({ name: prefix + name, kind, labels: [], path: p, format, source: 'models-dir' });
  for (const file of names) {
    if (file.startsWith('.')) continue;
    const p = join(dir, file);
    let st: ReturnType<typeof statSync>;
    try {
      st = statSync(p);
    } catch {
      continue; // a dangling link
    }
    const ext = extname(file).toLowerCase();
    if (st.isDirectory()) {
      if (isModelFolder(p, kind)) add(file, p, 'diffusers');
      else scanFolder(p, kind, `${prefix}${file}/`, depth + 1, out);
    } else if (ext === '.safetensors') {
      add(basename(file, extname(file)), p, 'safetensors');
    } else if (PICKLED[kind]?.includes(ext)) {
      // A .safetensors twin of the same name wins; the .ckpt is then not listed twice.
      if (!existsSync(join(dir, `${basename(file, extname(file))}.safetensors`))) add(basename(file, extname(file)), p, 'pickle');
    } else if (kind === 'upscaler' && ['.onnx', '.pth'].includes(ext)) {
      add(basename(file, extname(file)), p, 'other');
    }
  }
  return out;
}

export type RegistryConfig = Pick<KilnConfig, 'modelsDir' | 'cacheDir' | 'model' | 'modelAliases' | 'tokenizer' | 'vae'> &
  Partial<Pick<KilnConfig, 'hfCacheDir' | 'modelRoots'>>;

export class ModelRegistry {
  private entries: ModelEntry[] = [];
  private defaultEntry?: ModelEntry;
  /** The roots scanned, first the primary (--models-dir). */
  readonly roots: Array<{ path: string; layout: RootLayout; ownedByKiln: boolean }>;

  constructor(private readonly config: RegistryConfig) {
    const primary = resolve(config.modelsDir);
    // Kiln lays out only a root it creates (absent or empty) or one that already has its layout.
    const fresh = !existsSync(primary) || readdirSync(primary).filter((f) => !f.startsWith('.')).length === 0;
    if (fresh) for (const folder of Object.values(MODEL_FOLDERS)) mkdirSync(join(primary, folder), { recursive: true });
    this.roots = [primary, ...(config.modelRoots ?? []).map((r) => resolve(r))]
      .filter((r, i, all) => all.indexOf(r) === i)
      .map((path) => {
        const layout = detectLayout(path);
        return { path, layout, ownedByKiln: layout === 'kiln' };
      });
    this.refresh();
  }

  /** The folder a new model of `kind` goes into: an existing one of its kind in a root, else Kiln's in its own root. */
  folderFor(kind: ModelKind): string {
    for (const root of this.roots) {
      for (const name of KIND_FOLDERS[kind]) {
        const p = join(root.path, name);
        if (existsSync(p) && statSync(p).isDirectory()) return p;
      }
    }
    const own = this.roots.find((r) => r.ownedByKiln);
    if (own) {
      const p = join(own.path, MODEL_FOLDERS[kind]);
      mkdirSync(p, { recursive: true });
      return p;
    }
    throw new Error(
      `no ${kind} folder in ${this.roots.map((r) => r.path).join(', ')}; create one (${KIND_FOLDERS[kind].filter((f) => !f.startsWith('..')).join(' or ')}) — Kiln does not create folders in a models folder it did not make`,
    );
  }

  /** Re-reads the models folders (admin: POST /v1/models/refresh). */
  refresh(): void {
    const entries: ModelEntry[] = [];
    for (const kind of Object.keys(KIND_FOLDERS) as ModelKind[]) {
      const seen = new Set<string>();
      for (const root of this.roots) {
        for (const folder of KIND_FOLDERS[kind]) {
          // A1111 keeps embeddings at the webui root, beside models/.
          if (folder.startsWith('..') && root.layout !== 'a1111') continue;
          const dir = resolve(root.path, folder);
          if (seen.has(dir)) continue; // case-insensitive file systems: vae/ and VAE/ are one folder
          seen.add(dir);
          for (const e of scanFolder(dir, kind)) if (!entries.some((x) => x.kind === kind && x.path === e.path)) entries.push(e);
        }
      }
    }
    // Pipelines in the standard Hugging Face cache are checkpoints named by repo id.
    if (this.config.hfCacheDir) {
      for (const { repo, snapshot } of listCachedRepos({ cacheDir: this.config.hfCacheDir }))
        if (isDiffusersFolder(snapshot))
          entries.push({ name: repo, kind: 'checkpoint', labels: [], path: snapshot, format: 'diffusers', source: 'huggingface' });
    }
    // Downloads of earlier Kiln versions (<cacheDir>/huggingface/owner--name), still found.
    const legacy = join(this.config.cacheDir, 'huggingface');
    if (existsSync(legacy)) {
      for (const dir of readdirSync(legacy)) {
        const p = join(legacy, dir);
        const name = dir.replace('--', '/');
        if (isDiffusersFolder(p) && !entries.some((e) => e.name === name))
          entries.push({ name, kind: 'checkpoint', labels: [], path: p, format: 'diffusers', source: 'huggingface' });
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
        const format = statSync(p).isDirectory() ? 'diffusers' : extname(p).toLowerCase() === '.ckpt' ? 'pickle' : 'safetensors';
        this.defaultEntry = { name: basename(p, extname(p)), kind: 'checkpoint', labels: [], path: p, format, source: 'config' };
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
      // A1111 names files with their sub-folder and extension: "sdxl/juggernaut.safetensors".
      checkpoints.find(
        (e) => e.source === 'models-dir' && `${dirname(e.name) === '.' ? '' : `${dirname(e.name)}/`}${basename(e.path)}`.toLowerCase() === lower,
      ) ??
      checkpoints.find((e) => e.labels.some((l) => l.toLowerCase() === lower))
    );
  }

  list(kind: ModelKind = 'checkpoint'): ModelEntry[] {
    return this.entries.filter((e) => e.kind === kind);
  }

  get default(): ModelEntry | undefined {
    return this.defaultEntry;
  }

  /** The checkpoint a name or label stands for (undefined: the default model). */
  entry(name: string | undefined): ModelEntry | undefined {
    return name === undefined ? this.defaultEntry : this.find(name);
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
        isHfRepoId(name) && !(this.config.hfCacheDir && cachedSnapshot(name, { cacheDir: this.config.hfCacheDir }))
          ? ' (Hugging Face models are downloaded with `kiln pull owner/name` or when configured as the server model)'
          : '';
      throw new SpecError('model', `unknown model "${name}"${hint}; available: ${known.length ? known.join(', ') : 'none'}`);
    }
    // Single files carry no tokenizer: the configured folder (if any) supplies it; folders bring their own.
    const vaePath = this.resolveVae(vae, name);
    const ref: ModelRef = vaePath ? { path: entry.path, vae: vaePath } : { path: entry.path };
    return (entry.format === 'safetensors' || entry.format === 'pickle') && this.config.tokenizer ? { ...ref, tokenizerDir: this.config.tokenizer } : ref;
  }
}
