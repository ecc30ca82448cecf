// The engine protocol: plain, structured-clone-serialisable messages between an engine host (today a child
// process over Node's IPC channel with 'advanced' serialisation, next a remote worker) and its client.
// Operations are named, not enumerated here: a new engine operation needs no change in this file or in the
// code on either side.
import { KilnInputError, ModelFileError, type ProgressEvent, type RunOptions } from '../engine/index.ts';
import type { EngineOptions, LoadedModelSummary } from './engine.ts';

/** What an engine process is started with (in its environment, as JSON). */
export interface EngineProcessInit {
  /** The module exporting createEngine(). */
  module: string;
  options: EngineOptions;
  /** A file the supervisor writes an aborted run's id to (see engine-process-child.ts). */
  abortFlagFile?: string;
}

export interface WorkerError {
  name: string;
  message: string;
  field?: string;
  file?: string;
  /** A system error code (ENOSPC, EACCES, ...), so the queue can tell a full disk from a bug. */
  code?: string;
  stack?: string;
}

export type ToWorker =
  /** Runs operation `op` on `input`; `preview` asks for live previews in its progress events. */
  { type: 'run'; id: number; op: string; input: unknown; preview?: RunOptions['preview'] } | { type: 'abort'; id: number } | { type: 'close' };

/** Progress events may carry `event.build` (graph-build progress, phase loading): plain data, passed on as is. */
export type FromWorker =
  | { type: 'ready'; samplers: unknown; schedules: unknown }
  | { type: 'init-error'; error: WorkerError }
  | { type: 'progress'; id: number; event: ProgressEvent }
  /** `aborted`: an abort arrived while the operation finished anyway. */
  | { type: 'result'; id: number; output: unknown; aborted: boolean }
  | { type: 'error'; id: number; error: WorkerError; aborted: boolean }
  /** The engine's loaded models changed (a load, an eviction or an idle unload). */
  | { type: 'models'; models: LoadedModelSummary[] };

export function toWorkerError(e: unknown): WorkerError {
  const err = e as Error & { field?: string; file?: string; code?: unknown };
  const code = typeof err?.code === 'string' ? err.code : undefined;
  return { name: err?.name ?? 'Error', message: err?.message ?? String(e), field: err?.field, file: err?.file, code, stack: err?.stack };
}

/** The error a WorkerError stands for, with the engine's error classes restored so callers can map them. */
export function reviveError(e: WorkerError): Error {
  let err: Error;
  if (e.name === 'KilnInputError') err = new KilnInputError(e.message, e.field);
  else if (e.name === 'ModelFileError') {
    err = new ModelFileError(e.file ?? '?', e.message);
    err.message = e.message; // already prefixed with the file on the engine side
  } else {
    err = new Error(e.message);
    err.name = e.name;
  }
  if (e.code) (err as Error & { code?: string }).code = e.code;
  if (e.stack) err.stack = e.stack;
  return err;
}
