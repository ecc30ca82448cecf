// Civitai models by model id, version id, URL or AIR, through Civitai's public REST API:
//   GET /api/v1/models/:modelId           {id, name, type, allowNoCredit, allowCommercialUse, modelVersions: [...]}
//   GET /api/v1/model-versions/:versionId  {id, modelId, name, baseModel, trainedWords, files: [...], model: {name, type}}
//   GET /api/v1/models?query=&types=LORA   {items: [...]} (by name)
//   files[i]: {name, sizeKB, type, primary, hashes: {SHA256}, downloadUrl, metadata: {format}}
// The download URL (/api/download/models/:versionId) redirects to signed storage; the key (CIVIT_KEY) goes as a
// Bearer header to civitai only. Files are checked against hashes.SHA256.
import { join } from 'node:path';
import { DownloadError, downloadFile, fetchFollowing, type DownloadedFile, type DownloadProgress } from './fetch-file.ts';

export interface CivitaiOptions {
  /** Default $CIVITAI_ENDPOINT, else https://civitai.com. */
  endpoint?: string;
  /** Default $CIVIT_KEY (seed 003's name), else $CIVITAI_API_KEY / $CIVITAI_TOKEN. */
  key?: string;
  onProgress?: (p: DownloadProgress) => void;
  fetchImpl?: typeof fetch;
  maxBytes?: number;
}

export interface CivitaiRef {
  modelId?: number;
  versionId?: number;
  /** A name to search for (seed 003's `add_new_lora?name=pixel_art_style`). */
  query?: string;
}

export interface CivitaiFile {
  name: string;
  sizeKB?: number;
  type?: string;
  primary?: boolean;
  hashes?: Record<string, string>;
  downloadUrl?: string;
  metadata?: { format?: string };
}

export interface CivitaiVersion {
  id: number;
  modelId?: number;
  name?: string;
  baseModel?: string;
  trainedWords?: string[];
  files?: CivitaiFile[];
  downloadUrl?: string;
  model?: { name?: string; type?: string };
}

export interface CivitaiModel {
  id: number;
  name: string;
  type?: string;
  allowNoCredit?: boolean;
  allowCommercialUse?: string | string[];
  modelVersions?: CivitaiVersion[];
}

/** What a download resolved to: the model, the version and the file picked. */
export interface CivitaiResolved {
  model: CivitaiModel;
  version: CivitaiVersion;
  file: CivitaiFile;
}

const ID = /^\d{1,12}$/;

/**
 * `123` (model id), `123@456`, `civitai:123[@456]`, an AIR `urn:air:sdxl:lora:civitai:123@456`, a page URL
 * `https://civitai.com/models/123/slug?modelVersionId=456`, a download URL `/api/download/models/456`;
 * anything else that looks like a name is a search. Undefined for strings that are none of these.
 */
