// Finds the CLIP BPE files (vocab.json + merges.txt) for single-file checkpoints, which do not contain them:
// first in the Hugging Face cache (where diffusers/transformers users already have them), otherwise by
// downloading them once from huggingface.co into that same cache layout.
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, statSync, symlinkSync, writeFileSync, copyFileSync, rmSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { ModelFileError } from '../api.ts';

/** Which tokenizer a text encoder was trained with (they share CLIP's BPE but differ in padding). */
export type TokenizerRole = 'clip-l' | 'openclip-h' | 'openclip-bigG';

interface HubFolder {
  repo: string;
  subfolder: string;
}

/** Where each role's files live on the Hub; the first entry is downloaded, the others are only looked up. */
export const STANDARD_TOKENIZERS: Record<TokenizerRole, HubFolder[]> = {
  'clip-l': [
    { repo: 'openai/clip-vit-large-patch14', subfolder: '' },
    { repo: 'runwayml/stable-diffusion-v1-5', subfolder: 'tokenizer' },
    { repo: 'stabilityai/stable-diffusion-xl-base-1.0', subfolder: 'tokenizer' },
  ],
  'openclip-h': [
    { repo: 'stabilityai/stable-diffusion-2-1', subfolder: 'tokenizer' },
    { repo: 'stabilityai/stable-diffusion-2-1-base', subfolder: 'tokenizer' },
    { repo: 'stabilityai/stable-diffusion-2', subfolder: 'tokenizer' },
  ],
  'openclip-bigG': [
    { repo: 'laion/CLIP-ViT-bigG-14-laion2B-39B-b160k', subfolder: '' },
    { repo: 'stabilityai/stable-diffusion-xl-base-1.0', subfolder: 'tokenizer_2' },
  ],
};

export const REQUIRED_TOKENIZER_FILES = ['vocab.json', 'merges.txt'];
/** Carry the special tokens (SD2/SDXL-bigG pad with "!"); fetched when the repo has them. */
const OPTIONAL_TOKENIZER_FILES = ['special_tokens_map.json', 'tokenizer_config.json'];

export interface TokenizerLookupOptions {
  /** Hugging Face hub cache folder; default $HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub. */
  hfCacheDir?: string;
  /** false (or env HF_HUB_OFFLINE=1 / KILN_OFFLINE=1) never touches the network. */
  allowDownload?: boolean;
  /** Injected for tests; defaults to the global fetch. */
  fetch?: typeof fetch;
}

export function hfHubCacheDir(): string {
  if (process.env.HF_HUB_CACHE) return process.env.HF_HUB_CACHE;
  if (process.env.HUGGINGFACE_HUB_CACHE) return process.env.HUGGINGFACE_HUB_CACHE;
  return join(process.env.HF_HOME ?? join(homedir(), '.cache', 'huggingface'), 'hub');
}

function repoDir(cache: string, repo: string): string {
  return join(cache, `models--${repo.replace(/\//g, '--')}`);
}

export function hasTokenizerFiles(dir: string): boolean {
  return REQUIRED_TOKENIZER_FILES.every((f) => existsSync(join(dir, f)));
}

/** A cached snapshot folder of `repo`/`subfolder` holding vocab.json and merges.txt, preferring refs/main. */
export function findCachedTokenizer(cache: string, where: HubFolder): string | undefined {
  const root = repoDir(cache, where.repo);
  const snapshots = join(root, 'snapshots');
  if (!existsSync(snapshots)) return undefined;
  const revs: string[] = [];
  const mainRef = join(root, 'refs', 'main');
  if (existsSync(mainRef)) revs.push(readFileSync(mainRef, 'utf8').trim());
  const others = readdirSync(snapshots)
    .map((r) => ({ r, t: statSync(join(snapshots, r)).mtimeMs }))
    .sort((a, b) => b.t - a.t)
    .map((x) => x.r);
  for (const rev of [...revs, ...others]) {
    const dir = join(snapshots, rev, where.subfolder);
    if (hasTokenizerFiles(dir)) return dir;
  }
  return undefined;
}

