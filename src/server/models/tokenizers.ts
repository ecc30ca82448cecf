// Single-file checkpoints carry no tokenizer: the CLIP BPE files come from the standard Hugging Face cache (shared
// with diffusers and transformers users). The engine only reads that cache; this fetches what a model still lacks
// there, with the one downloader (src/download), before the engine loads the model (jobs, warm-up, kiln generate).
import { join } from 'node:path';
import { DownloadError } from '../../download/fetch-file.ts';
import { downloadHubFile, repoCacheFolder } from '../../download/hf-hub.ts';
import {
  cachedTokenizer,
  missingTokenizerMessage,
  missingTokenizers,
  ModelFileError,
  OPTIONAL_TOKENIZER_FILES,
  REQUIRED_TOKENIZER_FILES,
  STANDARD_TOKENIZERS,
  type ModelRef,
  type TokenizerRole,
} from '../../engine/index.ts';

export interface TokenizerFetchOptions {
  hfCacheDir: string;
  /** The Hub (a mirror, or a test's local server); default $HF_ENDPOINT or huggingface.co. */
  endpoint?: string;
  /** Never download: the engine's error then says what to put where. */
  offline?: boolean;
  fetchImpl?: typeof fetch;
}

/** Fetches the tokenizers `ref` needs that the cache lacks (nothing for folders that bring their own, or --tokenizer). */
export async function ensureTokenizers(ref: ModelRef, opts: TokenizerFetchOptions): Promise<void> {
  if (opts.offline) return;
  let missing: ReturnType<typeof missingTokenizers>;
  try {
    missing = missingTokenizers(ref, { hfCacheDir: opts.hfCacheDir });
  } catch {
    return; // a model the engine cannot read: its load says why (and another engine may read it after all)
  }
  for (const { role } of missing) await fetchTokenizer(role, opts);
}

/** Fetches one role's tokenizer into the cache unless it is there (image understanding's CLIP-L fallback uses it). */
export async function ensureTokenizerRole(role: TokenizerRole, opts: TokenizerFetchOptions): Promise<void> {
  if (opts.offline || cachedTokenizer(role, opts.hfCacheDir)) return;
  await fetchTokenizer(role, opts);
}

async function fetchTokenizer(role: TokenizerRole, opts: TokenizerFetchOptions): Promise<void> {
  const { repo, subfolder } = STANDARD_TOKENIZERS[role][0]!;
  const hub = { cacheDir: opts.hfCacheDir, ...(opts.endpoint ? { endpoint: opts.endpoint } : {}), ...(opts.fetchImpl ? { fetchImpl: opts.fetchImpl } : {}) };
  const path = (file: string) => (subfolder ? `${subfolder}/${file}` : file);
  try {
    for (const file of REQUIRED_TOKENIZER_FILES) await downloadHubFile(repo, path(file), hub);
    for (const file of OPTIONAL_TOKENIZER_FILES) {
      try {
        await downloadHubFile(repo, path(file), hub);
      } catch (e) {
        if (!(e instanceof DownloadError && e.status === 404)) throw e; // not every repo has them
      }
    }
  } catch (e) {
    // The transfer's own reason first ("getaddrinfo ENOTFOUND ..."), without the request line in front of it.
    const reason = (e as Error).message.replace(/^(HEAD|GET) \S+: /, '');
    throw new ModelFileError(
      join(repoCacheFolder(repo, { cacheDir: opts.hfCacheDir }), 'snapshots', 'main', subfolder),
      missingTokenizerMessage(role, opts.hfCacheDir, `download failed: ${reason}`),
    );
  }
}
