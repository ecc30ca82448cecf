// Runs an engine module in a supervised child process and exposes it as an ordinary Engine. The server keeps
// HTTP, the queue and storage; the child holds onnxruntime, so a native crash, an out-of-memory kill or a
// SIGKILL after an overrun ends only the child. Operations travel as generic run messages
// (engine-protocol.ts) over Node's IPC channel with 'advanced' serialisation (typed arrays cross as bytes, not
// JSON). When the child dies, the calls in flight fail with EngineCrashError (or EngineKilledError after
// kill()) and a fresh child is started at once, so the next job finds an engine ready; its models reload from
// the graph cache on first use.
import { type ChildProcess, fork } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { GenerateOptions, GenerateRequest, GenerateResult, LoadedModelInfo, ModelRef, OpInput, OpName, OpOutput, RunOptions } from '../engine/index.ts';
import type { Engine, EngineOptions, LoadedModelSummary } from './engine.ts';
import { type EngineProcessInit, reviveError, type FromWorker, type ToWorker } from './engine-protocol.ts';

const CHILD_FILE = fileURLToPath(new URL('./engine-process-boot.mjs', import.meta.url));
/** How long a closing engine may take before it is killed. */
const CLOSE_TIMEOUT_MS = 2000;

export class EngineAbortError extends Error {
  constructor() {
    super('generation aborted');
    this.name = 'AbortError';
  }
}

/** The engine process died while running a call (a native crash, an out-of-memory kill, a kill from outside). */
export class EngineCrashError extends Error {
  constructor(
    readonly exitCode: number | null,
    readonly signal: NodeJS.Signals | null,
  ) {
    super(`the engine process exited unexpectedly (${signal ? `signal ${signal}` : `code ${exitCode}`})`);
    this.name = 'EngineCrashError';
  }
}

/** The engine process was killed on purpose (kill()), e.g. because an aborted call overran its grace. */
export class EngineKilledError extends Error {
  constructor() {
    super('the engine process was killed and exited');
    this.name = 'EngineKilledError';
  }
}

interface Pending {
  resolve: (output: unknown) => void;
  reject: (e: Error) => void;
  opts: RunOptions;
}

export interface EngineRestart {
  /** Why the previous process ended. */
  reason: 'crash' | 'killed';
  /** Milliseconds from its death to the new process reporting ready. */
  readyMs: number;
}

export class ProcessEngine implements Engine {
  private child?: ChildProcess;
  private exited: Promise<void> = Promise.resolve();
  private ready?: Promise<{ samplers: unknown; schedules: unknown }>;
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private killing?: ChildProcess;
  private closed = false;
  private readonly flagDir = mkdtempSync(join(tmpdir(), 'kiln-engine-'));
  private readonly abortFlagFile = join(this.flagDir, 'abort');
  private lists: { samplers: unknown; schedules: unknown } = { samplers: [], schedules: [] };
  /** What the child's engine has in memory now (it reports every change). */
  loadedModels: LoadedModelSummary[] = [];
  /** Processes started so far (1 + restarts). */
  starts = 0;
  /** Called when a replacement process is ready after a crash or a kill. */
  onRestart?: (r: EngineRestart) => void;

  constructor(
    private readonly module: string,
    private readonly options: EngineOptions = {},
  ) {}

  /** The engine process's id (undefined while none runs). */
  get pid(): number | undefined {
    return this.child?.pid;
  }

