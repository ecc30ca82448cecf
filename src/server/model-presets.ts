// Per-model presets (config file `modelPresets`): default sampler, schedule, steps, CFG, size, clip skip and step reuse for a
// model name or label (Lightning/Turbo/LCM models want 4-8 steps at CFG 1-2). A preset fills only what the request
// left out: each surface says which spec fields it filled with its own defaults (JobSpec.leftOut), from the request
// fields the client really sent (recorded before schema defaults are applied), and services.submit applies the
// model's preset to those, in one place for every surface.
import type { FastifyRequest } from 'fastify';
import type { Limits } from '../queue/config.ts';
import { findOption, type NamedOption } from '../queue/engine.ts';
import type { JobSpec, PresetField } from '../queue/job-spec.ts';
import { editDistance } from './edit-distance.ts';
import { MAX_DEEP_CACHE_INTERVAL } from '../engine/index.ts';

export interface ModelPreset {
  sampler?: string;
  schedule?: string;
  steps?: number;
  cfgScale?: number;
  width?: number;
  height?: number;
  clipSkip?: number;
  /**
   * Step reuse for requests that do not set `deep_cache` (on every surface; UNet models only). Not a PresetField:
   * only the native surface can send it, so "left out" is simply "absent from the spec" (services.ts applies it).
   */
  deepCache?: { interval: number; branch?: number };
}

/** Keys a preset may hold in the config file; `size` ("WxH") is shorthand for width and height. */
const PRESET_KEYS = ['sampler', 'schedule', 'steps', 'cfgScale', 'width', 'height', 'size', 'clipSkip', 'deepCache'] as const;

/** A bad `modelPresets` entry; its message names the config key, as ConfigError's do. */
export class ModelPresetError extends Error {
  constructor(
    readonly key: string,
    readonly detail: string,
  ) {
    super(`${key} (config file): ${detail}`);
    this.name = 'ConfigError';
  }
}

function side(key: string, v: unknown, max: number): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 64 || v > max || v % 8 !== 0)
    throw new ModelPresetError(key, `must be a multiple of 8 from 64 to ${max}, got ${JSON.stringify(v)}`);
  return v;
}

/** The config file's `modelPresets` object -> presets by model name/label; throws ModelPresetError naming the key. */
export function parseModelPresets(raw: unknown, limits: Limits): Record<string, ModelPreset> {
  if (raw === undefined) return {};
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw))
    throw new ModelPresetError('modelPresets', 'must map model names or labels to presets, e.g. {"sdxl-lightning": {"steps": 6, "cfgScale": 1.5}}');
  const out: Record<string, ModelPreset> = {};
  for (const [label, value] of Object.entries(raw as Record<string, unknown>)) {
    const at = `modelPresets.${label}`;
    if (value === null || typeof value !== 'object' || Array.isArray(value)) throw new ModelPresetError(at, `must be an object of ${PRESET_KEYS.join(', ')}`);
    const preset: ModelPreset = {};
    for (const [key, v] of Object.entries(value as Record<string, unknown>)) {
      const k = `${at}.${key}`;
      switch (key) {
        case 'sampler':
        case 'schedule':
          if (typeof v !== 'string' || v.trim() === '') throw new ModelPresetError(k, `must be a ${key} name, got ${JSON.stringify(v)}`);
          preset[key] = v;
          break;
        case 'steps':
          if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > limits.maxSteps)
            throw new ModelPresetError(k, `must be an integer from 1 to ${limits.maxSteps}, got ${JSON.stringify(v)}`);
          preset.steps = v;
          break;
        case 'cfgScale':
          if (typeof v !== 'number' || !(v >= 0 && v <= 30)) throw new ModelPresetError(k, `must be a number from 0 to 30, got ${JSON.stringify(v)}`);
          preset.cfgScale = v;
          break;
        case 'clipSkip':
          if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > 12)
            throw new ModelPresetError(k, `must be an integer from 1 to 12, got ${JSON.stringify(v)}`);
          preset.clipSkip = v;
          break;
        case 'deepCache': {
          const dc = v as { interval?: unknown; branch?: unknown } | null;
          const interval = dc?.interval;
          const branch = dc?.branch;
          if (
            dc === null ||
            typeof dc !== 'object' ||
            Object.keys(dc).some((x) => x !== 'interval' && x !== 'branch') ||
            typeof interval !== 'number' ||
            !Number.isInteger(interval) ||
            interval < 1 ||
            interval > MAX_DEEP_CACHE_INTERVAL ||
            (branch !== undefined && (typeof branch !== 'number' || !Number.isInteger(branch) || branch < 0 || branch > 32))
          )
            throw new ModelPresetError(k, `must be {"interval": 1-${MAX_DEEP_CACHE_INTERVAL}, "branch": 0-32 (optional)}, got ${JSON.stringify(v)}`);
          preset.deepCache = { interval, ...(branch !== undefined ? { branch: branch as number } : {}) };
          break;
        }
        case 'width':
          preset.width = side(k, v, limits.maxWidth);
          break;
        case 'height':
          preset.height = side(k, v, limits.maxHeight);
          break;
        case 'size': {
          const m = typeof v === 'string' ? /^(\d+)x(\d+)$/.exec(v.trim()) : null;
          if (!m) throw new ModelPresetError(k, `must be "WIDTHxHEIGHT", e.g. "1024x1024", got ${JSON.stringify(v)}`);
          preset.width = side(k, Number(m[1]), limits.maxWidth);
          preset.height = side(k, Number(m[2]), limits.maxHeight);
          break;
        }
        default: {
          const closest = [...PRESET_KEYS].sort(
            (a, b) => editDistance(key.toLowerCase(), a.toLowerCase()) - editDistance(key.toLowerCase(), b.toLowerCase()),
          )[0];
          throw new ModelPresetError(k, `unknown preset key; did you mean "${closest}"? (keys: ${PRESET_KEYS.join(', ')})`);
        }
      }
    }
    if (preset.width !== undefined && preset.height !== undefined && preset.width * preset.height > limits.maxPixels)
      throw new ModelPresetError(`${at}.size`, `${preset.width}x${preset.height} exceeds the limit of ${limits.maxPixels} pixels`);
    out[label] = preset;
  }
  return out;
}

