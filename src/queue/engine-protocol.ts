// The engine protocol: plain, structured-clone-serialisable messages between an engine host (today a worker
// thread, next a child process or a remote worker) and its client. Operations are named, not enumerated here:
// a new engine operation needs no change in this file or in the code on either side.
import { KilnInputError, ModelFileError, type ProgressEvent } from '../engine/index.ts';
import type { LoadedModelSummary } from './engine.ts';

export interface WorkerError {
  name: string;
  message: string;
  field?: string;
  file?: string;
  stack?: string;
}

export type ToWorker =
  /** Runs operation `op` on `input`; `preview` asks for live previews in its progress events. */
  { type: 'run'; id: number; op: string; input: unknown; preview?: { everyEvals: number } } | { type: 'abort'; id: number } | { type: 'close' };

export type FromWorker =
  | { type: 'ready'; samplers: unknown; schedules: unknown }
  | { type: 'init-error'; error: WorkerError }
  /** A preview's pixel buffer is transferred, not copied. */
  | { type: 'progress'; id: number; event: ProgressEvent }
  /** `aborted`: an abort arrived while the operation finished anyway. Image buffers are transferred. */
  | { type: 'result'; id: number; output: unknown; aborted: boolean }
  | { type: 'error'; id: number; error: WorkerError; aborted: boolean }
  /** The engine's loaded models changed (a load, an eviction or an idle unload). */
  | { type: 'models'; models: LoadedModelSummary[] };

export function toWorkerError(e: unknown): WorkerError {
  const err = e as Error & { field?: string; file?: string };
  return { name: err?.name ?? 'Error', message: err?.message ?? String(e), field: err?.field, file: err?.file, stack: err?.stack };
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
  if (e.stack) err.stack = e.stack;
  return err;
}

/**
 * The ArrayBuffers in a message payload that can move instead of being copied: those a typed array covers
 * whole (a view into a larger or pooled buffer is copied, since the rest may still be in use).
 */
export function transferables(value: unknown, found: Set<ArrayBuffer> = new Set()): ArrayBuffer[] {
  if (ArrayBuffer.isView(value)) {
    const b = value.buffer;
    if (b instanceof ArrayBuffer && value.byteOffset === 0 && value.byteLength === b.byteLength) found.add(b);
  } else if (Array.isArray(value)) {
    for (const v of value) transferables(v, found);
  } else if (value && typeof value === 'object') {
    for (const v of Object.values(value)) transferables(v, found);
  }
  return [...found];
}