  /** Starts the process and waits until the engine reports ready (or throws its init error). */
  start(): Promise<{ samplers: unknown; schedules: unknown }> {
    if (this.ready) return this.ready;
    this.closed = false;
    mkdirSync(this.flagDir, { recursive: true }); // close() removed it
    const init: EngineProcessInit = { module: this.module, options: this.options, abortFlagFile: this.abortFlagFile };
    const child = fork(CHILD_FILE, [], {
      // Not the server's own flags (a test runner's --test, an inspector port): tsx is registered by the boot file.
      execArgv: [],
      serialization: 'advanced',
      env: { ...process.env, KILN_ENGINE_INIT: JSON.stringify(init) },
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    this.child = child;
    this.starts++;
    this.exited = new Promise<void>((r) => child.once('exit', () => r()));
    this.ready = new Promise((resolve, reject) => {
      child.on('message', (msg: FromWorker) => {
        if (msg.type === 'ready') {
          this.lists = { samplers: msg.samplers, schedules: msg.schedules };
          resolve(this.lists);
        } else if (msg.type === 'init-error') reject(reviveError(msg.error));
        else this.onMessage(msg);
      });
      // A failed spawn (no such file, out of processes) is an 'error' without an 'exit'.
      child.on('error', (e) => {
        reject(e);
        this.onExit(child, e);
      });
      child.on('exit', (code, signal) => {
        const err = this.killing === child ? new EngineKilledError() : new EngineCrashError(code, signal);
        reject(err);
        this.onExit(child, err);
      });
    });
    this.ready.catch(() => {
      if (this.child === child) this.ready = undefined;
      child.kill('SIGKILL');
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

  private onExit(child: ChildProcess, err: Error): void {
    if (this.child !== child) return;
    const diedAt = performance.now();
    const wasReady = this.ready;
    this.child = undefined;
    this.loadedModels = [];
    this.ready = undefined;
    for (const p of this.pending.values()) p.reject(err);
    this.pending.clear();
    // A process that died after starting well is replaced at once, so the next job does not wait for a start.
    if (this.closed || !wasReady) return;
    void wasReady.then(
      () => {
        if (this.closed || this.child) return;
        const reason = err instanceof EngineKilledError ? 'killed' : 'crash';
        this.start().then(
          () => this.onRestart?.({ reason, readyMs: performance.now() - diedAt }),
          () => undefined, // the next run() tries again and reports the error to its caller
        );
      },
      () => undefined,
    );
  }

  /** Runs an engine operation in the child. Progress, previews and abort work for every operation alike. */
  async run<N extends OpName>(op: N, input: OpInput<N>, opts: RunOptions = {}): Promise<OpOutput<N>> {
    // A call made while a killed process is still exiting waits for its replacement rather than die with it.
    if (this.child && this.killing === this.child) await this.exited;
    await this.start();
    if (opts.signal?.aborted) throw new EngineAbortError();
    const child = this.child;
    if (!child) throw new Error('the engine process exited while starting');
    const id = this.nextId++;
    return new Promise<OpOutput<N>>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (o: unknown) => void, reject, opts });
      opts.signal?.addEventListener(
        'abort',
        () => {
          if (this.child !== child || !this.pending.has(id)) return;
          send(child, { type: 'abort', id });
          try {
            writeFileSync(this.abortFlagFile, String(id));
          } catch {
            // The message alone still stops an engine that yields; one that does not is killed after the grace.
          }
        },
        { once: true },
      );
      send(child, { type: 'run', id, op, input, ...(opts.preview ? { preview: opts.preview } : {}) });
    });
  }

  generate(req: GenerateRequest, opts: GenerateOptions = {}): Promise<GenerateResult> {
    return this.run('generate', req, opts);
  }

  /** Loads a model in the child ahead of the first job (the engine keeps it). */
  load(ref: ModelRef): Promise<LoadedModelInfo> {
    return this.run('load', ref);
  }

  listSamplers(): unknown {
    return this.lists.samplers;
  }

  listSchedules(): unknown {
    return this.lists.schedules;
  }

  /** Asks the engine to close, then kills the process if it does not exit promptly. No restart follows. */
  async close(): Promise<void> {
    this.closed = true;
    const child = this.child;
    if (child) {
      this.ready = undefined;
      send(child, { type: 'close' });
      const timer = setTimeout(() => child.kill('SIGKILL'), CLOSE_TIMEOUT_MS);
      await this.exited;
      clearTimeout(timer);
      if (this.child === child) this.onExit(child, new Error('engine closed'));
    }
    rmSync(this.flagDir, { recursive: true, force: true });
  }

  /**
   * Kills the process at once (SIGKILL: used when an evaluation ignores abort past its grace; a native call
   * cannot be interrupted any other way). The calls in flight fail with EngineKilledError; a fresh process starts
   * at once unless `replace` is false (shutting down), in which case the next call starts one.
   */
  async kill(replace = true): Promise<void> {
    const child = this.child;
    if (!child) return;
    this.killing = child;
    if (!replace) this.closed = true;
    const exited = this.exited;
    child.kill('SIGKILL');
    await exited;
  }
}

/** Sends a message unless the channel is already gone (the exit handler then fails the call). */
function send(child: ChildProcess, msg: ToWorker): void {
  // With a callback a failed write (the child died after the check) is not an 'error' event; its exit fails the calls.
  if (child.connected) child.send(msg, () => undefined);
}
