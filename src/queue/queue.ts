// The embedded job queue: one job at a time per device, persisted in SQLite, with cancellation, timeouts,
// crash recovery, retention cleanup and live progress events. This is the programmatic API every HTTP
// surface (native and compat) uses: submit / get / waitFor / cancel / events.
import { EventEmitter } from 'node:events';
import { randomUUID } from 'node:crypto';
import { KilnInputError, ModelFileError } from '../engine/index.ts';
import type { QueueConfig } from '../server/config.ts';
import type { LocalStorage } from '../storage/local.ts';
import { FINAL_STATES } from './job.ts';
import type { Job, JobError, JobEvent, JobPreview, JobResult, JobState } from './job.ts';
import { imageCount, SpecError } from './job-spec.ts';
import type { JobSpec } from './job-spec.ts';
import type { JobStore } from './store.ts';
import type { JobRunner } from './executor.ts';

export class QueueFullError extends Error {
  constructor(readonly depth: number, readonly retryAfterS: number) {
    super(`the queue is full (${depth} jobs waiting); retry in about ${retryAfterS} s`);
    this.name = 'QueueFullError';
  }
}

export class QueueClosedError extends Error {
  constructor() {
    super('the server is shutting down and accepts no new jobs');
    this.name = 'QueueClosedError';
  }
}

type StopReason = 'cancel' | 'timeout' | 'shutdown';

interface Running {
  job: Job;
  controller: AbortController;
  reason?: StopReason;
  done: Promise<void>;
  /** Only the latest preview is kept, and only while the job runs. */
  preview?: JobPreview;
}

export interface QueueStats {
  /** Jobs finished since start, by final state. */
  finished: Record<'succeeded' | 'failed' | 'cancelled', number>;
  /** Sampling steps per second of the last successful job. */
  lastStepsPerSecond?: number;
}

export interface JobQueueOptions {
  store: JobStore;
  run: JobRunner;
  config: QueueConfig;
  /** Where result and input files live, for retention cleanup. */
  storage?: LocalStorage;
  /** Forcefully stops a generation that ignores abort (e.g. terminates the engine thread). */
  hardStop?: () => Promise<void>;
  /** How long after an abort the runner may take before hardStop is used. */
  abortGraceMs?: number;
  now?: () => number;
  log?: { info: (o: object, msg: string) => void; warn: (o: object, msg: string) => void; error: (o: object, msg: string) => void };
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms).unref?.());

export class JobQueue {
  private readonly emitter = new EventEmitter();
  private running?: Running;
  private stopping = false;
  private started = false;
  private cleanupTimer?: NodeJS.Timeout;
  /** EWMA of milliseconds per (step x image x 512² pixels), for ETAs; undefined until a job finished. */
  private msPerUnit?: number;
  readonly stats: QueueStats = { finished: { succeeded: 0, failed: 0, cancelled: 0 } };
  private readonly now: () => number;

  constructor(private readonly opts: JobQueueOptions) {
    this.emitter.setMaxListeners(0);
    this.now = opts.now ?? Date.now;
  }

  /** Recovers jobs a dead process left running, starts cleanup and begins work. */
  start(): { requeued: string[]; failed: string[] } {
    if (this.started) return { requeued: [], failed: [] };
    this.started = true;
    const recovered = this.recover();
    const interval = this.opts.config.cleanupIntervalMs;
    if (interval > 0) {
      // Jobs that expired while the server was down go at once, then on every interval.
      void this.cleanup().catch((e) => this.opts.log?.error({ err: e }, 'cleanup failed'));
      this.cleanupTimer = setInterval(() => void this.cleanup().catch((e) => this.opts.log?.error({ err: e }, 'cleanup failed')), interval);
      this.cleanupTimer.unref();
    }
    setImmediate(() => this.pump());
    return recovered;
  }

  private recover(): { requeued: string[]; failed: string[] } {
    const { recoverRunning, maxAttempts } = this.opts.config;
    const out = { requeued: [] as string[], failed: [] as string[] };
    for (const job of this.opts.store.running()) {
      if (recoverRunning === 'requeue' && job.attempts < maxAttempts) {
        this.opts.store.requeue(job.id, false);
        out.requeued.push(job.id);
      } else {
        const why =
          recoverRunning === 'requeue'
            ? `the server stopped while this job was running, and it already ran ${job.attempts} time(s) (limit ${maxAttempts}); it was not re-run`
            : 'the server stopped while this job was running; it was not re-run (recoverRunning = fail)';
        this.opts.store.finish(job.id, 'failed', this.now(), { error: { code: 'interrupted', message: why } });
        out.failed.push(job.id);
      }
    }
    if (out.requeued.length || out.failed.length) this.opts.log?.warn(out, 'recovered jobs interrupted by a restart');
    return out;
  }

