// `kiln pull` and the admin download routes: a Hugging Face repo (whole diffusers pipeline, or one file), a
// Civitai model/version (id, URL, AIR or name), a plain https URL, or a named preset, fetched with the one
// downloader (src/download) and landed where the registry looks: HF repos stay in the standard HF cache (found by
// repo id; a single file also gets a link in the kind's folder), everything else goes into the kind's folder.
import { existsSync, mkdirSync, rmSync, statSync, symlinkSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import {
  civitaiBaseModelFamily,
  downloadCivitaiFile,
  parseCivitaiRef,
  resolveCivitai,
  safeFileName,
  type CivitaiRef,
  type CivitaiResolved,
} from '../../download/civitai.ts';
import { downloadFile, type DownloadProgress } from '../../download/fetch-file.ts';
import { downloadHubFile, ensureDiffusersRepo, isHfRepoId } from '../../download/hf-hub.ts';
import type { ModelKind } from './registry.ts';

export type PullKind = ModelKind | 'layerdiffuse' | 'taesd' | 'face-restoration';
export const PULL_KINDS: PullKind[] = ['checkpoint', 'lora', 'vae', 'upscaler', 'embedding', 'layerdiffuse'];

/**
 * Where a feature's file lands: the first of `folder` that exists in the models folder (the one the feature's
 * catalog reads: layerdiffuse/, codeformer/, vae-approx/, ...), else the first, created; `as` renames it (a sub-path
 * for a file of a model folder).
 */
interface Landing {
  folder?: readonly string[];
  as?: string;
}

export type PullSource =
  | ({ type: 'hf'; repo: string; file?: string } & Landing)
  | { type: 'civitai'; ref: CivitaiRef }
  | ({ type: 'url'; url: string; fileName?: string; sha256?: string } & Landing);

export interface PullPreset {
  description: string;
  kind: PullKind;
  sources: PullSource[];
}

// The folders each feature's catalog reads (Kiln's name first, then A1111's and ComfyUI's).
const LAYERDIFFUSE = ['layerdiffuse'];
const TAESD = ['vae-approx', 'VAE-approx', 'vae_approx', 'taesd'];
const CODEFORMER = ['codeformer', 'Codeformer'];
const GFPGAN = ['gfpgan', 'GFPGAN'];
/** The face detector and parser: Kiln keeps them in facedetect/, A1111 beside the restorer. */
const FACE_HELPERS = ['facedetect', 'Codeformer', 'GFPGAN', 'codeformer', 'gfpgan'];
const CLIP_VISION = ['clip_vision'];
type FeatureKind = Exclude<PullKind, ModelKind>;
/** The folders of the kinds that are features rather than registry model kinds. */
const FEATURE_FOLDERS: Record<FeatureKind, readonly string[]> = { layerdiffuse: LAYERDIFFUSE, taesd: TAESD, 'face-restoration': FACE_HELPERS };

const LD_REPO = 'LayerDiffusion/layerdiffusion-v1';
const LD_DIFFUSERS_REPO = 'lllyasviel/LayerDiffuse_Diffusers';
const FACE_HELPER_SOURCES: PullSource[] = [
  { type: 'url', url: 'https://github.com/xinntao/facexlib/releases/download/v0.1.0/detection_Resnet50_Final.pth', folder: FACE_HELPERS },
  { type: 'url', url: 'https://github.com/xinntao/facexlib/releases/download/v0.2.2/parsing_parsenet.pth', folder: FACE_HELPERS },
];
const CODEFORMER_SOURCE: PullSource = {
  type: 'url',
  url: 'https://github.com/sczhou/CodeFormer/releases/download/v0.1.0/codeformer.pth',
  folder: CODEFORMER,
  as: 'codeformer-v0.1.0.pth', // A1111's name for it
};
const GFPGAN_SOURCE: PullSource = { type: 'url', url: 'https://github.com/TencentARC/GFPGAN/releases/download/v1.3.4/GFPGANv1.4.pth', folder: GFPGAN };
/** A transformers CLIP folder: the files the image-understanding catalog reads (weights, config, tokenizer). */
const clipFolder = (repo: string): PullSource[] =>
  ['config.json', 'pytorch_model.bin', 'preprocessor_config.json', 'vocab.json', 'merges.txt', 'tokenizer_config.json', 'special_tokens_map.json'].map(
    (file) => ({ type: 'hf', repo, file, folder: CLIP_VISION, as: `${repo}/${file}` }),
  );

/** Files Kiln's features need, by name (URLs as their authors publish them), each landing where its catalog reads. */
export const PULL_PRESETS: Record<string, PullPreset> = {
  layerdiffuse: {
    description: `LayerDiffuse SDXL transparency: attention and conv UNet patches + transparent VAE decoder (${LD_REPO})`,
    kind: 'layerdiffuse',
    sources: [
      { type: 'hf', repo: LD_REPO, file: 'layer_xl_transparent_attn.safetensors', folder: LAYERDIFFUSE },
      { type: 'hf', repo: LD_REPO, file: 'layer_xl_transparent_conv.safetensors', folder: LAYERDIFFUSE },
      { type: 'hf', repo: LD_REPO, file: 'vae_transparent_decoder.safetensors', folder: LAYERDIFFUSE },
    ],
  },
  'layerdiffuse-diffusers': {
    description: `LayerDiffuse SDXL transparency, diffusers release: attention offsets + transparent VAE decoder (${LD_DIFFUSERS_REPO})`,
    kind: 'layerdiffuse',
    sources: [
      { type: 'hf', repo: LD_DIFFUSERS_REPO, file: 'ld_diffusers_sdxl_attn.safetensors', folder: LAYERDIFFUSE },
      { type: 'hf', repo: LD_DIFFUSERS_REPO, file: 'ld_diffusers_sdxl_vae_transparent_decoder.safetensors', folder: LAYERDIFFUSE },
    ],
  },
  'realesrgan-x4': {
    description: 'Real-ESRGAN x4plus upscaler (xinntao/Real-ESRGAN v0.1.0)',
    kind: 'upscaler',
    sources: [{ type: 'url', url: 'https://github.com/xinntao/Real-ESRGAN/releases/download/v0.1.0/RealESRGAN_x4plus.pth' }],
  },
  'realesrgan-x4-anime': {
    description: 'Real-ESRGAN x4plus anime 6B upscaler (xinntao/Real-ESRGAN v0.2.2.4)',
    kind: 'upscaler',
    sources: [{ type: 'url', url: 'https://github.com/xinntao/Real-ESRGAN/releases/download/v0.2.2.4/RealESRGAN_x4plus_anime_6B.pth' }],
  },
  'realesrgan-x2': {
    description: 'Real-ESRGAN x2plus upscaler (xinntao/Real-ESRGAN v0.2.1)',
    kind: 'upscaler',
    sources: [{ type: 'url', url: 'https://github.com/xinntao/Real-ESRGAN/releases/download/v0.2.1/RealESRGAN_x2plus.pth' }],
  },
  'realesr-general-x4v3': {
    description: 'Real-ESRGAN Compact general x4 v3 upscaler (xinntao/Real-ESRGAN v0.2.5.0)',
    kind: 'upscaler',
    sources: [{ type: 'url', url: 'https://github.com/xinntao/Real-ESRGAN/releases/download/v0.2.5.0/realesr-general-x4v3.pth' }],
  },
  'face-restoration': {
    description: 'Face restoration: CodeFormer (sczhou/CodeFormer v0.1.0), GFPGAN v1.4 (TencentARC/GFPGAN), RetinaFace + ParseNet (xinntao/facexlib)',
    kind: 'face-restoration',
    sources: [CODEFORMER_SOURCE, GFPGAN_SOURCE, ...FACE_HELPER_SOURCES],
  },
  codeformer: {
    description: 'CodeFormer face restoration with its face detector and parser (sczhou/CodeFormer, xinntao/facexlib)',
    kind: 'face-restoration',
    sources: [CODEFORMER_SOURCE, ...FACE_HELPER_SOURCES],
  },
  gfpgan: {
    description: 'GFPGAN v1.4 face restoration with its face detector and parser (TencentARC/GFPGAN, xinntao/facexlib)',
    kind: 'face-restoration',
    sources: [GFPGAN_SOURCE, ...FACE_HELPER_SOURCES],
  },
  taesd: {
    description: 'TAESD decoder for SD1/SD2 live previews and vae "taesd" (madebyollin/taesd)',
    kind: 'taesd',
    sources: [{ type: 'url', url: 'https://github.com/madebyollin/taesd/raw/main/taesd_decoder.pth', folder: TAESD }],
  },
  taesdxl: {
    description: 'TAESDXL decoder for SDXL live previews and vae "taesd" (madebyollin/taesd)',
    kind: 'taesd',
    sources: [{ type: 'url', url: 'https://github.com/madebyollin/taesd/raw/main/taesdxl_decoder.pth', folder: TAESD }],
  },
  'clip-vit-base-patch32': {
    description: "CLIP ViT-B/32 for image embeddings and interrogation (seed 003's img2embed model; openai/clip-vit-base-patch32)",
    kind: 'clip_vision',
    sources: clipFolder('openai/clip-vit-base-patch32'),
  },
  'clip-vit-large-patch14': {
    description: "CLIP ViT-L/14 for interrogation (A1111's interrogator model; openai/clip-vit-large-patch14)",
    kind: 'clip_vision',
    sources: clipFolder('openai/clip-vit-large-patch14'),
  },
  sd15: {
    description: 'Stable Diffusion 1.5 (diffusers, stable-diffusion-v1-5/stable-diffusion-v1-5)',
    kind: 'checkpoint',
    sources: [{ type: 'hf', repo: 'stable-diffusion-v1-5/stable-diffusion-v1-5' }],
  },
  sdxl: {
    description: 'SDXL 1.0 base (diffusers, stabilityai/stable-diffusion-xl-base-1.0)',
    kind: 'checkpoint',
    sources: [{ type: 'hf', repo: 'stabilityai/stable-diffusion-xl-base-1.0' }],
  },
  'sdxl-vae-fp16-fix': {
    description: 'SDXL VAE that runs in fp16 (madebyollin/sdxl-vae-fp16-fix)',
    kind: 'vae',
    sources: [{ type: 'hf', repo: 'madebyollin/sdxl-vae-fp16-fix', file: 'sdxl_vae.safetensors' }],
  },
};

/**
 * Where feature files go in `modelsDir` (the folder the catalogs read): in a folder Kiln laid out, the first of
 * `names` (Kiln's), created if need be; elsewhere the first of `names` that exists, and if none does the user
 * creates it (Kiln never creates folders in an A1111/ComfyUI folder).
 */
export function featureFolderIn(modelsDir: string, ownedByKiln: boolean): (names: readonly string[]) => string {
  return (names) => {
    // Kiln's own folder in Kiln's layout; another layout's folder where the user has one.
    for (const name of ownedByKiln ? names.slice(0, 1) : names) {
      const p = join(modelsDir, name);
      if (existsSync(p) && statSync(p).isDirectory()) return p;
    }
    if (!ownedByKiln)
      throw new PullError(
        `no ${names.join(' or ')} folder in ${modelsDir}; create ${join(modelsDir, names[0]!)} — Kiln does not create folders in a models folder it did not make`,
      );
    const p = join(modelsDir, names[0]!);
    mkdirSync(p, { recursive: true });
    return p;
  };
}

export class PullError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'PullError';
  }
}

