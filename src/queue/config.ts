// What the queue needs to be told: the limits every job spec must respect and how the queue runs jobs.
// The server fills both from its own options table; the queue never reads server configuration.

export interface Limits {
  maxWidth: number;
  maxHeight: number;
  maxPixels: number;
  maxSteps: number;
  maxImages: number;
  maxPromptChars: number;
  bodyBytes: number;
  uploadBytes: number;
  maxDecodedPixels: number;
}

export interface QueueConfig {
  maxQueued: number;
  jobTimeoutMs: number;
  retentionMs: number;
  cleanupIntervalMs: number;
  recoverRunning: 'requeue' | 'fail';
  maxAttempts: number;
  shutdownGraceMs: number;
  /** How long an aborted job's engine call may run on before the engine process is killed (and replaced). */
  abortGraceMs: number;
  /**
   * Redis queue: how long a worker's hold on a running job lasts without renewal. A worker that dies stops
   * renewing, and after about this long (plus one check interval) another worker takes the job.
   */
  workerLockMs: number;
  /** Batches of more images than this are split into chunks of this many for several workers (batch-split.ts); 0: never. */
  splitImages?: number;
}