  /** Adds a job. Throws QueueFullError (-> 429) or QueueClosedError (-> 503). */
  submit(spec: JobSpec, opts: { owner?: string } = {}): Job {
    if (this.stopping) throw new QueueClosedError();
    const depth = this.opts.store.countByState().queued;
    if (depth >= this.opts.config.maxQueued) throw new QueueFullError(depth, this.retryAfterSeconds());
    const job = this.opts.store.insert(randomUUID(), opts.owner ?? 'anonymous', spec, this.now());
    this.emit({ type: 'queued', job });
    setImmediate(() => this.pump());
    return job;
  }

  /** The job with live progress, or undefined. */
  get(id: string): Job | undefined {
    if (this.running?.job.id === id) return { ...this.running.job };
    return this.opts.store.get(id);
  }

  /** The latest live preview of a running job; undefined when it is not running or has none yet. */
  preview(id: string): JobPreview | undefined {
    return this.running?.job.id === id ? this.running.preview : undefined;
  }

  list(opts: { owner?: string; state?: JobState; limit?: number; beforeSeq?: number } = {}): Job[] {
    return this.opts.store.list({ ...opts, limit: opts.limit ?? 50 }).map((j) => (this.running?.job.id === j.id ? { ...this.running.job } : j));
  }

  /** 0 = next to run; undefined unless queued. */
  position(job: Job): number | undefined {
    return job.state === 'queued' ? this.opts.store.queuedBefore(job.seq) : undefined;
  }

  /** Seconds until the job is done (estimate), or undefined when there is no history to estimate from. */
  etaSeconds(job: Job): number | undefined {
    if (FINAL_STATES.has(job.state)) return 0;
    const now = this.now();
    if (job.state === 'running' && job.startedAt !== undefined) {
      const elapsed = now - job.startedAt;
      if (job.progress > 0.02) return Math.max(0, (elapsed / job.progress - elapsed) / 1000);
      const est = this.estimateMs(job.spec);
      return est === undefined ? undefined : Math.max(0, (est - elapsed) / 1000);
    }
    const own = this.estimateMs(job.spec);
    if (own === undefined) return undefined;
    let ahead = 0;
    if (this.running) ahead += (this.etaSeconds(this.running.job) ?? 0) * 1000;
    for (const other of this.opts.store.list({ state: 'queued', limit: 1000 })) {
      if (other.seq < job.seq) ahead += this.estimateMs(other.spec) ?? 0;
    }
    return (ahead + own) / 1000;
  }

  private units(spec: JobSpec): number {
    return spec.steps * imageCount(spec) * ((spec.width * spec.height) / (512 * 512));
  }

  private estimateMs(spec: JobSpec): number | undefined {
    return this.msPerUnit === undefined ? undefined : this.msPerUnit * this.units(spec);
  }

  private retryAfterSeconds(): number {
    const running = this.running ? this.etaSeconds(this.running.job) : undefined;
    return Math.min(3600, Math.max(1, Math.ceil(running ?? 10)));
  }

  /**
   * Cancels a job. A queued job is cancelled at once; a running one is aborted and this resolves when the
   * engine has stopped (within one sampling step). Finished jobs are returned unchanged.
   */
  async cancel(id: string): Promise<Job | undefined> {
    const job = this.get(id);
    if (!job) return undefined;
    if (job.state === 'queued') {
      this.opts.store.finish(id, 'cancelled', this.now(), { error: { code: 'input', message: 'cancelled by request' } });
      const done = this.opts.store.get(id)!;
      this.stats.finished.cancelled++;
      this.emit({ type: 'cancelled', job: done });
      return done;
    }
    if (job.state === 'running' && this.running?.job.id === id) {
      const r = this.running;
      r.reason ??= 'cancel';
      r.controller.abort(new Error('cancelled'));
      await r.done;
      return this.get(id);
    }
    return job;
  }

