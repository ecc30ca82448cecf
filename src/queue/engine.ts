// The engine as the queue sees it. The real one is src/engine (createEngine); ProcessEngine runs it in a
// supervised child process; tests inject fakes.
import type { GenerateOptions, GenerateRequest, GenerateResult, ModelRef, OpInput, OpName, OpOutput, RunOptions } from '../engine/index.ts';

export interface NamedOption {
  name: string;
  aliases: string[];
  /** Extra fields the engine reports (preferred schedule, label, ...), passed through to listings. */
  [extra: string]: unknown;
}

export interface Engine {
  /** Runs an engine operation by name (one file each in the engine's ops folder). */
  run<N extends OpName>(op: N, input: OpInput<N>, opts?: RunOptions): Promise<OpOutput<N>>;
  /** run('generate', ...). */
  generate(req: GenerateRequest, opts: GenerateOptions): Promise<GenerateResult>;
  /** Optional warm-up: load a model before the first job, so /ready means a model is loaded. */
  load?(ref: ModelRef): Promise<unknown>;
  listSamplers(): unknown;
  listSchedules(): unknown;
  close(): unknown;
}

export interface EngineOptions {
  device?: 'cpu' | 'cuda' | 'tensorrt' | 'webgpu';
  cacheDir?: string;
  /** The Hugging Face hub cache the engine reads tokenizers from (the server downloads into it). */
  hfCacheDir?: string;
  /** onnxruntime threads per op (0 = all cores). */
  threads?: number;
  /** Whether onnxruntime's idle threads spin (false leaves the cores to the HTTP thread). */
  spinning?: boolean;
  /** UNet precision on the CPU ('int8': calibrated, bounded; docs/int8.md). */
  precision?: 'fp32' | 'int8';
  /** Models `precision` applies to (names or paths); empty or absent = every model. */
  precisionModels?: string[];
  /** Free a model's memory after this long unused (0 or absent = keep it). */
  idleUnloadMs?: number;
  /** Most models kept loaded at once (least recently used freed first). */
  maxLoadedModels?: number;
  /** Weight-only quantisation of Linear layers at graph build time (--quantize). */
  quantize?: 'q8' | 'q4';
  /** Set by the engine process, not by callers: reports the loaded models whenever they change. */
  onModelsChanged?: (models: LoadedModelSummary[]) => void;
}

export interface LoadedModelSummary {
  path: string;
  name: string;
  family: string;
}

export type CreateEngine = (opts: EngineOptions) => Engine | Promise<Engine>;

/** Accepts what an engine lists (strings, or objects with a name/label) and gives uniform {name, aliases}. */
export function normalizeOptions(list: unknown): NamedOption[] {
  if (!Array.isArray(list)) return [];
  return list.flatMap((item): NamedOption[] => {
    if (typeof item === 'string') return [{ name: item, aliases: [] }];
    if (item && typeof item === 'object') {
      const o = item as Record<string, unknown>;
      const name = typeof o.name === 'string' ? o.name : typeof o.label === 'string' ? o.label : undefined;
      if (!name) return [];
      const aliases = Array.isArray(o.aliases) ? o.aliases.filter((a): a is string => typeof a === 'string') : [];
      if (typeof o.label === 'string' && o.label !== name) aliases.push(o.label);
      return [{ ...o, name, aliases }];
    }
    return [];
  });
}

/** True when `name` matches an option's name or alias, case-insensitively. */
export function findOption(options: NamedOption[], name: string): NamedOption | undefined {
  const n = name.toLowerCase();
  return options.find((o) => o.name.toLowerCase() === n || o.aliases.some((a) => a.toLowerCase() === n));
}
