// Loaded models: loads on demand, keeps a model while an operation uses it, frees the least recently used
// beyond a limit and (optionally) any left idle too long.
import { basename, resolve } from 'node:path';
import type { Device, ModelRef } from './api.ts';
import { ClipModel } from './pipelines/clip-model.ts';
import { ModelSessions, type SessionSettings } from './pipelines/model-sessions.ts';
import type { QuantizeMode } from './weights/quantize.ts';

export interface PoolSettings {
  device: Device;
  cacheDir?: string;
  hfCacheDir?: string;
  threads?: number;
  spinning?: boolean;
  /** Weight-only quantisation of Linear layers (SessionSettings.quantize). */
  quantize?: QuantizeMode;
  /** UNet precision and int8 calibration (SessionSettings). */
  precision?: SessionSettings['precision'];
  int8?: SessionSettings['int8'];
  /** Models `precision` applies to (names or paths); empty = all. */
  precisionModels?: string[];
  /** Most models kept loaded at once; the least recently used is freed first. */
  maxLoaded: number;
  /** Free a model's sessions after this long unused (0 = never). */
  idleUnloadMs: number;
  /** Called with the loaded models whenever that list changes (load, eviction, idle unload, close). */
  onChange?: (models: ModelSessions[]) => void;
}

// A separate VAE is not part of the key: it is a view of the loaded model (ModelSessions.withVae), so a request
// that picks another VAE shares the model's text encoder and UNet sessions.
/** CLIP models kept loaded at once (each is a vision session and, for interrogation, a text session). */
const MAX_CLIP_MODELS = 2;

/** Whether a model at `path` is one of `models` (paths, or file/folder names with or without extension); none = all. */
export function precisionApplies(path: string, models: string[] | undefined): boolean {
  if (!models?.length) return true;
  const name = basename(resolve(path));
  const stem = name.replace(/\.(safetensors|ckpt|pt|pth|bin|gguf)$/i, '');
  return models.some((m) => m === name || m === stem || resolve(m) === resolve(path));
}

function refKey(ref: ModelRef): string {
  return JSON.stringify([resolve(ref.path), ref.tokenizerDir ? resolve(ref.tokenizerDir) : null]);
}

export class ModelPool {
  private readonly models = new Map<string, Promise<ModelSessions>>();
  /** The subset of `models` whose load has finished. */
  private readonly ready = new Map<string, ModelSessions>();

  /** CLIP models (models/clip_vision/) by path, most recently used last; at most MAX_CLIP_MODELS stay loaded. */
  private readonly clipModels = new Map<string, Promise<ClipModel>>();

  constructor(private readonly settings: PoolSettings) {}

  /** Where CLIP graphs are cached and how their sessions run: as the models'. */
  get cacheDir(): string | undefined {
    return this.settings.cacheDir;
  }

  /** The CLIP model at `path`, loaded if needed (the least recently used beyond MAX_CLIP_MODELS is freed). */
  async clipModel(path: string): Promise<ClipModel> {
    const key = resolve(path);
    let p = this.clipModels.get(key);
    if (p) this.clipModels.delete(key);
    else {
      p = ClipModel.open(key, this.upscalerSettings);
      p.catch(() => this.clipModels.delete(key));
    }
    this.clipModels.set(key, p);
    while (this.clipModels.size > MAX_CLIP_MODELS) {
      const [oldKey, old] = this.clipModels.entries().next().value!;
      this.clipModels.delete(oldKey);
      void old.then((m) => m.release()).catch(() => undefined);
    }
    return p;
  }

  /** Where upscaler graphs are cached and how their sessions run: as the models'. */
  get upscalerSettings(): { device: PoolSettings['device']; cacheDir?: string; hfCacheDir?: string; threads?: number } {
    return { device: this.settings.device, cacheDir: this.settings.cacheDir, hfCacheDir: this.settings.hfCacheDir, threads: this.settings.threads };
  }

  /** The model, loaded if needed, marked in use until release(). */
  async acquire(ref: ModelRef): Promise<ModelSessions> {
    const ms = await this.get(ref);
    ms.root.users++;
    return ms;
  }

  release(ms: ModelSessions): void {
    ms.root.users--;
    ms.root.lastUsed = Date.now();
  }

  /** Runs `fn` with the models of `refs` (undefined entries stay undefined), acquired in order and released after. */
  async using<T>(refs: (ModelRef | undefined)[], fn: (models: (ModelSessions | undefined)[]) => Promise<T>): Promise<T> {
    const held: (ModelSessions | undefined)[] = [];
    try {
      for (const ref of refs) held.push(ref ? await this.acquire(ref) : undefined);
      return await fn(held);
    } finally {
      for (const ms of held) if (ms) this.release(ms);
    }
  }

  /** Loads (or finds) the model without marking it in use; with `ref.vae`, a view of it with that VAE. */
  async get(ref: ModelRef): Promise<ModelSessions> {
    const key = refKey(ref);
    let p = this.models.get(key);
    if (!p) {
      const { device, cacheDir, hfCacheDir, threads, spinning, quantize, int8 } = this.settings;
      const precision = this.settings.precision === 'int8' && precisionApplies(ref.path, this.settings.precisionModels) ? 'int8' : 'fp32';
      p = ModelSessions.load({ ...ref, vae: undefined }, { device, cacheDir, hfCacheDir, threads, spinning, quantize, precision, int8 });
      p.then(
        (ms) => {
          this.ready.set(key, ms);
          this.notify();
        },
        () => this.models.delete(key),
      );
      this.models.set(key, p);
      await this.evictBeyond(this.settings.maxLoaded, key);
    }
    const ms = await p;
    ms.lastUsed = Date.now();
    return ref.vae ? ms.withVae(resolve(ref.vae)) : ms;
  }

  loaded(): ModelSessions[] {
    return [...this.ready.values()];
  }

  private notify(): void {
    this.settings.onChange?.(this.loaded());
  }

  private async evictBeyond(limit: number, keep: string): Promise<void> {
    if (this.models.size <= limit) return;
    const entries: [string, ModelSessions][] = [];
    for (const [k, p] of this.models) {
      const ms = k === keep ? undefined : await p.catch(() => undefined);
      if (ms) entries.push([k, ms]);
    }
    entries.sort((a, b) => a[1].lastUsed - b[1].lastUsed);
    // A model in use stays, even if that leaves more than `limit` loaded for a while.
    for (let i = entries.length - 1; i >= 0; i--) if (entries[i]![1].users > 0) entries.splice(i, 1);
    while (this.models.size > limit && entries.length) {
      const [k, ms] = entries.shift()!;
      this.models.delete(k);
      this.ready.delete(k);
      await ms.release();
      this.notify();
    }
  }

  /** Frees models unused for idleUnloadMs; returns how many. */
  async unloadIdle(now = Date.now()): Promise<number> {
    const idle = this.settings.idleUnloadMs;
    if (!idle) return 0;
    let freed = 0;
    for (const [k, p] of [...this.models]) {
      const ms = await p.catch(() => undefined);
      if (ms && ms.users === 0 && now - ms.lastUsed >= idle) {
        this.models.delete(k);
        this.ready.delete(k);
        await ms.release();
        freed++;
      }
    }
    if (freed) this.notify();
    return freed;
  }

  async close(): Promise<void> {
    for (const p of this.clipModels.values()) await (await p.catch(() => undefined))?.release();
    this.clipModels.clear();
    for (const p of this.models.values()) {
      const ms = await p.catch(() => undefined);
      await ms?.release();
    }
    this.models.clear();
    this.ready.clear();
    this.notify();
  }
}