  /** Subscribes to one job's events (or every job's with id '*'); returns the unsubscribe function. */
  events(id: string, listener: (e: JobEvent) => void): () => void {
    const key = `job:${id}`;
    this.emitter.on(key, listener);
    return () => this.emitter.off(key, listener);
  }

  /** Resolves with the job once it is final, or with its current state after timeoutMs. */
  waitFor(id: string, timeoutMs: number): Promise<Job | undefined> {
    const job = this.get(id);
    if (!job || FINAL_STATES.has(job.state)) return Promise.resolve(job);
    return new Promise((resolve) => {
      const finish = () => {
        clearTimeout(timer);
        off();
        resolve(this.get(id));
      };
      const timer = setTimeout(finish, timeoutMs);
      const off = this.events(id, (e) => {
        if (e.type === 'succeeded' || e.type === 'failed' || e.type === 'cancelled') finish();
      });
    });
  }

  counts(): Record<JobState, number> {
    return this.opts.store.countByState();
  }

  get busy(): boolean {
    return this.running !== undefined;
  }

  private emit(e: JobEvent): void {
    this.emitter.emit(`job:${e.job.id}`, e);
    this.emitter.emit('job:*', e);
  }

  private pump(): void {
    if (this.running || this.stopping || !this.started) return;
    const next = this.opts.store.nextQueued();
    if (!next) return;
    this.opts.store.markRunning(next.id, this.now());
    const job = this.opts.store.get(next.id)!;
    const controller = new AbortController();
    const running: Running = { job, controller, done: Promise.resolve() };
    this.running = running;
    const timeoutMs = this.opts.config.jobTimeoutMs;
    const timer =
      timeoutMs > 0
        ? setTimeout(() => {
            running.reason ??= 'timeout';
            controller.abort(new Error('timeout'));
          }, timeoutMs)
        : undefined;
    this.emit({ type: 'started', job: { ...job } });
    this.opts.log?.info({ jobId: job.id, attempt: job.attempts }, 'job started');

    let hardStopTimer: NodeJS.Timeout | undefined;
    controller.signal.addEventListener('abort', () => {
      if (!this.opts.hardStop) return;
      hardStopTimer = setTimeout(() => {
        this.opts.log?.warn({ jobId: job.id }, 'engine ignored abort; stopping it');
        void this.opts.hardStop!();
      }, this.opts.abortGraceMs ?? 10_000);
    });

    running.done = this.opts
      .run(job, {
        signal: controller.signal,
        onProgress: (e) => {
          job.progress = Math.max(0, Math.min(1, e.fraction));
          job.phase = e.phase;
          job.step = e.step;
          job.totalSteps = e.totalSteps;
          let preview: JobPreview | undefined;
          if (e.preview) {
            preview = { image: e.preview, step: e.step, seq: (running.preview?.seq ?? 0) + 1 };
            running.preview = preview;
          }
          this.emit({ type: 'progress', job: { ...job }, phase: e.phase, step: e.step, totalSteps: e.totalSteps, progress: job.progress, ...(preview ? { preview } : {}) });
        },
      })
      .then(
        (result) => (running.reason ? this.onStopped(running, undefined) : this.onSuccess(job, result)),
        (err) => (running.reason ? this.onStopped(running, err) : this.onFailure(job, err)),
      )
      .catch((e) => this.opts.log?.error({ err: e, jobId: job.id }, 'job bookkeeping failed'))
      .finally(() => {
        clearTimeout(timer);
        clearTimeout(hardStopTimer);
        if (this.running === running) this.running = undefined;
        setImmediate(() => this.pump());
      });
  }

  private release(job: Job): void {
    // Cleared before the final event goes out, so listeners that call get() see the stored final state.
    if (this.running?.job.id === job.id) this.running = undefined;
  }

  private onSuccess(job: Job, result: JobResult): void {
    this.release(job);
    const now = this.now();
    this.opts.store.finish(job.id, 'succeeded', now, { result, progress: { fraction: 1, step: job.step, totalSteps: job.totalSteps } });
    const ms = now - (job.startedAt ?? now);
    const units = this.units(job.spec);
    if (units > 0) this.msPerUnit = this.msPerUnit === undefined ? ms / units : 0.7 * this.msPerUnit + 0.3 * (ms / units);
    this.stats.finished.succeeded++;
    if (result.timings.sampleMs > 0 && job.totalSteps > 0) this.stats.lastStepsPerSecond = job.totalSteps / (result.timings.sampleMs / 1000);
    const done = this.opts.store.get(job.id)!;
    this.opts.log?.info({ jobId: job.id, ms, images: result.images.length }, 'job succeeded');
    this.emit({ type: 'succeeded', job: done });
  }

