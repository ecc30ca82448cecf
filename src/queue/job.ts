// Job records: what is stored, what clients see, what events subscribers get.
import type { Phase, GenerateResult } from '../engine/api.ts';
import type { ImageFormat } from '../storage/encode.ts';
import type { JobSpec } from './job-spec.ts';

export type JobState = 'queued' | 'running' | 'succeeded' | 'failed' | 'cancelled';
export const JOB_STATES: readonly JobState[] = ['queued', 'running', 'succeeded', 'failed', 'cancelled'];
export const FINAL_STATES: ReadonlySet<JobState> = new Set(['succeeded', 'failed', 'cancelled']);

export type ErrorCode = 'input' | 'model' | 'timeout' | 'interrupted' | 'internal';

export interface JobError {
  code: ErrorCode;
  message: string;
  /** The request field at fault, for input errors. */
  field?: string;
}

export interface StoredImage {
  /** File name in storage; fetch with storage.read(name) or GET /v1/images/{name}. */
  name: string;
  format: ImageFormat;
  width: number;
  height: number;
  seed: number;
  subseed: number;
  prompt: string;
  negativePrompt: string;
  infotext: string;
}

export interface JobResult {
  images: StoredImage[];
  timings: GenerateResult['timings'];
}

export interface Job {
  id: string;
  /** Submission order (queue position is computed from it). */
  seq: number;
  state: JobState;
  owner: string;
  spec: JobSpec;
  createdAt: number;
  startedAt?: number;
  finishedAt?: number;
  /** How many times the job has started running (a crash-interrupted run counts). */
  attempts: number;
  error?: JobError;
  result?: JobResult;
  /** Live fields (kept in memory, not persisted on every step). */
  progress: number;
  phase?: Phase;
  step: number;
  totalSteps: number;
}

export type JobEvent =
  | { type: 'queued'; job: Job }
  | { type: 'started'; job: Job }
  | { type: 'progress'; job: Job; phase: Phase; step: number; totalSteps: number; progress: number }
  | { type: 'succeeded'; job: Job }
  | { type: 'failed'; job: Job }
  | { type: 'cancelled'; job: Job };