/** What a pull argument names: a preset, `owner/repo[:file]`, a Civitai reference or an https URL. */
export function parsePullSpec(spec: string): { sources: PullSource[]; kind?: PullKind } {
  const preset = PULL_PRESETS[spec.toLowerCase()];
  if (preset) return { sources: preset.sources, kind: preset.kind };
  const civitai = /^\d|^civitai:|^urn:air:|^https?:\/\/(www\.)?civitai\./.test(spec) ? parseCivitaiRef(spec) : undefined;
  if (civitai) return { sources: [{ type: 'civitai', ref: civitai }] };
  if (/^https:\/\//.test(spec)) return { sources: [{ type: 'url', url: spec }] };
  if (/^http:\/\//.test(spec)) throw new PullError(`${spec}: plain http is refused; use https`);
  const colon = spec.indexOf(':');
  const repo = colon < 0 ? spec : spec.slice(0, colon);
  const file = colon < 0 ? undefined : spec.slice(colon + 1);
  if (isHfRepoId(repo) && (file === undefined || (file.length > 0 && !file.split('/').some((p) => p === '..' || p === '')))) {
    return { sources: [{ type: 'hf', repo, ...(file ? { file } : {}) }] };
  }
  throw new PullError(
    `"${spec}" is not a preset (${Object.keys(PULL_PRESETS).join(', ')}), a Hugging Face repo id (owner/name[:file]), a Civitai id/URL or an https URL`,
  );
}

const CIVITAI_KINDS: Record<string, PullKind> = {
  checkpoint: 'checkpoint',
  lora: 'lora',
  locon: 'lora',
  lycoris: 'lora',
  dora: 'lora',
  textualinversion: 'embedding',
  vae: 'vae',
  upscaler: 'upscaler',
};

export function civitaiKind(type: string | undefined): PullKind | undefined {
  return type ? CIVITAI_KINDS[type.toLowerCase()] : undefined;
}

export interface PullOptions {
  /** Folder a kind's files go into (created when the root is Kiln's own). */
  folderFor: (kind: ModelKind) => string;
  /** Folder a feature's files go into, from the folder names its catalog reads (see featureFolderIn). */
  featureFolder?: (names: readonly string[]) => string;
  kind?: PullKind;
  hfCacheDir?: string;
  hfEndpoint?: string;
  civitaiEndpoint?: string;
  onProgress?: (p: DownloadProgress) => void;
  /** Refuse a Civitai model before downloading (e.g. the wrong base model) by throwing; may return the name to store it under. */
  checkCivitai?: (resolved: CivitaiResolved, kind: PullKind) => string | undefined;
  /** File name (without extension) to store a Civitai/URL download under. */
  name?: string;
  fetchImpl?: typeof fetch;
  maxBytes?: number;
}

export interface PulledFile {
  kind: PullKind;
  /** Where the registry finds it: a file/folder path, or an HF repo id for whole repos. */
  path: string;
  name: string;
  source: PullSource;
  sha256?: string;
  civitai?: CivitaiResolved;
  /** Civitai base model mapped to a Kiln family, when known. */
  family?: string;
}

function common(opts: PullOptions) {
  return {
    ...(opts.onProgress ? { onProgress: opts.onProgress } : {}),
    ...(opts.fetchImpl ? { fetchImpl: opts.fetchImpl } : {}),
    ...(opts.maxBytes !== undefined ? { maxBytes: opts.maxBytes } : {}),
  };
}

function withName(file: string, name: string | undefined): string {
  if (!name) return file;
  const ext = /\.[A-Za-z0-9]+$/.exec(file)?.[0] ?? '';
  return `${safeFileName(name)}${ext}`;
}

/** A feature file's folder (from the names its catalog reads), else the kind's folder; created if need be. */
function landingFolder(source: Landing, kind: PullKind, opts: PullOptions): string {
  const names = source.folder ?? FEATURE_FOLDERS[kind as FeatureKind];
  if (!names) {
    const folder = opts.folderFor(kind as ModelKind);
    mkdirSync(folder, { recursive: true });
    return folder;
  }
  if (!opts.featureFolder) throw new PullError(`${kind} files land in the models folder's ${names[0]}/; this caller gave no models folder`);
  return opts.featureFolder(names);
}

async function pullOne(source: PullSource, kind: PullKind | undefined, opts: PullOptions): Promise<PulledFile> {
  if (source.type === 'hf') {
    const hub = { ...(opts.hfCacheDir ? { cacheDir: opts.hfCacheDir } : {}), ...(opts.hfEndpoint ? { endpoint: opts.hfEndpoint } : {}), ...common(opts) };
    if (!source.file) {
      if (kind && kind !== 'checkpoint') throw new PullError(`${source.repo}: a whole repo is a checkpoint; name a file (${source.repo}:FILE) for a ${kind}`);
      const dir = await ensureDiffusersRepo(source.repo, hub);
      return { kind: 'checkpoint', path: dir, name: source.repo, source };
    }
    const cached = await downloadHubFile(source.repo, source.file, hub);
    const k = kind ?? 'checkpoint';
    const folder = landingFolder(source, k, opts);
    const link = join(folder, source.as ?? basename(source.file));
    mkdirSync(dirname(link), { recursive: true });
    rmSync(link, { force: true });
    symlinkSync(cached, link);
    return { kind: k, path: link, name: basename(source.file).replace(/\.[^.]+$/, ''), source };
  }
  if (source.type === 'civitai') {
    const resolved = await resolveCivitai(source.ref, {
      ...(opts.civitaiEndpoint ? { endpoint: opts.civitaiEndpoint } : {}),
      ...(kind === 'lora' ? { types: ['LORA', 'LoCon', 'DoRA'] } : {}),
      ...common(opts),
    });
    const k = kind ?? civitaiKind(resolved.model.type ?? resolved.version.model?.type) ?? 'checkpoint';
    const family = civitaiBaseModelFamily(resolved.version.baseModel);
    const chosen = opts.checkCivitai?.(resolved, k);
    const folder = landingFolder({}, k, opts);
    const fileName = withName(resolved.file.name, chosen ?? opts.name);
    const got = await downloadCivitaiFile(resolved, folder, { ...(opts.civitaiEndpoint ? { endpoint: opts.civitaiEndpoint } : {}), fileName, ...common(opts) });
    return { kind: k, path: got.path, name: fileName.replace(/\.[^.]+$/, ''), source, sha256: got.sha256, civitai: resolved, ...(family ? { family } : {}) };
  }
  const k = kind ?? 'checkpoint';
  const fileName =
    source.as ?? withName(source.fileName ?? safeFileName(decodeURIComponent(new URL(source.url).pathname.split('/').pop() ?? 'download')), opts.name);
  const dest = join(landingFolder(source, k, opts), fileName);
  if (existsSync(dest)) return { kind: k, path: dest, name: fileName.replace(/\.[^.]+$/, ''), source };
  const got = await downloadFile({ url: source.url, dest, label: fileName, ...(source.sha256 ? { expectedSha256: source.sha256 } : {}), ...common(opts) });
  return { kind: k, path: got.path, name: fileName.replace(/\.[^.]+$/, ''), source, sha256: got.sha256 };
}

export async function pull(spec: string, opts: PullOptions): Promise<PulledFile[]> {
  const parsed = parsePullSpec(spec);
  if (opts.kind && !PULL_KINDS.includes(opts.kind)) throw new PullError(`--kind ${opts.kind}: one of ${PULL_KINDS.join(', ')}`);
  const out: PulledFile[] = [];
  for (const source of parsed.sources) out.push(await pullOne(source, opts.kind ?? parsed.kind, opts));
  return out;
}
