// Downloading a diffusers model from the Hugging Face Hub, once, into <cacheDir>/huggingface/<owner>--<name>.
// Offline (or on a network error) the error says exactly which files to fetch and where to put them.
import { createWriteStream, existsSync, mkdirSync, renameSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';

export function isHfRepoId(s: string): boolean {
  return /^[A-Za-z0-9][\w.-]*\/[\w.-]+$/.test(s) && !s.includes('..');
}

export function hfCachePath(cacheDir: string, repo: string): string {
  return join(cacheDir, 'huggingface', repo.replace('/', '--'));
}

const COMPONENTS = ['unet', 'vae', 'text_encoder', 'text_encoder_2', 'tokenizer', 'tokenizer_2', 'scheduler'];
const TOKENIZER_FILES = new Set(['vocab.json', 'merges.txt', 'special_tokens_map.json', 'tokenizer_config.json']);

/** Which repo files a diffusers pipeline needs: configs, tokenizers, and fp32 safetensors weights. */
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

export class ModelDownloadError extends Error {
  constructor(repo: string, target: string, reason: string) {
    super(
      `cannot download Hugging Face model ${repo}: ${reason}\n` +
        `Download it yourself (for example: huggingface-cli download ${repo} --local-dir "${target}" ` +
        `--include "model_index.json" "*/config.json" "*/scheduler_config.json" "tokenizer*/*" "*/diffusion_pytorch_model.safetensors" "*/model.safetensors"), ` +
        `or put a single-file .safetensors checkpoint in the models/checkpoints folder and start with --model <its name>.`,
    );
    this.name = 'ModelDownloadError';
  }
}

function progressBar(label: string, done: number, total: number): string {
  const width = 30;
  const frac = total > 0 ? done / total : 0;
  const filled = Math.round(frac * width);
  const mb = (n: number) => (n / 1e6).toFixed(1);
  return `\r${label} [${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${mb(done)}/${total > 0 ? mb(total) : '?'} MB`;
}

export interface DownloadOptions {
  offline?: boolean;
  token?: string;
  endpoint?: string;
  /** Where progress goes (stderr by default); nothing is printed when it is not a TTY, except one line per file. */
  out?: NodeJS.WriteStream;
  fetchImpl?: typeof fetch;
}

/** Makes sure the repo is in the cache; returns its folder. */
export async function ensureHfModel(repo: string, cacheDir: string, opts: DownloadOptions = {}): Promise<string> {
  const target = hfCachePath(cacheDir, repo);
  if (existsSync(join(target, 'model_index.json'))) return target;
  if (opts.offline) throw new ModelDownloadError(repo, target, 'the server is offline (--offline / KILN_OFFLINE)');
  const endpoint = opts.endpoint ?? process.env.HF_ENDPOINT ?? 'https://huggingface.co';
  const token = opts.token ?? process.env.HF_TOKEN;
  const headers: Record<string, string> = token ? { authorization: `Bearer ${token}` } : {};
  const doFetch = opts.fetchImpl ?? fetch;
  const out = opts.out ?? process.stderr;
  let files: string[];
  try {
    const res = await doFetch(`${endpoint}/api/models/${repo}`, { headers });
    if (!res.ok) throw new Error(`the Hub answered ${res.status} for ${repo}`);
    const info = (await res.json()) as { siblings?: Array<{ rfilename: string }> };
    files = selectDiffusersFiles((info.siblings ?? []).map((s) => s.rfilename));
  } catch (e) {
    throw new ModelDownloadError(repo, target, (e as Error).message);
  }
  if (!files.includes('model_index.json')) throw new ModelDownloadError(repo, target, 'it is not a diffusers pipeline (no model_index.json)');
  const partial = `${target}.partial`;
  try {
    for (const file of files) {
      const dest = join(partial, file);
      if (existsSync(dest)) continue;
      mkdirSync(dirname(dest), { recursive: true });
      const res = await doFetch(`${endpoint}/${repo}/resolve/main/${file}`, { headers });
      if (!res.ok || !res.body) throw new Error(`${file}: HTTP ${res.status}`);
      const total = Number(res.headers.get('content-length') ?? 0);
      let done = 0;
      let lastDraw = 0;
      const body = Readable.fromWeb(res.body as import('node:stream/web').ReadableStream);
      body.on('data', (chunk: Buffer) => {
        done += chunk.length;
        if (out.isTTY && Date.now() - lastDraw > 200) {
          lastDraw = Date.now();
          out.write(progressBar(file, done, total));
        }
      });
      await pipeline(body, createWriteStream(`${dest}.tmp`));
      renameSync(`${dest}.tmp`, dest);
      out.write(out.isTTY ? `${progressBar(file, done, total)}\n` : `downloaded ${repo}/${file} (${(done / 1e6).toFixed(1)} MB)\n`);
    }
    renameSync(partial, target);
  } catch (e) {
    if (e instanceof ModelDownloadError) throw e;
    throw new ModelDownloadError(repo, target, (e as Error).message);
  }
  return target;
}

/** Removes a half-finished download (kept otherwise, so a retry resumes file by file). */
export function discardPartial(cacheDir: string, repo: string): void {
  rmSync(`${hfCachePath(cacheDir, repo)}.partial`, { recursive: true, force: true });
}