export function parseCivitaiRef(input: string): CivitaiRef | undefined {
  const s = input.trim();
  const pair = /^(?:civitai:|urn:air:[\w.-]+:[\w.-]+:civitai:)?(\d{1,12})(?:@(\d{1,12}))?$/.exec(s);
  if (pair) return { modelId: Number(pair[1]), ...(pair[2] ? { versionId: Number(pair[2]) } : {}) };
  const named = /^civitai:(.+)$/.exec(s);
  if (named) return parseCivitaiRef(named[1]!);
  if (/^https?:\/\//.test(s)) {
    let url: URL;
    try {
      url = new URL(s);
    } catch {
      return undefined;
    }
    if (!/(^|\.)civitai\.(com|green)$/.test(url.hostname) && !process.env.CIVITAI_ENDPOINT?.startsWith(url.origin)) return undefined;
    const download = /\/api\/download\/models\/(\d{1,12})/.exec(url.pathname);
    if (download) return { versionId: Number(download[1]) };
    const version = url.searchParams.get('modelVersionId');
    const model = /\/models\/(\d{1,12})/.exec(url.pathname);
    if (model || (version && ID.test(version)))
      return { ...(model ? { modelId: Number(model[1]) } : {}), ...(version && ID.test(version) ? { versionId: Number(version) } : {}) };
    return undefined;
  }
  return /^[\w .()'+-]{1,100}$/.test(s) ? { query: s } : undefined;
}

function endpointOf(opts: CivitaiOptions): string {
  return (opts.endpoint ?? process.env.CIVITAI_ENDPOINT ?? 'https://civitai.com').replace(/\/+$/, '');
}

function authHeaders(opts: CivitaiOptions): Record<string, string> {
  const key = opts.key ?? process.env.CIVIT_KEY ?? process.env.CIVITAI_API_KEY ?? process.env.CIVITAI_TOKEN;
  return key ? { authorization: `Bearer ${key}` } : {};
}

async function getJson<T>(path: string, opts: CivitaiOptions): Promise<T> {
  const url = `${endpointOf(opts)}${path}`;
  const { res } = await fetchFollowing(url, { headers: { ...authHeaders(opts), accept: 'application/json' } }, { fetchImpl: opts.fetchImpl });
  if (!res.ok) {
    await res.body?.cancel();
    const why = res.status === 404 ? 'not found' : res.status === 401 || res.status === 403 ? 'not allowed (set CIVIT_KEY)' : `HTTP ${res.status}`;
    throw new DownloadError('http', `Civitai ${path}: ${why}`, res.status);
  }
  return (await res.json()) as T;
}

/** The primary model file of a version (safetensors preferred over pickles). */
function pickFile(version: CivitaiVersion): CivitaiFile {
  const files = (version.files ?? []).filter((f) => (f.type ?? 'Model') === 'Model');
  const file =
    files.find((f) => f.primary && /\.safetensors$/i.test(f.name)) ??
    files.find((f) => /\.safetensors$/i.test(f.name)) ??
    files.find((f) => f.primary) ??
    files[0];
  if (!file) throw new DownloadError('http', `Civitai version ${version.id} lists no model file`);
  return file;
}

/** Model, version (the given one, else the newest) and file for a reference. */
export async function resolveCivitai(ref: CivitaiRef, opts: CivitaiOptions & { types?: string[] } = {}): Promise<CivitaiResolved> {
  let modelId = ref.modelId;
  if (ref.query !== undefined) {
    const types = (opts.types ?? []).map((t) => `&types=${encodeURIComponent(t)}`).join('');
    const found = await getJson<{ items?: CivitaiModel[] }>(`/api/v1/models?query=${encodeURIComponent(ref.query)}${types}&limit=20`, opts);
    const wanted = ref.query.toLowerCase().replace(/[\s_-]+/g, ' ');
    const items = found.items ?? [];
    const hit = items.find((m) => m.name.toLowerCase().replace(/[\s_-]+/g, ' ') === wanted) ?? (items.length === 1 ? items[0] : undefined);
    if (!hit) {
      const names = items.slice(0, 5).map((m) => `"${m.name}" (${m.id})`);
      throw new DownloadError('http', `no Civitai model is named "${ref.query}"${names.length ? `; close: ${names.join(', ')} — pass the id` : ''}`, 404);
    }
    modelId = hit.id;
  }
  let version: CivitaiVersion | undefined;
  if (ref.versionId !== undefined) {
    version = await getJson<CivitaiVersion>(`/api/v1/model-versions/${ref.versionId}`, opts);
    modelId ??= version.modelId;
  }
  if (modelId === undefined) throw new DownloadError('http', 'a Civitai reference needs a model or version id');
  const model = await getJson<CivitaiModel>(`/api/v1/models/${modelId}`, opts);
  version ??= model.modelVersions?.[0];
  if (!version) throw new DownloadError('http', `Civitai model ${modelId} has no versions`);
  return { model, version, file: pickFile(version) };
}

/** Only a plain file name from the API is used on disk. */
export function safeFileName(name: string): string {
  const base = name.split(/[\\/]/).pop() ?? '';
  const clean = base.replace(/[^\w.()+-]+/g, '_').replace(/^\.+/, '');
  if (!clean) throw new DownloadError('http', `unusable file name "${name}"`);
  return clean.slice(0, 200);
}

/** Downloads the resolved file into `dir` (as `fileName`, default the API's name); sha256 checked when published. */
export async function downloadCivitaiFile(resolved: CivitaiResolved, dir: string, opts: CivitaiOptions & { fileName?: string } = {}): Promise<DownloadedFile> {
  const url = resolved.file.downloadUrl ?? resolved.version.downloadUrl ?? `${endpointOf(opts)}/api/download/models/${resolved.version.id}`;
  const sha = resolved.file.hashes?.SHA256 ?? resolved.file.hashes?.sha256;
  return downloadFile({
    url,
    dest: join(dir, safeFileName(opts.fileName ?? resolved.file.name)),
    headers: authHeaders(opts),
    label: `civitai ${resolved.model.name} (${resolved.version.name ?? resolved.version.id})`,
    ...(sha ? { expectedSha256: sha } : {}),
    ...(opts.onProgress ? { onProgress: opts.onProgress } : {}),
    ...(opts.fetchImpl ? { fetchImpl: opts.fetchImpl } : {}),
    ...(opts.maxBytes !== undefined ? { maxBytes: opts.maxBytes } : {}),
  });
}

/** Civitai base-model names -> Kiln family ids (undefined: a family Kiln does not run or does not know). */
const BASE_MODEL_FAMILIES: Array<[RegExp, string]> = [
  [/^SD 1\.[45]\b/i, 'sd1'],
  [/^SD 2\.[01]\b/i, 'sd2'],
  [/^(SDXL\b(?! Refiner)|Pony\b|Illustrious\b|NoobAI\b)/i, 'sdxl'],
  [/^Flux\.1/i, 'flux'],
  [/^SD 3(\.5)?\b/i, 'sd3'],
];

export function civitaiBaseModelFamily(baseModel: string | undefined): string | undefined {
  if (!baseModel) return undefined;
  return BASE_MODEL_FAMILIES.find(([re]) => re.test(baseModel.trim()))?.[1];
}
