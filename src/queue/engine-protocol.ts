// Messages between ThreadedEngine (main thread) and engine-worker.ts.
import type { GenerateOptions, GenerateRequest, GenerateResult, ModelRef, ProgressEvent } from '../engine/api.ts';
import type { LoadedModelSummary } from './engine.ts';

export interface WorkerError {
  name: string;
  message: string;
  field?: string;
  file?: string;
  stack?: string;
}

export type ToWorker =
  | { type: 'generate'; id: number; req: GenerateRequest; preview?: GenerateOptions['preview'] }
  | { type: 'abort'; id: number }
  | { type: 'load'; id: number; ref: ModelRef }
  | { type: 'close' };

export type FromWorker =
  | { type: 'ready'; samplers: unknown; schedules: unknown }
  | { type: 'init-error'; error: WorkerError }
  /** A preview's pixel buffer is transferred, not copied. */
  | { type: 'progress'; id: number; event: ProgressEvent }
  | { type: 'done'; id: number; result: GenerateResult; aborted: boolean }
  | { type: 'error'; id: number; error: WorkerError; aborted: boolean }
  | { type: 'loaded'; id: number; error?: WorkerError }
  /** The engine's loaded models changed (a load, an eviction or an idle unload). */
  | { type: 'models'; models: LoadedModelSummary[] };
