// Hugging Face Hub repos in the standard HF cache (the one diffusers, transformers, ComfyUI and InvokeAI share):
// <HF_HUB_CACHE>/models--owner--name/{blobs/<etag>, snapshots/<commit>/<path> -> ../../blobs/<etag>, refs/<rev>}.
// The folder naming and the cache location come from @huggingface/hub; the transfer is the one downloader
// (resume, size and sha256 checks, progress). File metadata comes from a HEAD on /<repo>/resolve/<rev>/<file>
// as huggingface_hub does it: X-Repo-Commit, X-Linked-Etag / ETag, X-Linked-Size / Content-Length.
import { copyFileSync, existsSync, mkdirSync, readFileSync, readdirSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { getHFHubCachePath, getRepoFolderName } from '@huggingface/hub';
import { DownloadError, downloadFile, fetchFollowing, type DownloadProgress } from './fetch-file.ts';

export interface HubOptions {
  /** Default $HF_ENDPOINT, else https://huggingface.co. */
  endpoint?: string;
  /** Default $HF_TOKEN. */
  token?: string;
  /** Default @huggingface/hub's: $HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub. */
  cacheDir?: string;
  revision?: string;
  onProgress?: (p: DownloadProgress) => void;
  fetchImpl?: typeof fetch;
  maxBytes?: number;
}

export function isHfRepoId(s: string): boolean {
  return /^[A-Za-z0-9][\w.-]*\/[\w.-]+$/.test(s) && !s.includes('..');
}

export function hubCacheDir(opts: Pick<HubOptions, 'cacheDir'> = {}): string {
  return opts.cacheDir ?? getHFHubCachePath();
}

export function repoCacheFolder(repo: string, opts: Pick<HubOptions, 'cacheDir'> = {}): string {
  return join(hubCacheDir(opts), getRepoFolderName({ name: repo, type: 'model' }));
}

function endpointOf(opts: HubOptions): string {
  return (opts.endpoint ?? process.env.HF_ENDPOINT ?? 'https://huggingface.co').replace(/\/+$/, '');
}

function authHeaders(opts: HubOptions): Record<string, string> {
  const token = opts.token ?? process.env.HF_TOKEN;
  return token ? { authorization: `Bearer ${token}` } : {};
}

/** The snapshot folder a ref (default main) points at, when the cache has it. */
export function cachedSnapshot(repo: string, opts: Pick<HubOptions, 'cacheDir' | 'revision'> = {}): string | undefined {
  const root = repoCacheFolder(repo, opts);
  const ref = join(root, 'refs', opts.revision ?? 'main');
  const commit = existsSync(ref) ? readFileSync(ref, 'utf8').trim() : /^[0-9a-f]{40}$/.test(opts.revision ?? '') ? opts.revision : undefined;
  const dir = commit && join(root, 'snapshots', commit);
  return dir && existsSync(dir) ? dir : undefined;
}

/** Every model repo in the cache with a snapshot for refs/main (sync: the registry scans on refresh). */
export function listCachedRepos(opts: Pick<HubOptions, 'cacheDir'> = {}): Array<{ repo: string; snapshot: string }> {
  const cache = hubCacheDir(opts);
  if (!existsSync(cache)) return [];
  const out: Array<{ repo: string; snapshot: string }> = [];
  for (const dir of readdirSync(cache).sort()) {
    if (!dir.startsWith('models--')) continue;
    const repo = dir.slice('models--'.length).split('--').join('/');
    const snapshot = cachedSnapshot(repo, opts);
    if (snapshot) out.push({ repo, snapshot });
  }
  return out;
}

interface RepoInfo {
  sha?: string;
  siblings?: Array<{ rfilename: string; size?: number; lfs?: { sha256?: string; size?: number } }>;
}

/** The repo's file list (GET /api/models/<repo>[/revision/<rev>]). */
export async function listRepoFiles(repo: string, opts: HubOptions = {}): Promise<string[]> {
  const rev = opts.revision ?? 'main';
  const url = `${endpointOf(opts)}/api/models/${repo}${rev === 'main' ? '' : `/revision/${encodeURIComponent(rev)}`}`;
  const { res } = await fetchFollowing(url, { headers: authHeaders(opts) }, { fetchImpl: opts.fetchImpl });
  if (!res.ok) {
    await res.body?.cancel();
    throw new DownloadError(
      'http',
      `the Hub answered ${res.status} for ${repo}${res.status === 401 || res.status === 404 ? ' (private or gated repos need HF_TOKEN)' : ''}`,
      res.status,
    );
  }
  const info = (await res.json()) as RepoInfo;
  return (info.siblings ?? []).map((s) => s.rfilename);
}

function normaliseEtag(etag: string | null): string | undefined {
  const e = etag?.replace(/^W\//, '').replace(/"/g, '').trim();
  return e && /^[\w.-]+$/.test(e) ? e : undefined;
}

/** Metadata of one file as the Hub's resolve endpoint announces it (the HEAD is not followed to the CDN). */
async function fileMetadata(repo: string, file: string, opts: HubOptions): Promise<{ url: string; commit: string; etag: string; size?: number }> {
  const url = `${endpointOf(opts)}/${repo}/resolve/${encodeURIComponent(opts.revision ?? 'main')}/${file}`;
  const doFetch = opts.fetchImpl ?? fetch;
  let current = url;
  // Relative redirects (a renamed repo) are followed; an absolute one (the CDN) carries the headers already.
  for (let hop = 0; hop < 5; hop++) {
    let res: Response;
    try {
      res = await doFetch(current, { method: 'HEAD', headers: { ...authHeaders(opts), 'accept-encoding': 'identity' }, redirect: 'manual' });
    } catch (e) {
      throw new DownloadError('network', `HEAD ${current}: ${(e as Error).message}`);
    }
    const location = res.headers.get('location');
    if (res.status >= 300 && res.status < 400 && location?.startsWith('/')) {
      current = new URL(location, current).toString();
      continue;
    }
    if (!(res.ok || (res.status >= 300 && res.status < 400))) {
      throw new DownloadError(
        'http',
        `${repo}/${file}: the Hub answered ${res.status}${res.status === 401 || res.status === 403 ? ' (set HF_TOKEN for gated repos)' : ''}`,
        res.status,
      );
    }
    const etag = normaliseEtag(res.headers.get('x-linked-etag') ?? res.headers.get('etag'));
    const sizeHeader = res.headers.get('x-linked-size') ?? res.headers.get('content-length');
    if (!etag) throw new DownloadError('http', `${repo}/${file}: the Hub sent no ETag`);
    return {
      url: current,
      commit: res.headers.get('x-repo-commit') ?? opts.revision ?? 'main',
      etag,
      ...(sizeHeader && /^\d+$/.test(sizeHeader) ? { size: Number(sizeHeader) } : {}),
    };
  }
  throw new DownloadError('redirects', `${repo}/${file}: too many redirects`);
}

function linkInto(blob: string, pointer: string): void {
  mkdirSync(dirname(pointer), { recursive: true });
  rmSync(pointer, { force: true });
  try {
    symlinkSync(relative(dirname(pointer), blob), pointer);
  } catch {
    copyFileSync(blob, pointer); // filesystems without symlinks (as huggingface_hub does)
  }
}

/**
 * One repo file into the HF cache; returns its snapshot path. A blob already present is linked, not fetched;
 * an interrupted blob (`blobs/<etag>.incomplete`) is resumed. LFS files (etag = sha256) are checksummed.
 */
export async function downloadHubFile(repo: string, file: string, opts: HubOptions = {}): Promise<string> {
  const meta = await fileMetadata(repo, file, opts);
  const root = repoCacheFolder(repo, opts);
  const blob = join(root, 'blobs', meta.etag);
  const pointer = join(root, 'snapshots', meta.commit, file);
  if (!(existsSync(blob) && (meta.size === undefined || statSync(blob).size === meta.size))) {
    await downloadFile({
      url: meta.url,
      dest: blob,
      tempPath: `${blob}.incomplete`,
      headers: authHeaders(opts),
      label: `${repo}/${file}`,
      ...(meta.size !== undefined ? { expectedSize: meta.size } : {}),
      ...(/^[0-9a-f]{64}$/.test(meta.etag) ? { expectedSha256: meta.etag } : {}),
      ...(opts.onProgress ? { onProgress: opts.onProgress } : {}),
      ...(opts.fetchImpl ? { fetchImpl: opts.fetchImpl } : {}),
      ...(opts.maxBytes !== undefined ? { maxBytes: opts.maxBytes } : {}),
    });
  }
  linkInto(blob, pointer);
  const rev = opts.revision ?? 'main';
  if (rev !== meta.commit) {
    mkdirSync(join(root, 'refs', dirname(rev)), { recursive: true });
    writeFileSync(join(root, 'refs', rev), meta.commit);
  }
  return pointer;
}

const COMPONENTS = ['unet', 'vae', 'text_encoder', 'text_encoder_2', 'tokenizer', 'tokenizer_2', 'scheduler'];
const TOKENIZER_FILES = new Set(['vocab.json', 'merges.txt', 'special_tokens_map.json', 'tokenizer_config.json']);

/** Which repo files a diffusers pipeline needs: configs, tokenizers, and one safetensors weight file per part. */
export function selectDiffusersFiles(files: string[]): string[] {
  const set = new Set(files);
  const out = files.includes('model_index.json') ? ['model_index.json'] : [];
  for (const comp of COMPONENTS) {
    const inComp = files.filter((f) => f.startsWith(`${comp}/`) && f.split('/').length === 2);
    for (const f of inComp) {
      const base = f.slice(comp.length + 1);
      if (base.endsWith('config.json') || TOKENIZER_FILES.has(base)) out.push(f);
    }
    const weights = [
      `${comp}/diffusion_pytorch_model.safetensors`,
      `${comp}/model.safetensors`,
      `${comp}/diffusion_pytorch_model.fp16.safetensors`,
      `${comp}/model.fp16.safetensors`,
    ];
    const pick = weights.find((w) => set.has(w));
    if (pick) out.push(pick);
  }
  return out;
}

/**
 * A diffusers pipeline repo in the HF cache (files a pipeline needs only); returns the snapshot folder. Already
 * cached (refs/main -> snapshot with model_index.json): no network at all.
 */
export async function ensureDiffusersRepo(repo: string, opts: HubOptions = {}): Promise<string> {
  const cached = cachedSnapshot(repo, opts);
  if (cached && existsSync(join(cached, 'model_index.json'))) return cached;
  const files = selectDiffusersFiles(await listRepoFiles(repo, opts));
  if (!files.includes('model_index.json')) throw new DownloadError('http', `${repo} is not a diffusers pipeline (no model_index.json)`);
  let snapshot = '';
  // model_index.json last: its presence is what marks the snapshot complete.
  for (const f of [...files.filter((f) => f !== 'model_index.json'), 'model_index.json']) {
    const p = await downloadHubFile(repo, f, opts);
    snapshot = p.slice(0, p.length - f.length - 1);
  }
  return snapshot;
}
