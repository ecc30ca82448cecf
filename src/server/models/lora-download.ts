// Seed 003's admin `POST /add_new_lora?name=`: a LoRA from Civitai (model id, version id, URL, AIR or name),
// refused before any byte is fetched when Civitai's base model is not the requested model's family, downloaded
// with the one downloader (resumable, SHA256 checked, progress in the log) into the LoRA folder as `<name>.<ext>`,
// checked again from its own keys/metadata, and recorded in `lora_list.json` (the seed's format, plus the
// Civitai ids and file hash).
import { existsSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { civitaiBaseModelFamily, parseCivitaiRef } from '../../download/civitai.ts';
import { DownloadError } from '../../download/fetch-file.ts';
import { HttpError } from '../errors.ts';
import { describeCheckpoint } from './family.ts';
import { readLora } from './loras.ts';
import { pull, PullError } from './pull.ts';
import type { ModelRegistry } from './registry.ts';

const LORA_TYPES = new Set(['lora', 'locon', 'lycoris', 'dora']);
/** One name downloads at a time; a second request for it answers 409 instead of racing the first. */
const inFlight = new Set<string>();
const PROGRESS_LOG_MS = 5000;

export interface AddLoraContext {
  models: ModelRegistry;
  modelsDir: string;
  civitaiEndpoint: string;
  log?: { info: (o: object, m: string) => void };
  fetchImpl?: typeof fetch;
}

export interface AddLoraResult {
  name: string;
  entry: Record<string, unknown>;
  path: string;
}

/** A file-system-safe LoRA name: seed 003 names LoRAs like `pixel_art_style`. */
function loraKey(s: string): string {
  return s
    .trim()
    .toLowerCase()
    .replace(/[^\w.-]+/g, '_')
    .replace(/^[._]+|_+$/g, '')
    .slice(0, 100);
}

function readList(file: string): Record<string, unknown> {
  if (!existsSync(file)) return {};
  try {
    const parsed = JSON.parse(readFileSync(file, 'utf8')) as unknown;
    if (parsed && typeof parsed === 'object' && !Array.isArray(parsed)) return parsed as Record<string, unknown>;
  } catch {
    // fall through
  }
  throw new HttpError(409, 'lora_list_unreadable', `${file} is not a JSON object; fix or move it before adding LoRAs`, 'name');
}

/** Written to a temp file and renamed, so a crash never leaves half a list. */
function writeList(file: string, list: Record<string, unknown>): void {
  const tmp = `${file}.tmp`;
  writeFileSync(tmp, `${JSON.stringify(list, null, 2)}\n`);
  renameSync(tmp, file);
}

function usageRights(v: unknown): string | null {
  if (typeof v === 'string') return v;
  if (Array.isArray(v)) return v.filter((x) => typeof x === 'string').join(',');
  return null;
}

export async function addLoraFromCivitai(ctx: AddLoraContext, name: string, modelId: string | undefined): Promise<AddLoraResult> {
  const ref = parseCivitaiRef(name);
  if (!ref) throw new HttpError(422, 'invalid_request', 'name: give a Civitai model id, version URL, AIR or LoRA name', 'name');
  // The family the LoRA must fit: the requested model's (seed 003 model_id), else the server's default.
  let checkpoint: Awaited<ReturnType<ModelRegistry['resolve']>>;
  try {
    checkpoint = await ctx.models.resolve(modelId);
  } catch (e) {
    throw new HttpError(400, 'invalid_request', (e as Error).message, 'model_id');
  }
  const modelName = modelId ?? ctx.models.default?.name ?? 'the default model';
  const family = (await describeCheckpoint(checkpoint.path)).family;
  const lockKey = name.toLowerCase();
  if (inFlight.has(lockKey)) throw new HttpError(409, 'in_progress', `name: "${name}" is already being downloaded`, 'name');
  inFlight.add(lockKey);
  let downloaded: string | undefined;
  try {
    const listFile = join(ctx.modelsDir, 'lora_list.json');
    const list = readList(listFile);
    let lastLog = 0;
    let key = ref.query !== undefined ? loraKey(ref.query) : '';
    const [got] = await pull(name.startsWith('civitai:') || /^https?:/.test(name) || /^\d/.test(name) ? name : `civitai:${name}`, {
      folderFor: (kind) => ctx.models.folderFor(kind),
      kind: 'lora',
      civitaiEndpoint: ctx.civitaiEndpoint,
      ...(ctx.fetchImpl ? { fetchImpl: ctx.fetchImpl } : {}),
      maxBytes: 4 * 1024 ** 3,
      checkCivitai: (resolved) => {
        const type = resolved.model.type ?? resolved.version.model?.type;
        if (type && !LORA_TYPES.has(type.toLowerCase()))
          throw new HttpError(400, 'invalid_request', `name: Civitai model ${resolved.model.id} ("${resolved.model.name}") is a ${type}, not a LoRA`, 'name');
        const base = resolved.version.baseModel;
        const loraFamily = civitaiBaseModelFamily(base);
        if (family && loraFamily !== family) {
          throw new HttpError(
            400,
            'family_mismatch',
            `name: Civitai LoRA "${resolved.model.name}" is for ${base ?? 'an unknown base model'}${loraFamily ? ` (${loraFamily})` : ''}, but ${modelName} is ${family}; choose a ${family} LoRA or pass model_id of a ${loraFamily ?? 'matching'} model`,
            'name',
          );
        }
        key ||= loraKey(resolved.model.name);
        if (!key) throw new HttpError(400, 'invalid_request', `name: Civitai model ${resolved.model.id} has no usable name`, 'name');
        const existing = list[key] as { model_id?: unknown } | undefined;
        if (existing && existing.model_id !== resolved.model.id)
          throw new HttpError(409, 'exists', `name: a LoRA "${key}" is already listed (Civitai model ${String(existing.model_id)}); remove it first`, 'name');
        ctx.log?.info({ lora: key, civitaiModel: resolved.model.id, version: resolved.version.id, baseModel: base }, 'downloading LoRA from Civitai');
        return key;
      },
      onProgress: (p) => {
        const done = p.total !== undefined && p.received === p.total;
        if (!done && Date.now() - lastLog < PROGRESS_LOG_MS) return;
        lastLog = Date.now();
        ctx.log?.info(
          {
            lora: key,
            received: p.received,
            total: p.total,
            bytesPerSecond: Math.round(p.bytesPerSecond),
            etaSeconds: p.etaSeconds && Math.round(p.etaSeconds),
          },
          done ? 'LoRA download complete' : 'LoRA download progress',
        );
      },
    });
    if (!got?.civitai) throw new HttpError(500, 'internal', 'the Civitai download returned no file');
    downloaded = got.path;
    // The file itself must be a LoRA for the same family (its keys and metadata, not only Civitai's label).
    const summary = readLora(got.path, key, 'name');
    if (family && summary.family && summary.family !== family)
      throw new HttpError(400, 'family_mismatch', `name: the downloaded LoRA "${key}" is a ${summary.family} LoRA, but ${modelName} is ${family}`, 'name');
    const { model, version, file } = got.civitai;
    const entry = {
      model_id: model.id,
      base_model: modelName,
      lora_path: file.downloadUrl ?? version.downloadUrl ?? null,
      'trigger words': version.trainedWords ?? [],
      allow_no_mention: model.allowNoCredit ?? null,
      usage_rights: usageRights(model.allowCommercialUse),
      civitai_version_id: version.id,
      civitai_base_model: version.baseModel ?? null,
      file: got.path,
      sha256: got.sha256 ?? null,
    };
    writeList(listFile, { ...list, [key]: entry });
    ctx.models.refresh();
    downloaded = undefined;
    return { name: key, entry, path: got.path };
  } catch (e) {
    if (e instanceof HttpError) throw e;
    if (e instanceof PullError) throw new HttpError(422, 'invalid_request', `name: ${e.message}`, 'name');
    if (e instanceof DownloadError) {
      // Civitai's answer about the name is the caller's to fix (404); a failing hub or transfer is upstream's (502).
      if (e.status === 404) throw new HttpError(404, 'not_found', `name: ${e.message}`, 'name');
      throw new HttpError(502, 'upstream', `Civitai download failed: ${e.message}`, 'name');
    }
    throw e;
  } finally {
    inFlight.delete(lockKey);
    if (downloaded) rmSync(downloaded, { force: true });
  }
}
