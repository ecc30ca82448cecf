// Finds the CLIP BPE files (vocab.json + merges.txt) for single-file checkpoints, which do not contain them, in the
// Hugging Face cache (where diffusers/transformers users already have them). The engine never downloads: the server
// and the CLI fetch missing ones into that cache with the one downloader (src/download) before a job needs them
// (server/models/tokenizers.ts), asking the engine which are missing (missingTokenizers in model.ts).
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { ModelFileError } from '../api.ts';

/** Which tokenizer a text encoder was trained with (they share CLIP's BPE but differ in padding). */
export type TokenizerRole = 'clip-l' | 'openclip-h' | 'openclip-bigG';

export interface HubFolder {
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
export const OPTIONAL_TOKENIZER_FILES = ['special_tokens_map.json', 'tokenizer_config.json'];

export interface TokenizerLookupOptions {
  /** Hugging Face hub cache folder; default $HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub. */
  hfCacheDir?: string;
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

/** The role's tokenizer folder in the cache, if any of its known places has it. */
export function cachedTokenizer(role: TokenizerRole, cache: string): string | undefined {
  for (const where of STANDARD_TOKENIZERS[role]) {
    const dir = findCachedTokenizer(cache, where);
    if (dir) return dir;
  }
  return undefined;
}

/** The folder with `role`'s vocab.json + merges.txt from the HF cache; a ModelFileError saying what to fetch otherwise. */
export async function standardTokenizerDir(role: TokenizerRole, opts: TokenizerLookupOptions = {}): Promise<string> {
  const cache = opts.hfCacheDir ?? hfHubCacheDir();
  const dir = cachedTokenizer(role, cache);
  if (dir) return dir;
  const primary = STANDARD_TOKENIZERS[role][0]!;
  throw new ModelFileError(
    join(repoDir(cache, primary.repo), 'snapshots', 'main', primary.subfolder),
    missingTokenizerMessage(
      role,
      cache,
      'downloads are disabled here (the engine only reads the Hugging Face cache; kiln serve and kiln generate fetch it there first unless offline)',
    ),
  );
}

/** What to do about a missing tokenizer: the files to download, where to, or --tokenizer. */
export function missingTokenizerMessage(role: TokenizerRole, cache: string, reason: string): string {
  const primary = STANDARD_TOKENIZERS[role][0]!;
  const dest = join(repoDir(cache, primary.repo), 'snapshots', 'main', primary.subfolder);
  return (
    `the ${role} tokenizer is missing and ${reason}. Download ${REQUIRED_TOKENIZER_FILES.map((f) => hubUrl(primary, f)).join(' and ')} ` +
    `(and special_tokens_map.json, tokenizer_config.json if present) into ${dest}/ , ` +
    `or pass --tokenizer <folder> pointing at a diffusers model folder that has tokenizer/ (and tokenizer_2/ for SDXL).`
  );
}
