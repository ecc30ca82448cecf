// Everything the queue needs from the place jobs live: the records (all async, so a networked store fits) and
// the events that carry live progress, previews and cancel requests between the processes that share it.
// SQLite is one implementation (sqlite-backend.ts, one process); a Redis one would be another file.
import type { Job, JobError, JobEvent, JobPreview, JobResult, JobState, LiveProgress } from './job.ts';
import type { JobSpec } from './job-spec.ts';

export type FinalState = 'succeeded' | 'failed' | 'cancelled';

export interface NewJob {
  id: string;
  owner: string;
  spec: JobSpec;
  createdAt: number;
  extra?: Record<string, unknown>;
  externalId?: string;
  /** A job refused before it could run is stored as failed at once (with `error`); default queued. */
  failed?: JobError;
}

export interface JobFilter {
  owner?: string;
  state?: JobState;
  /** Newest first; at most this many. */
  limit: number;
  /** Only jobs submitted before this one (paging). */
  beforeSeq?: number;
}

export interface FinishData {
  result?: JobResult;
  error?: JobError;
  /** How far the job got (kept for clients after it ends). */
  progress?: LiveProgress;
}

export interface JobBackend {
  insert(job: NewJob): Promise<Job>;
  get(id: string): Promise<Job | undefined>;
  /** The newest job with this client-chosen id (of this owner, when given). */
  findByExternalId(externalId: string, owner?: string): Promise<Job | undefined>;
  list(filter: JobFilter): Promise<Job[]>;
  counts(): Promise<Record<JobState, number>>;
  /** Queued jobs that run before this queued one (0 = next to run); the run order is fairness.ts's. */
  queuedAhead(job: Job): Promise<number>;
  /**
   * Atomically moves the next queued job in the run order (fairness.ts) to running (counting the attempt) and
   * returns it; undefined when none. Its start time is read from `clock` once it is taken (a claim may wait on
   * the network, and a job queued meanwhile must not start before it was created).
   */
  claimNext(clock: () => number): Promise<Job | undefined>;
  /** Live progress of a running job, visible to get/list from any process until the job ends. */
  setProgress(id: string, progress: LiveProgress): Promise<void>;
  /** A running job back in line; `refundAttempt` undoes its attempt (we stopped it ourselves). */
  requeue(id: string, refundAttempt: boolean): Promise<Job | undefined>;
  /**
   * Makes sure a queued job will be dispatched: where dispatch is a separate structure (Redis: the BullMQ entry,
   * written after the record), a process that died between the two writes left a record no worker will take.
   * A no-op when the job is not queued or is already dispatchable.
   */
  ensureDispatched(id: string): Promise<void>;
  /**
   * Ends a job, only if its state is one of `from` (so two processes cannot both end it). Returns the final
   * job, or undefined when it was not in one of those states.
   */
  finish(id: string, from: readonly JobState[], state: FinalState, now: number, data: FinishData): Promise<Job | undefined>;
  /** A failed job queued again under its id (result, error and progress cleared; `spec` replaces its spec). */
  retry(id: string, spec?: JobSpec): Promise<Job | undefined>;
  /** Jobs left running by a worker that is gone (SQLite: every running job, since one process owns the file). */
  interrupted(): Promise<Job[]>;
  /** Finished jobs that ended before `cutoff` (ms since epoch), oldest first. */
  finishedBefore(cutoff: number, limit: number): Promise<Job[]>;
  delete(ids: readonly string[]): Promise<void>;
  /** Shallow-merges `patch` into the job's `extra`; returns the updated job. */
  updateExtra(id: string, patch: Record<string, unknown>): Promise<Job | undefined>;

  /** Sends a job event to every subscriber of the job and of '*', in every process sharing the backend. */
  publish(event: JobEvent): Promise<void>;
  /** Subscribes to one job's events, or every job's with '*'; returns the unsubscribe function. */
  subscribe(id: string, listener: (e: JobEvent) => void): () => void;
  /** The latest preview of a running job (replaces the previous; undefined clears it). */
  setPreview(id: string, preview: JobPreview | undefined): Promise<void>;
  getPreview(id: string): Promise<JobPreview | undefined>;
  /** Asks whichever process runs the job to stop it. */
  requestCancel(id: string): Promise<void>;
  onCancelRequest(listener: (id: string) => void): () => void;

  close(): Promise<void>;
}

/** The shared job store cannot be reached (Redis down): the request may be retried later (HTTP 503). */
export class BackendUnavailableError extends Error {
  readonly retryAfterS = 5;
  constructor(message: string) {
    super(message);
    this.name = 'BackendUnavailableError';
  }
}
