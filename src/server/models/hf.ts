// A default model named by Hugging Face repo id: fetched once into the standard HF cache (shared with diffusers,
// ComfyUI, InvokeAI) through the one downloader. Offline (or on a network error) the error says exactly what to
// fetch and where it will be found.
import { DownloadError, type DownloadProgress } from '../../download/fetch-file.ts';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { cachedSnapshot, ensureDiffusersRepo, repoCacheFolder } from '../../download/hf-hub.ts';

export { isHfRepoId, selectDiffusersFiles } from '../../download/hf-hub.ts';

export class ModelDownloadError extends Error {
  constructor(repo: string, target: string, reason: string) {
    super(
      `cannot download Hugging Face model ${repo}: ${reason}\n` +
        `Download it yourself into the Hugging Face cache (${target}), for example: huggingface-cli download ${repo} ` +
        `--include "model_index.json" "*/config.json" "*/scheduler_config.json" "tokenizer*/*" "*/diffusion_pytorch_model.safetensors" "*/model.safetensors", ` +
        `or put a single-file .safetensors checkpoint in the models/checkpoints folder and start with --model <its name>.`,
    );
    this.name = 'ModelDownloadError';
  }
}

export interface DownloadOptions {
  offline?: boolean;
  token?: string;
  endpoint?: string;
  onProgress?: (p: DownloadProgress) => void;
  fetchImpl?: typeof fetch;
}

/** Makes sure the repo's pipeline files are in the HF cache at `hfCacheDir`; returns the snapshot folder. */
export async function ensureHfModel(repo: string, hfCacheDir: string, opts: DownloadOptions = {}): Promise<string> {
  const target = repoCacheFolder(repo, { cacheDir: hfCacheDir });
  const cached = cachedSnapshot(repo, { cacheDir: hfCacheDir });
  if (cached && existsSync(join(cached, 'model_index.json'))) return cached;
  if (opts.offline) throw new ModelDownloadError(repo, target, 'the server is offline (--offline / KILN_OFFLINE)');
  try {
    return await ensureDiffusersRepo(repo, {
      cacheDir: hfCacheDir,
      ...(opts.fetchImpl ? { fetchImpl: opts.fetchImpl } : {}),
      ...(opts.token ? { token: opts.token } : {}),
      ...(opts.endpoint ? { endpoint: opts.endpoint } : {}),
      ...(opts.onProgress ? { onProgress: opts.onProgress } : {}),
    });
  } catch (e) {
    if (e instanceof DownloadError) throw new ModelDownloadError(repo, target, e.message);
    throw e;
  }
}