  private onFailure(job: Job, err: unknown): void {
    this.release(job);
    const error = classifyError(err);
    this.opts.store.finish(job.id, 'failed', this.now(), { error, progress: snapshot(job) });
    this.stats.finished.failed++;
    const done = this.opts.store.get(job.id)!;
    const level = error.code === 'internal' ? 'error' : 'info';
    this.opts.log?.[level]({ jobId: job.id, code: error.code, reason: error.message, ...(level === 'error' ? { stack: (err as Error)?.stack } : {}) }, 'job failed');
    this.emit({ type: 'failed', job: done });
  }

  private onStopped(running: Running, _err: unknown): void {
    const { job, reason } = running;
    this.release(job);
    if (reason === 'shutdown') {
      this.opts.store.requeue(job.id, true);
      this.opts.log?.info({ jobId: job.id }, 'job re-queued for shutdown');
      this.emit({ type: 'queued', job: this.opts.store.get(job.id)! });
      return;
    }
    if (reason === 'timeout') {
      const s = Math.round(this.opts.config.jobTimeoutMs / 1000);
      this.opts.store.finish(job.id, 'failed', this.now(), { error: { code: 'timeout', message: `the job ran longer than the ${s} s limit and was stopped` }, progress: snapshot(job) });
      this.stats.finished.failed++;
      this.emit({ type: 'failed', job: this.opts.store.get(job.id)! });
      return;
    }
    this.opts.store.finish(job.id, 'cancelled', this.now(), { error: { code: 'input', message: 'cancelled by request' }, progress: snapshot(job) });
    this.stats.finished.cancelled++;
    this.emit({ type: 'cancelled', job: this.opts.store.get(job.id)! });
  }

  /** Deletes finished jobs older than the retention period, and their files. Returns how many. */
  async cleanup(): Promise<number> {
    const cutoff = this.now() - this.opts.config.retentionMs;
    let total = 0;
    for (;;) {
      const expired = this.opts.store.finishedBefore(cutoff);
      if (expired.length === 0) return total;
      for (const job of expired) {
        const names = [...(job.result?.images.map((i) => i.name) ?? []), ...(job.spec.initImage ? [job.spec.initImage] : [])];
        for (const n of names) await this.opts.storage?.remove(n).catch(() => undefined);
      }
      this.opts.store.delete(expired.map((j) => j.id));
      total += expired.length;
    }
  }

  /** Cancels every queued job (admin). Returns how many. */
  purgeQueued(): number {
    const ids = this.opts.store.queuedIds();
    for (const id of ids) {
      this.opts.store.finish(id, 'cancelled', this.now(), { error: { code: 'input', message: 'removed from the queue by an administrator' } });
      this.stats.finished.cancelled++;
      this.emit({ type: 'cancelled', job: this.opts.store.get(id)! });
    }
    return ids.length;
  }

  /**
   * Stops taking jobs; lets the running job finish for up to graceMs, then aborts it and puts it back in the
   * queue so the next start runs it again. The store stays open (the caller closes it).
   */
  async stop(graceMs = this.opts.config.shutdownGraceMs): Promise<void> {
    this.stopping = true;
    clearInterval(this.cleanupTimer);
    const r = this.running;
    if (!r) return;
    await Promise.race([r.done, sleep(graceMs)]);
    if (this.running === r) {
      r.reason ??= 'shutdown';
      r.controller.abort(new Error('shutdown'));
      await r.done;
    }
  }
}

function snapshot(job: Job) {
  return { fraction: job.progress, step: job.step, totalSteps: job.totalSteps };
}

/** Engine / executor errors -> what the client is told. */
export function classifyError(err: unknown): JobError {
  if (err instanceof SpecError) return { code: 'input', message: err.message, field: err.field };
  if (err instanceof KilnInputError) return { code: 'input', message: err.message, field: err.field };
  if (err instanceof ModelFileError) return { code: 'model', message: err.message };
  const e = err as Error;
  return { code: 'internal', message: e?.message ? `generation failed: ${e.message}` : 'generation failed' };
}
