// The engine: runs operations (generate, load, ...; see ops/) over a pool of loaded models.
import type {
  Device,
  GenerateOptions,
  GenerateRequest,
  GenerateResult,
  GraphBuildProgress,
  LoadedModelInfo,
  ModelRef,
  ProgressEvent,
  RunOptions,
} from './api.ts';
import { withBuildListener } from './onnx/build-progress.ts';
import { KilnInputError } from './api.ts';
import { ModelPool } from './model-pool.ts';
import { isOpName, OPS, type EngineOp, type OpInput, type OpName, type OpOutput } from './ops/index.ts';
import { loadedModelInfo, type SessionSettings } from './pipelines/model-sessions.ts';
import type { NoiseOverrides } from './pipelines/overrides.ts';
import { listSamplers, listSchedules } from './samplers/index.ts';
import type { QuantizeMode } from './weights/quantize.ts';

export interface EngineOptions {
  device?: Device;
  /** Where built ONNX graphs are cached (default ~/.cache/kiln/graphs or KILN_CACHE_DIR). */
  cacheDir?: string;
  /** The Hugging Face hub cache tokenizers are read from (default $HF_HUB_CACHE, $HF_HOME/hub, ~/.cache/huggingface/hub). */
  hfCacheDir?: string;
  /** Free a model's sessions after this long unused (0 = never). */
  idleUnloadMs?: number;
  /** Most models kept loaded at once; the least recently used is freed first. */
  maxLoadedModels?: number;
  /** onnxruntime threads per op (0 or absent = all cores). */
  threads?: number;
  /** Whether onnxruntime's idle threads spin between ops (its default); false yields the cores. */
  spinning?: boolean;
  /** Weight-only quantisation of the big Linear layers at graph build time (--quantize); undefined = float. */
  quantize?: QuantizeMode;
  /** Called with the loaded models whenever that list changes (load, eviction, idle unload, close). */
  onModelsChanged?: (models: LoadedModelInfo[]) => void;
  /** UNet precision on the CPU ('int8': calibrated from the first generations, within a checked bound; docs/int8.md). */
  precision?: 'fp32' | 'int8';
  /** Models `precision` applies to: file or folder names (with or without extension) or paths; empty = every model. */
  precisionModels?: string[];
  /** int8 calibration settings (tests and benchmarks shorten the calibration). */
  int8?: SessionSettings['int8'];
}

/** In-process options: RunOptions plus hooks that cannot cross a process boundary. */
export interface LocalRunOptions extends RunOptions {
  /** Test hooks of the generate operation (fixed noise, final latents). */
  overrides?: NoiseOverrides;
}

export interface Engine {
  /** Runs an operation by name: the one entry point a worker or a remote client needs. */
  run<N extends OpName>(op: N, input: OpInput<N>, opts?: LocalRunOptions): Promise<OpOutput<N>>;
  /** run('generate', ...). */
  generate(req: GenerateRequest, opts?: GenerateOptions, overrides?: NoiseOverrides): Promise<GenerateResult>;
  /** run('load', ...): loads (or returns the already loaded) model. */
  load(ref: ModelRef): Promise<LoadedModelInfo>;
  loadedModels(): LoadedModelInfo[];
  listSamplers: typeof listSamplers;
  listSchedules: typeof listSchedules;
  unloadIdle(now?: number): Promise<number>;
  close(): Promise<void>;
}

export function createEngine(opts: EngineOptions = {}): Engine {
  const idleUnloadMs = opts.idleUnloadMs ?? 0;
  const pool = new ModelPool({
    device: opts.device ?? 'cpu',
    cacheDir: opts.cacheDir,
    hfCacheDir: opts.hfCacheDir,
    threads: opts.threads,
    spinning: opts.spinning,
    quantize: opts.quantize,
    precision: opts.precision,
    precisionModels: opts.precisionModels,
    int8: opts.int8,
    maxLoaded: opts.maxLoadedModels ?? 2,
    idleUnloadMs,
    onChange: opts.onModelsChanged ? (models) => opts.onModelsChanged!(models.map(loadedModelInfo)) : undefined,
  });
  let idleTimer: NodeJS.Timeout | undefined;
  if (idleUnloadMs > 0) {
    idleTimer = setInterval(() => void pool.unloadIdle(), Math.min(idleUnloadMs, 60_000));
    idleTimer.unref();
  }

  const engine: Engine = {
    run(op, input, runOpts = {}) {
      if (!isOpName(op)) return Promise.reject(new KilnInputError(`unknown engine operation "${String(op)}"; known: ${Object.keys(OPS).join(', ')}`, 'op'));
      const operation = OPS[op] as EngineOp<typeof input, OpOutput<typeof op>>;
      // Graph builds report as progress of this operation carrying `build`, at the phase, step and fraction the
      // operation had reached ('loading' before its first event), so its own phases and counters never go back.
      let last: ProgressEvent = { phase: 'loading', step: 0, totalSteps: 0, fraction: 0 };
      const onProgress = runOpts.onProgress;
      const tracked = onProgress
        ? {
            ...runOpts,
            onProgress: (e: ProgressEvent) => {
              last = e;
              onProgress(e);
            },
          }
        : runOpts;
      const listener =
        onProgress &&
        ((build: GraphBuildProgress) => onProgress({ phase: last.phase, step: last.step, totalSteps: last.totalSteps, fraction: last.fraction, build }));
      return withBuildListener(listener, () => operation.run(input, { ...tracked, models: pool }));
    },
    generate: (req, genOpts = {}, overrides) => engine.run('generate', req, { ...genOpts, overrides }),
    load: (ref) => engine.run('load', ref),
    loadedModels: () => pool.loaded().map(loadedModelInfo),
    listSamplers,
    listSchedules,
    unloadIdle: (now) => pool.unloadIdle(now),
    async close() {
      if (idleTimer) clearInterval(idleTimer);
      await pool.close();
    },
  };
  return engine;
}
