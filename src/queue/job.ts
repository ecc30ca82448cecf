// Job records: what is stored, what clients see, what events subscribers get.
import type { Phase, GenerateResult, RawImage } from '../engine/index.ts';
import type { ImageFormat } from '../storage/encode.ts';
import type { JobSpec } from './job-spec.ts';

export type JobState = 'queued' | 'running' | 'succeeded' | 'failed' | 'cancelled';
export const JOB_STATES: readonly JobState[] = ['queued', 'running', 'succeeded', 'failed', 'cancelled'];
export const FINAL_STATES: ReadonlySet<JobState> = new Set(['succeeded', 'failed', 'cancelled']);

export type ErrorCode = 'input' | 'model' | 'timeout' | 'interrupted' | 'internal' | 'storage';

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
  /** Transparent jobs with `transparentOptions.preview`: the checkerboard preview's file name (RGB PNG). */
  preview?: string;
}

/** What an image-understanding job (embed-image, interrogate) produced; floats as JSON numbers. */
export interface VisionOutput {
  clipModel: string;
  /** embed-image: CLIP image_embeds (not normalised). */
  clipEmbedding?: number[];
  /** embed-image: VAE latent mean x scaling factor, [channels][h][w] flattened, and its shape. */
  vaeLatent?: number[];
  vaeShape?: number[];
  /** interrogate: the composed prompt and each category's best phrases. */
  prompt?: string;
  categories?: Array<{ name: string; matches: Array<{ phrase: string; probability: number; similarity: number }> }>;
  /** interrogate: which text tower ranked ('clip-model' or 'checkpoint'). */
  textTower?: string;
}

export interface JobResult {
  images: StoredImage[];
  /** Image understanding jobs: their answer (images is then empty). */
  vision?: VisionOutput;
  timings: GenerateResult['timings'];
  /** What did not stop the job but the client should know (LoRA keys that matched no layer). */
  warnings?: string[];
}

export interface Job {
  id: string;
  /** Submission order. */
  seq: number;
  /** Queue priority (the spec's, default 0): higher runs first. */
  priority: number;
  /** Its owner's round-robin turn at that priority, fixed when queued (fairness.ts); 0 when it never queued. */
  turn: number;
  /**
   * Order of entering the queue (submit, retry, handed back by a worker): the last tie-break of the run order.
   * On Redis it is BullMQ's own insertion order among equal ranks, so both backends break ties alike.
   */
  ticket: number;
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
  /** Live fields: the backend publishes them while the job runs and stores them when it ends. */
  progress: number;
  phase?: Phase;
  step: number;
  totalSteps: number;
  /**
   * Data an API surface keeps with the job (the request to echo back, what a client was already handed);
   * stored with the record, so it survives restarts. Keys are namespaced by surface, e.g. `seed004`.
   */
  extra: Record<string, unknown>;
  /** An id the client chose for the job on its own surface (A1111 force_task_id); lookups take the newest. */
  externalId?: string;
}

/** How far a running job got; what the running worker reports on every step. */
export interface LiveProgress {
  progress: number;
  phase?: Phase;
  step: number;
  totalSteps: number;
}

/** The latest live preview of a running job (kept by the backend while the job runs; gone when it ends). */
export interface JobPreview {
  /** Approximate RGB of the first image at latent resolution. */
  image: RawImage;
  /** The sampling step (model evaluation) it shows. */
  step: number;
  /** 1, 2, 3, ... per job: lets pollers tell a new preview from one they already have. */
  seq: number;
}

export type JobEvent =
  | { type: 'queued'; job: Job }
  | { type: 'started'; job: Job }
  /** `preview` is set when this step brought a new preview (also kept: JobQueue.preview). */
  | { type: 'progress'; job: Job; phase: Phase; step: number; totalSteps: number; progress: number; preview?: JobPreview }
  | { type: 'succeeded'; job: Job }
  | { type: 'failed'; job: Job }
  | { type: 'cancelled'; job: Job };