function hubUrl(where: HubFolder, file: string): string {
  return `https://huggingface.co/${where.repo}/resolve/main/${where.subfolder ? `${where.subfolder}/` : ''}${file}`;
}

function offline(opts: TokenizerLookupOptions): boolean {
  if (opts.allowDownload === false) return true;
  return ['1', 'true', 'yes'].includes((process.env.HF_HUB_OFFLINE ?? process.env.KILN_OFFLINE ?? '').toLowerCase());
}

/**
 * Downloads the tokenizer files into the HF cache layout: blobs/<etag>, snapshots/<commit>/<subfolder>/<file>
 * (a relative symlink to the blob, or a copy where symlinks are not allowed) and refs/main = <commit>.
 */
export async function downloadTokenizer(cache: string, where: HubFolder, fetchImpl: typeof fetch = fetch): Promise<string> {
  const root = repoDir(cache, where.repo);
  let commit: string | undefined;
  for (const file of [...REQUIRED_TOKENIZER_FILES, ...OPTIONAL_TOKENIZER_FILES]) {
    const url = hubUrl(where, file);
    const res = await fetchImpl(url, { redirect: 'follow' });
    if (!res.ok) {
      if (REQUIRED_TOKENIZER_FILES.includes(file)) throw new Error(`GET ${url}: HTTP ${res.status}`);
      continue;
    }
    const body = new Uint8Array(await res.arrayBuffer());
    commit ??= res.headers.get('x-repo-commit') ?? 'main';
    const etag = (res.headers.get('x-linked-etag') ?? res.headers.get('etag') ?? '').replace(/^W\//, '').replace(/"/g, '');
    const blobName = /^[\w.-]+$/.test(etag) && etag ? etag : createHash('sha256').update(body).digest('hex');
    const blob = join(root, 'blobs', blobName);
    mkdirSync(dirname(blob), { recursive: true });
    writeFileSync(`${blob}.incomplete`, body);
    renameSync(`${blob}.incomplete`, blob);
    const target = join(root, 'snapshots', commit, where.subfolder, file);
    mkdirSync(dirname(target), { recursive: true });
    rmSync(target, { force: true });
    try {
      symlinkSync(relative(dirname(target), blob), target);
    } catch {
      copyFileSync(blob, target);
    }
  }
  mkdirSync(join(root, 'refs'), { recursive: true });
  writeFileSync(join(root, 'refs', 'main'), commit ?? 'main');
  return join(root, 'snapshots', commit ?? 'main', where.subfolder);
}

/** The folder with `role`'s vocab.json + merges.txt: from the HF cache, downloading it there if missing. */
export async function standardTokenizerDir(role: TokenizerRole, opts: TokenizerLookupOptions = {}): Promise<string> {
  const cache = opts.hfCacheDir ?? hfHubCacheDir();
  for (const where of STANDARD_TOKENIZERS[role]) {
    const dir = findCachedTokenizer(cache, where);
    if (dir) return dir;
  }
  const primary = STANDARD_TOKENIZERS[role][0]!;
  let reason = 'downloads are disabled (HF_HUB_OFFLINE / KILN_OFFLINE / allowDownload: false)';
  if (!offline(opts)) {
    try {
      return await downloadTokenizer(cache, primary, opts.fetch ?? fetch);
    } catch (e) {
      reason = `download failed: ${(e as Error).message}${(e as Error).cause ? ` (${String((e as Error).cause)})` : ''}`;
    }
  }
  const dest = join(repoDir(cache, primary.repo), 'snapshots', 'main', primary.subfolder);
  throw new ModelFileError(
    dest,
    `the ${role} tokenizer is missing and ${reason}. Download ${REQUIRED_TOKENIZER_FILES.map((f) => hubUrl(primary, f)).join(' and ')} ` +
      `(and special_tokens_map.json, tokenizer_config.json if present) into ${dest}/ , ` +
      `or pass --tokenizer <folder> pointing at a diffusers model folder that has tokenizer/ (and tokenizer_2/ for SDXL).`,
  );
}
