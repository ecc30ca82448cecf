// `kiln pull` and the admin download routes: a Hugging Face repo (whole diffusers pipeline, or one file), a
// Civitai model/version (id, URL, AIR or name), a plain https URL, or a named preset, fetched with the one
// downloader (src/download) and landed where the registry looks: HF repos stay in the standard HF cache (found by
// repo id; a single file also gets a link in the kind's folder), everything else goes into the kind's folder.
import { existsSync, mkdirSync, rmSync, symlinkSync } from 'node:fs';
import { basename, join } from 'node:path';
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

export type PullKind = ModelKind | 'layerdiffuse';
export const PULL_KINDS: PullKind[] = ['checkpoint', 'lora', 'vae', 'upscaler', 'embedding', 'layerdiffuse'];

export type PullSource =
  | { type: 'hf'; repo: string; file?: string }
  | { type: 'civitai'; ref: CivitaiRef }
  | { type: 'url'; url: string; fileName?: string; sha256?: string };

export interface PullPreset {
  description: string;
  kind: PullKind;
  sources: PullSource[];
}

/** Files Kiln's features need, by name (URLs as their authors publish them). */
export const PULL_PRESETS: Record<string, PullPreset> = {
  layerdiffuse: {
    description: 'LayerDiffuse SDXL transparency: attention LoRA + transparent VAE decoder (LayerDiffusion/layerdiffusion-v1)',
    kind: 'layerdiffuse',
    sources: [
      { type: 'hf', repo: 'LayerDiffusion/layerdiffusion-v1', file: 'layer_xl_transparent_attn.safetensors' },
      { type: 'hf', repo: 'LayerDiffusion/layerdiffusion-v1', file: 'vae_transparent_decoder.safetensors' },
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
  'realesr-general-x4v3': {
    description: 'Real-ESRGAN Compact general x4 v3 upscaler (xinntao/Real-ESRGAN v0.2.5.0)',
    kind: 'upscaler',
    sources: [{ type: 'url', url: 'https://github.com/xinntao/Real-ESRGAN/releases/download/v0.2.5.0/realesr-general-x4v3.pth' }],
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
  folderFor: (kind: PullKind) => string;
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
    const folder = opts.folderFor(k);
    mkdirSync(folder, { recursive: true });
    const link = join(folder, basename(source.file));
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
    const folder = opts.folderFor(k);
    const fileName = withName(resolved.file.name, chosen ?? opts.name);
    const got = await downloadCivitaiFile(resolved, folder, { ...(opts.civitaiEndpoint ? { endpoint: opts.civitaiEndpoint } : {}), fileName, ...common(opts) });
    return { kind: k, path: got.path, name: fileName.replace(/\.[^.]+$/, ''), source, sha256: got.sha256, civitai: resolved, ...(family ? { family } : {}) };
  }
  const k = kind ?? 'checkpoint';
  const fileName = withName(source.fileName ?? safeFileName(decodeURIComponent(new URL(source.url).pathname.split('/').pop() ?? 'download')), opts.name);
  const dest = join(opts.folderFor(k), fileName);
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
