// Runs an engine module inside a worker thread and exposes it as an ordinary Engine. Operations travel as
// generic run messages (engine-protocol.ts), so this file knows no operation but by name. If the worker dies,
// the running calls fail and the next call starts a fresh worker.
import { Worker } from 'node:worker_threads';
import { fileURLToPath } from 'node:url';
import type { GenerateOptions, GenerateRequest, GenerateResult, LoadedModelInfo, ModelRef, OpInput, OpName, OpOutput, RunOptions } from '../engine/index.ts';
import type { Engine, EngineOptions, LoadedModelSummary } from './engine.ts';
import { reviveError, type FromWorker, type ToWorker } from './engine-protocol.ts';

const WORKER_FILE = fileURLToPath(new URL('./engine-worker-boot.mjs', import.meta.url));

export class EngineAbortError extends Error {
  constructor() {
    super('generation aborted');
    this.name = 'AbortError';
  }
}

interface Pending {
  resolve: (output: unknown) => void;
  reject: (e: Error) => void;
  opts: RunOptions;
}

export class ThreadedEngine implements Engine {
  private worker?: Worker;
  private exited: Promise<void> = Promise.resolve();
  private ready?: Promise<{ samplers: unknown; schedules: unknown }>;
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  /** The id of the run to abort, seen by the worker even while onnxruntime blocks its event loop. */
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
    if (msg.type !== 'progress' && msg.type !== 'result' && msg.type !== 'error') return;
    const p = this.pending.get(msg.id);
    if (!p) return;
    if (msg.type === 'progress') {
      p.opts.onProgress?.(msg.event);
      return;
    }
    this.pending.delete(msg.id);
    if (msg.type === 'result') {
      if (msg.aborted && p.opts.signal?.aborted) p.reject(new EngineAbortError());
      else p.resolve(msg.output);
    } else p.reject(msg.aborted ? new EngineAbortError() : reviveError(msg.error));
  }

  private onExit(worker: Worker, err: Error): void {
    if (this.worker !== worker) return;
    this.worker = undefined;
    this.loadedModels = [];
    this.ready = undefined;
    for (const p of this.pending.values()) p.reject(err);
    this.pending.clear();
  }

  /** Runs an engine operation in the worker. Progress, previews and abort work for every operation alike. */
  async run<N extends OpName>(op: N, input: OpInput<N>, opts: RunOptions = {}): Promise<OpOutput<N>> {
    await this.start();
    if (opts.signal?.aborted) throw new EngineAbortError();
    const id = this.nextId++;
    return new Promise<OpOutput<N>>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (o: unknown) => void, reject, opts });
      opts.signal?.addEventListener(
        'abort',
        () => {
          Atomics.store(this.abortFlag, 0, id);
          this.worker?.postMessage({ type: 'abort', id } satisfies ToWorker);
        },
        { once: true },
      );
      this.worker!.postMessage({ type: 'run', id, op, input, ...(opts.preview ? { preview: opts.preview } : {}) } satisfies ToWorker);
    });
  }

  generate(req: GenerateRequest, opts: GenerateOptions = {}): Promise<GenerateResult> {
    return this.run('generate', req, opts);
  }

  /** Loads a model in the worker ahead of the first job (the engine keeps it). */
  load(ref: ModelRef): Promise<LoadedModelInfo> {
    return this.run('load', ref);
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
    for (const p of this.pending.values()) p.reject(new Error('engine closed'));
    this.pending.clear();
  }

  /** Stops the thread at once (used when a generation ignores abort past its deadline). */
  async kill(): Promise<void> {
    const worker = this.worker;
    if (!worker) return;
    await worker.terminate();
  }
}