/** Sampler and schedule names must be the engine's (checked when the server starts, with the engine's lists). */
export function checkPresetNames(presets: Record<string, ModelPreset>, samplers: NamedOption[], schedules: NamedOption[]): void {
  for (const [label, p] of Object.entries(presets)) {
    if (p.sampler !== undefined && !findOption(samplers, p.sampler))
      throw new ModelPresetError(`modelPresets.${label}.sampler`, `unknown sampler "${p.sampler}"; available: ${samplers.map((s) => s.name).join(', ')}`);
    if (p.schedule !== undefined && p.schedule.toLowerCase() !== 'automatic' && !findOption(schedules, p.schedule))
      throw new ModelPresetError(
        `modelPresets.${label}.schedule`,
        `unknown schedule "${p.schedule}"; available: Automatic, ${schedules.map((s) => s.name).join(', ')}`,
      );
  }
}

/** A preset key matches a model's name or one of its labels, any case; `*` matches any run of characters. */
function matches(pattern: string, name: string): boolean {
  if (!pattern.includes('*')) return pattern.toLowerCase() === name.toLowerCase();
  const re = new RegExp(
    `^${pattern
      .split('*')
      .map((part) => part.replace(/[.+?^${}()|[\]\\]/g, '\\$&'))
      .join('.*')}$`,
    'i',
  );
  return re.test(name);
}

/** The preset for a model known by these names (its name, then its labels): an exact key before a wildcard one. */
export function presetFor(presets: Record<string, ModelPreset>, names: readonly string[]): { key: string; preset: ModelPreset } | undefined {
  const keys = Object.keys(presets);
  const key = keys.find((k) => !k.includes('*') && names.some((n) => matches(k, n))) ?? keys.find((k) => k.includes('*') && names.some((n) => matches(k, n)));
  return key === undefined ? undefined : { key, preset: presets[key]! };
}

/** Fills the spec fields the request left out from the preset; returns the fields it set. */
export function applyModelPreset(spec: JobSpec, preset: ModelPreset): PresetField[] {
  const applied: PresetField[] = [];
  for (const field of spec.leftOut ?? []) {
    const v = preset[field];
    if (v === undefined) continue;
    (spec as unknown as Record<string, unknown>)[field] = v;
    applied.push(field);
  }
  return applied;
}

/** The raw fields of each request (query and body), taken before schema defaults fill them in. */
const sent = new WeakMap<FastifyRequest, Record<string, unknown>>();

/** preValidation hook: remembers what the client sent. */
export function recordSentFields(req: FastifyRequest): void {
  const query = req.query && typeof req.query === 'object' ? (req.query as Record<string, unknown>) : {};
  const body = req.body && typeof req.body === 'object' && !Array.isArray(req.body) ? (req.body as Record<string, unknown>) : {};
  sent.set(req, { ...query, ...body });
}

/** What the client sent (query and body fields, before defaults); undefined when not recorded. */
export function sentFields(req: FastifyRequest): Record<string, unknown> | undefined {
  return sent.get(req);
}

function valueAt(obj: Record<string, unknown>, path: string): unknown {
  let cur: unknown = obj;
  for (const part of path.split('.')) {
    if (cur === null || typeof cur !== 'object') return undefined;
    cur = (cur as Record<string, unknown>)[part];
  }
  return cur;
}

/**
 * The preset fields a request left out: those none of whose request fields (dotted paths for nested ones) were
 * sent with a value. Unknown `sentFields` (not recorded) means nothing is left out, so no preset overrides a value.
 */
export function leftOutFields(sentFields: Record<string, unknown> | undefined, sources: Partial<Record<PresetField, readonly string[]>>): PresetField[] {
  if (!sentFields) return [];
  return (Object.keys(sources) as PresetField[]).filter((field) =>
    sources[field]!.every((path) => {
      const v = valueAt(sentFields, path);
      return v === undefined || v === null || v === '';
    }),
  );
}
