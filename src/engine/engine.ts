// The engine: loads models on demand (keeping them while in use, freeing idle ones), and runs generations.
// Everything outside src/engine talks to this module only.
import { resolve } from 'node:path';
import type { Device, GenerateOptions, GenerateRequest, GenerateResult, ModelRef } from './api.ts';
import { ModelSessions } from './pipelines/model-sessions.ts';
import { runPipeline, type NoiseOverrides } from './pipelines/generate.ts';
import { listSamplers, listSchedules } from './samplers/index.ts';

export interface EngineOptions {
  device?: Device;
  /** Where built ONNX graphs are cached (default ~/.cache/kiln/graphs or KILN_CACHE_DIR). */
  cacheDir?: string;
  /** Free a model's sessions after this long unused (0 = never). */
  idleUnloadMs?: number;
  /** Most models kept loaded at once; the least recently used is freed first. */
  maxLoadedModels?: number;
  /** onnxruntime threads per op (0 or absent = all cores). */
  threads?: number;
  /** Whether onnxruntime's idle threads spin between ops (its default); false yields the cores. */
  spinning?: boolean;
  /** Called with the loaded models whenever that list changes (load, eviction, idle unload, close). */
  onModelsChanged?: (models: LoadedModelInfo[]) => void;
}

export interface LoadedModelInfo {
  path: string;
  name: string;
  family: string;
  prediction: string;
  lastUsed: number;
}

export interface Engine {
  generate(req: GenerateRequest, opts?: GenerateOptions, overrides?: NoiseOverrides): Promise<GenerateResult>;
  /** Loads (or returns the already loaded) model, e.g. at server start so /ready means something. */
  load(ref: ModelRef): Promise<LoadedModelInfo>;
  loadedModels(): LoadedModelInfo[];
  listSamplers: typeof listSamplers;
  listSchedules: typeof listSchedules;
  unloadIdle(now?: number): Promise<number>;
  close(): Promise<void>;
}

function refKey(ref: ModelRef): string {
  return JSON.stringify([resolve(ref.path), ref.vae ? resolve(ref.vae) : null, ref.tokenizerDir ? resolve(ref.tokenizerDir) : null]);
}

export function createEngine(opts: EngineOptions = {}): Engine {
  const device = opts.device ?? 'cpu';
  const models = new Map<string, Promise<ModelSessions>>();
  /** The subset of `models` whose load has finished. */
  const ready = new Map<string, ModelSessions>();
  const maxLoaded = opts.maxLoadedModels ?? 2;
  let idleTimer: NodeJS.Timeout | undefined;

  const info = (ms: ModelSessions): LoadedModelInfo => ({
    path: ms.model.path,
    name: ms.model.name,
    family: ms.model.family,
    prediction: ms.model.prediction,
    lastUsed: ms.lastUsed,
  });

  async function get(ref: ModelRef): Promise<ModelSessions> {
    const key = refKey(ref);
    let p = models.get(key);
    if (!p) {
      p = ModelSessions.load(ref, { device, cacheDir: opts.cacheDir, threads: opts.threads, spinning: opts.spinning });
      p.then(
        (ms) => {
          ready.set(key, ms);
          notify();
        },
        () => models.delete(key),
      );
      models.set(key, p);
      await evictBeyond(maxLoaded, key);
    }
    const ms = await p;
    ms.lastUsed = Date.now();
    return ms;
  }

  const notify = () => opts.onModelsChanged?.([...ready.values()].map(info));

  async function evictBeyond(limit: number, keep: string): Promise<void> {
    if (models.size <= limit) return;
    const entries: [string, ModelSessions][] = [];
    for (const [k, p] of models) {
      const ms = k === keep ? undefined : await p.catch(() => undefined);
      if (ms) entries.push([k, ms]);
    }
    entries.sort((a, b) => a[1].lastUsed - b[1].lastUsed);
    // A model in use stays, even if that leaves more than `limit` loaded for a while.
    for (let i = entries.length - 1; i >= 0; i--) if (entries[i]![1].users > 0) entries.splice(i, 1);
    while (models.size > limit && entries.length) {
      const [k, ms] = entries.shift()!;
      models.delete(k);
      ready.delete(k);
      await ms.release();
      notify();
    }
  }

  if (opts.idleUnloadMs && opts.idleUnloadMs > 0) {
    idleTimer = setInterval(() => void engine.unloadIdle(), Math.min(opts.idleUnloadMs, 60_000));
    idleTimer.unref();
  }

  const engine: Engine = {
    async generate(req, genOpts = {}, overrides = {}) {
      const base = await get(req.model);
      base.users++;
      let refiner: ModelSessions | undefined;
      try {
        refiner = req.refiner ? await get(req.refiner) : undefined;
        if (refiner) refiner.users++;
        const native = (base.model.unetConfig.sample_size ?? 64) * base.latentFactor;
        const sized = { ...req, width: req.width || native, height: req.height || native };
        return await runPipeline({ base, refiner }, sized, genOpts, overrides);
      } finally {
        for (const ms of [base, refiner]) {
          if (!ms) continue;
          ms.users--;
          ms.lastUsed = Date.now();
        }
      }
    },
    async load(ref) {
      return info(await get(ref));
    },
    loadedModels() {
      return [...ready.values()].map(info);
    },
    listSamplers,
    listSchedules,
    async unloadIdle(now = Date.now()) {
      if (!opts.idleUnloadMs) return 0;
      let freed = 0;
      for (const [k, p] of [...models]) {
        const ms = await p.catch(() => undefined);
        if (ms && ms.users === 0 && now - ms.lastUsed >= opts.idleUnloadMs) {
          models.delete(k);
          ready.delete(k);
          await ms.release();
          freed++;
        }
      }
      if (freed) notify();
      return freed;
    },
    async close() {
      if (idleTimer) clearInterval(idleTimer);
      for (const p of models.values()) {
        const ms = await p.catch(() => undefined);
        await ms?.release();
      }
      models.clear();
      ready.clear();
      notify();
    },
  };
  return engine;
}
