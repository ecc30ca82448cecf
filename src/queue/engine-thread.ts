// Runs an engine module inside a worker thread and exposes it as an ordinary Engine. One generation at a
// time (the queue never asks for more). If the worker dies, the running call fails and the next call
// starts a fresh worker.
import { Worker } from 'node:worker_threads';
import { fileURLToPath } from 'node:url';
import { KilnInputError, ModelFileError } from '../engine/api.ts';
import type { GenerateOptions, GenerateRequest, GenerateResult, ModelRef } from '../engine/api.ts';
import type { Engine, EngineOptions, LoadedModelSummary } from './engine.ts';
import type { FromWorker, ToWorker, WorkerError } from './engine-protocol.ts';

const WORKER_FILE = fileURLToPath(new URL('./engine-worker-boot.mjs', import.meta.url));

export class EngineAbortError extends Error {
  constructor() {
    super('generation aborted');
    this.name = 'AbortError';
  }
}

function reviveError(e: WorkerError): Error {
  let err: Error;
  if (e.name === 'KilnInputError') err = new KilnInputError(e.message, e.field);
  else if (e.name === 'ModelFileError') {
    err = new ModelFileError(e.file ?? '?', e.message);
    err.message = e.message; // already prefixed with the file in the worker
  } else {
    err = new Error(e.message);
    err.name = e.name;
  }
  if (e.stack) err.stack = e.stack;
  return err;
}

interface Pending {
  id: number;
  resolve: (r: GenerateResult) => void;
  reject: (e: Error) => void;
  opts: GenerateOptions;
}

export class ThreadedEngine implements Engine {
  private worker?: Worker;
  private exited: Promise<void> = Promise.resolve();
  private ready?: Promise<{ samplers: unknown; schedules: unknown }>;
  private pending?: Pending;
  private readonly loads = new Map<number, { resolve: () => void; reject: (e: Error) => void }>();
  private nextId = 1;
  private readonly abortFlag = new Int32Array(new SharedArrayBuffer(4));
  private lists: { samplers: unknown; schedules: unknown } = { samplers: [], schedules: [] };
  /** What the worker's engine has in memory now (it reports every change). */
  loadedModels: LoadedModelSummary[] = [];

  constructor(
    private readonly module: string,
    private readonly options: EngineOptions = {},
  ) {}

  /** Starts the worker and waits until the engine reports ready (or throws its init error). */
  start(): Promise<{ samplers: unknown; schedules: unknown }> {
    if (this.ready) return this.ready;
    const worker = new Worker(WORKER_FILE, {
      workerData: { module: this.module, options: this.options, abortFlag: this.abortFlag },
    });
    this.worker = worker;
    this.exited = new Promise<void>((r) => worker.once('exit', () => r()));
    this.ready = new Promise((resolve, reject) => {
      worker.on('message', (msg: FromWorker) => {
        if (msg.type === 'ready') {
          this.lists = { samplers: msg.samplers, schedules: msg.schedules };
          resolve(this.lists);
        } else if (msg.type === 'init-error') reject(reviveError(msg.error));
        else this.onMessage(msg);
      });
      worker.on('error', (e) => {
        reject(e);
        this.onExit(worker, e);
      });
      worker.on('exit', (code) => {
        const err = new Error(`engine worker exited with code ${code}`);
        reject(err);
        this.onExit(worker, err);
      });
    });
    this.ready.catch(() => {
      this.ready = undefined;
      void worker.terminate();
    });
    return this.ready;
  }

  private onMessage(msg: FromWorker): void {
    if (msg.type === 'models') {
      this.loadedModels = msg.models;
      return;
    }
    if (msg.type === 'loaded') {
      const l = this.loads.get(msg.id);
      this.loads.delete(msg.id);
      if (msg.error) l?.reject(reviveError(msg.error));
      else l?.resolve();
      return;
    }
    const p = this.pending;
    if (!p || !('id' in msg) || msg.id !== p.id) return;
    if (msg.type === 'progress') {
      p.opts.onProgress?.(msg.event);
      return;
    }
    this.pending = undefined;
    if (msg.type === 'done') {
      if (msg.aborted && p.opts.signal?.aborted) p.reject(new EngineAbortError());
      else p.resolve(msg.result);
    } else if (msg.type === 'error') {
      p.reject(msg.aborted ? new EngineAbortError() : reviveError(msg.error));
    }
  }

  private onExit(worker: Worker, err: Error): void {
    if (this.worker !== worker) return;
    this.worker = undefined;
    this.loadedModels = [];
    this.ready = undefined;
    const p = this.pending;
    this.pending = undefined;
    p?.reject(err);
    for (const l of this.loads.values()) l.reject(err);
    this.loads.clear();
  }

  async generate(req: GenerateRequest, opts: GenerateOptions = {}): Promise<GenerateResult> {
    await this.start();
    if (this.pending) throw new Error('ThreadedEngine: a generation is already running');
    if (opts.signal?.aborted) throw new EngineAbortError();
    const id = this.nextId++;
    Atomics.store(this.abortFlag, 0, 0);
    return new Promise<GenerateResult>((resolve, reject) => {
      this.pending = { id, resolve, reject, opts };
      opts.signal?.addEventListener(
        'abort',
        () => {
          Atomics.store(this.abortFlag, 0, 1);
          this.worker?.postMessage({ type: 'abort', id } satisfies ToWorker);
        },
        { once: true },
      );
      this.worker!.postMessage({ type: 'generate', id, req, ...(opts.preview ? { preview: opts.preview } : {}) } satisfies ToWorker);
    });
  }

  /** Loads a model in the worker ahead of the first job (the engine keeps it). */
  async load(ref: ModelRef): Promise<void> {
    await this.start();
    const id = this.nextId++;
    return new Promise<void>((resolve, reject) => {
      this.loads.set(id, { resolve, reject });
      this.worker!.postMessage({ type: 'load', id, ref } satisfies ToWorker);
    });
  }

  listSamplers(): unknown {
    return this.lists.samplers;
  }

  listSchedules(): unknown {
    return this.lists.schedules;
  }

  /** Asks the engine to close, then terminates the thread if it does not exit promptly. */
  async close(): Promise<void> {
    const worker = this.worker;
    if (!worker) return;
    this.worker = undefined;
    this.ready = undefined;
    worker.postMessage({ type: 'close' } satisfies ToWorker);
    const timer = setTimeout(() => void worker.terminate(), 2000);
    await this.exited;
    clearTimeout(timer);
    this.pending?.reject(new Error('engine closed'));
    this.pending = undefined;
  }

  /** Stops the thread at once (used when a generation ignores abort past its deadline). */
  async kill(): Promise<void> {
    const worker = this.worker;
    if (!worker) return;
    await worker.terminate();
  }
}
