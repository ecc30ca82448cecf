// LoRA names -> files, and the checks a LoRA request gets before it is queued (so a bad one answers 4xx, not a
// failed job): the name is known (else close matches are listed), the file is a readable LoRA (else its name
// and what is wrong), and it was made for the checkpoint's family (else both families are named).
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { inspectLora, type LoraSummary } from '../../engine/index.ts';
import { SpecError, type JobSpec } from '../../queue/job-spec.ts';
import type { ModelEntry, ModelRegistry } from './registry.ts';
import { editDistance } from '../edit-distance.ts';

/** Up to five known names closest to `name` (substring matches first). */
export function closeMatches(name: string, known: string[]): string[] {
  const lower = name.toLowerCase();
  return known
    .map((k) => ({ k, d: k.toLowerCase().includes(lower) || lower.includes(k.toLowerCase()) ? 0 : editDistance(lower, k.toLowerCase()) }))
    .filter((x) => x.d <= Math.max(2, Math.floor(lower.length / 2)))
    .sort((a, b) => a.d - b.d || a.k.localeCompare(b.k))
    .slice(0, 5)
    .map((x) => x.k);
}

export function findLora(models: ModelRegistry, name: string): ModelEntry | undefined {
  const loras = models.list('lora');
  const lower = name.toLowerCase();
  return loras.find((e) => e.name === name) ?? loras.find((e) => e.name.toLowerCase() === lower);
}

/** LoRA name -> file path; SpecError naming the field and close matches when unknown. */
export function resolveLora(models: ModelRegistry, name: string, field = 'loras'): string {
  const entry = findLora(models, name);
  if (entry) return entry.path;
  const known = models.list('lora').map((e) => e.name);
  const close = closeMatches(name, known);
  throw new SpecError(
    field,
    `unknown LoRA "${name}"; ${close.length ? `did you mean ${close.map((c) => `"${c}"`).join(', ')}? ` : ''}${known.length ? `${known.length} LoRA(s) available (GET /v1/models?kind=lora)` : 'no LoRAs are installed (put .safetensors or .pt files in models/loras/)'}`,
  );
}

/** The file's summary, or SpecError naming the file and what is wrong with it. */
export function readLora(path: string, name: string, field = 'loras'): LoraSummary {
  try {
    return inspectLora(path);
  } catch (e) {
    throw new SpecError(field, `LoRA "${name}" cannot be used: ${(e as Error).message}`);
  }
}

/**
 * Every LoRA of a spec: known, readable, and for the checkpoint's family (`modelFamily`, when known).
 * Throws SpecError naming the request field.
 */
export function checkSpecLoras(spec: JobSpec, models: ModelRegistry, modelFamily: string | null | undefined): void {
  const field = spec.sourceFields?.loras ?? 'loras';
  for (const l of spec.loras ?? []) {
    const summary = readLora(resolveLora(models, l.name, field), l.name, field);
    if (modelFamily && summary.family && summary.family !== modelFamily) {
      throw new SpecError(
        field,
        `LoRA "${l.name}" was made for ${summary.family} models, but the model is ${modelFamily}; choose a ${modelFamily} LoRA or a ${summary.family} checkpoint`,
      );
    }
  }
}

/** One entry of seed 003's `lora_list.json` (its own format: trigger words, base model, usage rights). */
export interface LoraListEntry {
  model_id: number | string | null;
  base_model: string | null;
  lora_path: string | null;
  'trigger words': string[];
  allow_no_mention: boolean | null;
  usage_rights: string | null;
}

const MAX_LORA_LIST_BYTES = 4 << 20;

/**
 * `<modelsDir>/lora_list.json` merged with the files in models/loras/ (a file without an entry gets nulls).
 * A missing, oversized or malformed list reads as empty: the listing must not fail on a hand-edited file.
 */
export function loraList(models: ModelRegistry, modelsDir: string): Record<string, LoraListEntry> {
  const out: Record<string, LoraListEntry> = {};
  const file = join(modelsDir, 'lora_list.json');
  try {
    if (existsSync(file) && statSync(file).size <= MAX_LORA_LIST_BYTES) {
      const parsed = JSON.parse(readFileSync(file, 'utf8')) as unknown;
      if (parsed && typeof parsed === 'object' && !Array.isArray(parsed)) {
        for (const [name, v] of Object.entries(parsed as Record<string, Record<string, unknown>>)) {
          if (!v || typeof v !== 'object') continue;
          const words = v['trigger words'];
          out[name] = {
            model_id: (v.model_id as number | string | undefined) ?? null,
            base_model: typeof v.base_model === 'string' ? v.base_model : null,
            lora_path: typeof v.lora_path === 'string' ? v.lora_path : null,
            'trigger words': Array.isArray(words) ? words.filter((w): w is string => typeof w === 'string') : [],
            allow_no_mention: typeof v.allow_no_mention === 'boolean' ? v.allow_no_mention : null,
            usage_rights: typeof v.usage_rights === 'string' ? v.usage_rights : null,
          };
        }
      }
    }
  } catch {
    // Unreadable list: the folder's files are still listed.
  }
  for (const l of models.list('lora')) {
    out[l.name] ??= { model_id: null, base_model: null, lora_path: l.path, 'trigger words': [], allow_no_mention: null, usage_rights: null };
  }
  return out;
}

/** A LoRA file's metadata for listings; {} when it cannot be read. */
export function loraMetadata(path: string): Record<string, string> {
  try {
    return inspectLora(path).metadata;
  } catch {
    return {};
  }
}
