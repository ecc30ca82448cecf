// The job queue: this process's worker (one job at a time per device) over a JobBackend that holds every
// job, with cancellation, per-job and server timeouts, crash recovery, retries, retention cleanup, webhooks
// and live progress/preview events. This is the programmatic API every HTTP surface (native and compat)
// uses: submit / get / list / waitFor / cancel / retry / events. Everything a client can ask about a job is
// read from the backend, so another process sharing the backend sees the same; only the job this process is
// running (its abort controller and timers) is local.
import { randomUUID } from 'node:crypto';
import { KilnInputError, ModelFileError } from '../engine/index.ts';
import type { ImageStore } from '../storage/image-store.ts';
import { diskFullMessage, isDiskFull } from '../storage/faults.ts';
import type { FinalState, JobBackend, JobFilter, NewJob } from './backend.ts';
import type { QueueConfig } from './config.ts';
import { FINAL_STATES } from './job.ts';
import type { Job, JobError, JobEvent, JobPreview, JobResult, JobState, LiveProgress } from './job.ts';
import { imageCount, SpecError } from './job-spec.ts';
import type { JobSpec } from './job-spec.ts';
import { runsBefore } from './fairness.ts';
import type { JobRunner } from './executor.ts';
import type { WebhookSender } from './webhooks.ts';
import { EngineCrashError } from './engine-process.ts';
import { BatchChunkError, chunkLink, planSplit, removeChunks, runSplit, type SplitPlan } from './batch-split.ts';
import { BuildLog } from './build-log.ts';

export class QueueFullError extends Error {
  constructor(
    readonly depth: number,
    readonly retryAfterS: number,
  ) {
    super(`the queue is full (${depth} jobs waiting); retry in about ${retryAfterS} s`);
    this.name = 'QueueFullError';
  }
}

export class QueueClosedError extends Error {
  constructor(message = 'the server is shutting down and accepts no new jobs') {
    super(message);
    this.name = 'QueueClosedError';
  }
}

type StopReason = 'cancel' | 'timeout' | 'shutdown';

/** The job this process is running. */
interface Running {
  job: Job;
  controller: AbortController;
  reason?: StopReason;
  /** The time limit that applies to this job, and whether it is the job's own or the server's. */
  timeout?: { ms: number; own: boolean };
  done: Promise<void>;
  live: LiveProgress;
  previewSeq: number;
  /** Progress writes and events in step order; the final state waits for them. */
  reporting: Promise<void>;
}

export interface QueueStats {
  /** Jobs finished since start, by final state. */
  finished: Record<FinalState, number>;
  /** Jobs put back in line by retry(). */
  retried: number;
  /** Sampling steps per second of the last successful job. */
  lastStepsPerSecond?: number;
}

export interface SubmitOptions {
  owner?: string;
  /** Surface data kept with the job (see Job.extra). */
  extra?: Record<string, unknown>;
  externalId?: string;
}

export interface JobQueueOptions {
  backend: JobBackend;
  run: JobRunner;
  config: QueueConfig;
  /** Where result and input files live, for retention cleanup. */
  storage?: ImageStore;
  /** Delivers each finished job to its spec's webhook. */
  webhooks?: WebhookSender;
  /**
   * Whether this process takes jobs from the backend and runs them (default true). An API node of a shared
   * (Redis) queue sets false: it queues, reads, cancels and streams events, and workers elsewhere run the jobs.
   */
  runsJobs?: boolean;
  /** Forcefully stops a generation that ignores abort (kills the engine process, which is then replaced). */
  hardStop?: () => Promise<void>;
  /** How long after an abort (cancel, timeout, shutdown) the runner may take before hardStop is used. */
  abortGraceMs?: number;
  now?: () => number;
  log?: { info: (o: object, msg: string) => void; warn: (o: object, msg: string) => void; error: (o: object, msg: string) => void };
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms).unref?.());
const isFinalEvent = (e: JobEvent) => e.type === 'succeeded' || e.type === 'failed' || e.type === 'cancelled';
const CANCELLED_BY_REQUEST: JobError = { code: 'input', message: 'cancelled by request' };
/** While the disk is full, claiming and recording are retried this often (the queue waits; nothing is dropped). */
const STORAGE_RETRY_MS = 1000;

export class JobQueue {
  private running?: Running;
  /** Split parents this process coordinates (batch-split.ts): they hold no engine slot, so chunks still run here. */
  private readonly coordinating = new Map<string, Running>();
  /** Set while this process is claiming its next job (stop() waits for it). */
  private claiming?: Promise<void>;
  /** Work arrived while a claim was in flight (which may have missed it): look again afterwards. */
  private lookAgain = false;
  private stopping = false;
  /** Callers of waitFor() still waiting; stop() answers them (their job is not final) with QueueClosedError. */
  private readonly waiters = new Set<() => void>();
  private started = false;
  private cleanupTimer?: NodeJS.Timeout;
  private unsubscribe: Array<() => void> = [];
  /** EWMA of milliseconds per (step x image x 512² pixels), for ETAs; undefined until a job finished. */
  private msPerUnit?: number;
  readonly stats: QueueStats = { finished: { succeeded: 0, failed: 0, cancelled: 0 }, retried: 0 };
  private readonly backend: JobBackend;
  private readonly now: () => number;

  constructor(private readonly opts: JobQueueOptions) {
    this.backend = opts.backend;
    this.now = opts.now ?? Date.now;
  }

  /** Recovers jobs a dead process left running, starts cleanup and begins work. */
  async start(): Promise<{ requeued: string[]; failed: string[] }> {
    if (this.started) return { requeued: [], failed: [] };
    this.started = true;
    const recovered = await this.recover();
    // Work submitted through another process sharing the backend wakes this worker too.
    this.unsubscribe.push(this.backend.subscribe('*', (e) => e.type === 'queued' && setImmediate(() => this.pump())));
    this.unsubscribe.push(
      this.backend.onCancelRequest((id) => {
        const r = this.localRun(id);
        if (r) this.abortRunning(r, 'cancel');
      }),
    );
    const interval = this.opts.config.cleanupIntervalMs;
    if (interval > 0) {
      // Jobs that expired while the server was down go at once, then on every interval.
      const clean = () => void this.cleanup().catch((e) => this.opts.log?.error({ err: e }, 'cleanup failed'));
      clean();
      this.cleanupTimer = setInterval(clean, interval);
      this.cleanupTimer.unref();
    }
    setImmediate(() => this.pump());
    return recovered;
  }

  private async recover(): Promise<{ requeued: string[]; failed: string[] }> {
    const { recoverRunning, maxAttempts } = this.opts.config;
    const out = { requeued: [] as string[], failed: [] as string[] };
    for (const job of await this.backend.interrupted()) {
      if (recoverRunning === 'requeue' && job.attempts < maxAttempts) {
        await this.backend.requeue(job.id, false);
        out.requeued.push(job.id);
      } else {
        const why =
          recoverRunning === 'requeue'
            ? `the server stopped while this job was running, and it already ran ${job.attempts} time(s) (limit ${maxAttempts}); it was not re-run`
            : 'the server stopped while this job was running; it was not re-run (recoverRunning = fail)';
        const done = await this.backend.finish(job.id, ['running'], 'failed', this.now(), { error: { code: 'interrupted', message: why } });
        if (done) await this.finalized(done);
        out.failed.push(job.id);
      }
    }
    if (out.requeued.length || out.failed.length) this.opts.log?.warn(out, 'recovered jobs interrupted by a restart');
    return out;
  }

  /** Adds a job. Throws QueueFullError (-> 429) or QueueClosedError (-> 503). */
  async submit(spec: JobSpec, opts: SubmitOptions = {}): Promise<Job> {
    if (this.stopping) throw new QueueClosedError();
    const depth = (await this.backend.counts()).queued;
    if (depth >= this.opts.config.maxQueued) throw new QueueFullError(depth, await this.retryAfterSeconds());
    const job = await this.backend.insert(this.newRecord(spec, opts));
    await this.backend.publish({ type: 'queued', job });
    setImmediate(() => this.pump());
    return job;
  }

  /**
   * Records a request that was refused before it could run as a failed job, so surfaces whose clients expect a
   * job id for every request (RunPod) can report it, retry it and deliver its webhook like any other.
   */
  async recordFailed(spec: JobSpec, error: JobError, opts: SubmitOptions = {}): Promise<Job> {
    const job = await this.backend.insert({ ...this.newRecord(spec, opts), failed: error });
    await this.finalized(job);
    return job;
  }

  private newRecord(spec: JobSpec, opts: SubmitOptions): NewJob {
    return { id: randomUUID(), owner: opts.owner ?? 'anonymous', spec, createdAt: this.now(), extra: opts.extra, externalId: opts.externalId };
  }

  /** The job with live progress, or undefined. */
  get(id: string): Promise<Job | undefined> {
    return this.backend.get(id);
  }

  /** The newest job submitted with this client-chosen id (see SubmitOptions.externalId), of `owner` if given. */
  findByExternalId(externalId: string, owner?: string): Promise<Job | undefined> {
    return this.backend.findByExternalId(externalId, owner);
  }

  /** The latest live preview of a running job; undefined when it is not running or has none yet. */
  preview(id: string): Promise<JobPreview | undefined> {
    return this.backend.getPreview(id);
  }

  /** Jobs, newest first; the chunks of split batches are not listed (their parent is). */
  async list(opts: Partial<JobFilter> = {}): Promise<Job[]> {
    return (await this.backend.list({ ...opts, limit: opts.limit ?? 50 })).filter((j) => !chunkLink(j));
  }

  counts(): Promise<Record<JobState, number>> {
    return this.backend.counts();
  }

  /** Merges surface data into the job's `extra` (see Job.extra). */
  updateExtra(id: string, patch: Record<string, unknown>): Promise<Job | undefined> {
    return this.backend.updateExtra(id, patch);
  }

  /** 0 = next to run; undefined unless queued. */
  async position(job: Job): Promise<number | undefined> {
    return job.state === 'queued' ? this.backend.queuedAhead(job) : undefined;
  }

  /** Seconds until the job is done (estimate), or undefined when there is no history to estimate from. */
  async etaSeconds(job: Job): Promise<number | undefined> {
    if (FINAL_STATES.has(job.state)) return 0;
    if (job.state === 'running') {
      const ms = this.runningEtaMs(job);
      return ms === undefined ? undefined : ms / 1000;
    }
    const own = this.estimateMs(job.spec);
    if (own === undefined) return undefined;
    let ahead = 0;
    for (const running of await this.backend.list({ state: 'running', limit: 100 })) ahead += this.runningEtaMs(running) ?? 0;
    for (const other of await this.backend.list({ state: 'queued', limit: 1000 })) if (runsBefore(other, job)) ahead += this.estimateMs(other.spec) ?? 0;
    return (ahead + own) / 1000;
  }

  private runningEtaMs(job: Job): number | undefined {
    const elapsed = this.now() - (job.startedAt ?? this.now());
    if (job.progress > 0.02) return Math.max(0, elapsed / job.progress - elapsed);
    const est = this.estimateMs(job.spec);
    return est === undefined ? undefined : Math.max(0, est - elapsed);
  }

  private units(spec: JobSpec): number {
    return spec.steps * imageCount(spec) * ((spec.width * spec.height) / (512 * 512));
  }

  private estimateMs(spec: JobSpec): number | undefined {
    return this.msPerUnit === undefined ? undefined : this.msPerUnit * this.units(spec);
  }

  private async retryAfterSeconds(): Promise<number> {
    const [running] = await this.backend.list({ state: 'running', limit: 1 });
    const ms = running ? this.runningEtaMs(running) : undefined;
    return Math.min(3600, Math.max(1, Math.ceil(ms === undefined ? 10 : ms / 1000)));
  }

  /**
   * Cancels a job. A queued job is cancelled at once; a running one is aborted and this resolves when the
   * engine has stopped (within one sampling step), wherever it runs. Finished jobs are returned unchanged.
   */
  async cancel(id: string): Promise<Job | undefined> {
    for (let attempt = 0; attempt < 3; attempt++) {
      const job = await this.get(id);
      if (!job) return undefined;
      if (job.state === 'queued') {
        const done = await this.backend.finish(id, ['queued'], 'cancelled', this.now(), { error: CANCELLED_BY_REQUEST });
        if (!done) continue; // claimed by a worker in the meantime: cancel it as a running job
        this.opts.log?.info({ ...jobLogFields(done), while: 'queued' }, 'job cancelled');
        await this.finalized(done);
        return done;
      }
      if (job.state !== 'running') return job;
      const r = this.localRun(id);
      if (r) {
        this.abortRunning(r, 'cancel');
        await r.done;
        return this.get(id);
      }
      await this.backend.requestCancel(id);
      return this.waitFor(id, (this.opts.abortGraceMs ?? 10_000) + 5_000);
    }
    return this.get(id);
  }

  /**
   * Runs a failed job again under the same id (RunPod's /retry), optionally with a new spec. Returns
   * undefined when the job does not exist or is not failed.
   */
  async retry(id: string, spec?: JobSpec): Promise<Job | undefined> {
    if (this.stopping) throw new QueueClosedError();
    const depth = (await this.backend.counts()).queued;
    if (depth >= this.opts.config.maxQueued) throw new QueueFullError(depth, await this.retryAfterSeconds());
    const job = await this.backend.retry(id, spec);
    if (!job) return undefined;
    this.stats.retried++;
    await this.backend.publish({ type: 'queued', job });
    setImmediate(() => this.pump());
    return job;
  }

  /** Subscribes to one job's events (or every job's with id '*'); returns the unsubscribe function. */
  events(id: string, listener: (e: JobEvent) => void): () => void {
    return this.backend.subscribe(id, listener);
  }

  /**
   * Resolves with the job once it is final, or with its current state after timeoutMs. Rejects with
   * QueueClosedError when the server shuts down first (the job is then queued for the next start).
   */
  waitFor(id: string, timeoutMs: number): Promise<Job | undefined> {
    return new Promise((resolve, reject) => {
      let settled = false;
      const finish = () => {
        settled = true;
        clearTimeout(timer);
        off();
        this.waiters.delete(closed);
      };
      const settle = (job: Promise<Job | undefined> | Job | undefined) => {
        if (settled) return;
        finish();
        resolve(job);
      };
      const closed = () => {
        if (settled) return;
        finish();
        reject(new QueueClosedError(`the server is shutting down; job ${id} is not finished and stays queued for its next start (GET /v1/jobs/${id})`));
      };
      this.waiters.add(closed);
      const off = this.events(id, (e) => isFinalEvent(e) && settle(e.job));
      const timer = setTimeout(() => settle(this.get(id)), timeoutMs);
      // Read after subscribing, so a job that ends in between is not missed.
      void this.get(id).then((job) => (!job || FINAL_STATES.has(job.state)) && settle(job));
    });
  }

  /** Whether stop() has begun (no new jobs are taken). */
  get isStopping(): boolean {
    return this.stopping;
  }

  /** Whether this process is running a job now. */
  get busy(): boolean {
    return this.running !== undefined;
  }

  /** The id of the job this process is running, if any. */
  get runningJobId(): string | undefined {
    return this.running?.job.id;
  }

  private pump(): void {
    if (this.claiming) this.lookAgain = true;
    if (this.claiming || this.running || this.stopping || !this.started || this.opts.runsJobs === false) return;
    this.claiming = this.claimAndRun()
      .catch((e) => {
        this.opts.log?.error({ err: e }, 'could not take the next job');
        // A full disk clears when space is freed: look again, so queued jobs resume without a new submit.
        if (isDiskFull(e)) sleep(STORAGE_RETRY_MS).then(() => this.pump());
      })
      .finally(() => {
        this.claiming = undefined;
        if (this.lookAgain) {
          this.lookAgain = false;
          setImmediate(() => this.pump());
        }
      });
  }

  private async claimAndRun(): Promise<void> {
    const job = await this.backend.claimNext(() => this.now());
    if (!job) return;
    if (await this.orphanChunk(job)) return;
    const split = this.opts.config.splitImages && this.opts.storage ? planSplit(job, this.opts.config.splitImages) : undefined;
    const controller = new AbortController();
    const running: Running = {
      job,
      controller,
      timeout: this.timeoutOf(job.spec),
      done: Promise.resolve(),
      live: { progress: 0, step: 0, totalSteps: 0 },
      previewSeq: 0,
      reporting: Promise.resolve(),
    };
    if (split) this.coordinating.set(job.id, running);
    else this.running = running;
    if (this.stopping) {
      // stop() began while the job was being claimed: put it back untouched.
      if (split) this.coordinating.delete(job.id);
      else this.running = undefined;
      await this.backend.requeue(job.id, true);
      return;
    }
    const timer = running.timeout ? setTimeout(() => this.abortRunning(running, 'timeout'), running.timeout.ms) : undefined;
    await this.backend.publish({ type: 'started', job: { ...job } });
    this.opts.log?.info({ ...jobLogFields(job), attempt: job.attempts }, 'job started');

    const log = this.opts.log;
    const builds = log ? new BuildLog((o, m) => log.info(o, m)) : undefined;
    let hardStopTimer: NodeJS.Timeout | undefined;
    controller.signal.addEventListener('abort', () => {
      // A coordinator runs nothing on the engine: killing the engine would stop another job.
      if (!this.opts.hardStop || split) return;
      hardStopTimer = setTimeout(() => {
        this.opts.log?.warn({ jobId: job.id }, 'engine ignored abort; stopping it');
        void this.opts.hardStop!();
      }, this.opts.abortGraceMs ?? 10_000);
    });

    // A coordinator holds no engine slot, so look for the next job at once: a parent taken over from a dead
    // coordinator finds its chunks already queued, and no 'queued' event would come to wake this process.
    if (split) this.lookAgain = true;
    // A split parent's runner coordinates its chunks (batch-split.ts); any other job runs on the engine.
    const runner: { run: JobRunner } = split ? { run: (j, ctx) => runSplit(j, split, ctx, this.splitDeps()) } : this.opts;
    running.done = runner
      .run(job, {
        signal: controller.signal,
        onProgress: (e) => {
          if (e.build) builds?.report({ jobId: job.id, model: job.spec.origin?.model ?? job.spec.model ?? 'default' }, e.build);
          // A graph build (a model's first use on this machine) is the job's 'loading' phase.
          const phase = e.build ? 'loading' : e.phase;
          const live: LiveProgress = { progress: Math.max(0, Math.min(1, e.fraction)), phase, step: e.step, totalSteps: e.totalSteps };
          running.live = live;
          const preview: JobPreview | undefined = e.preview ? { image: e.preview, step: e.step, seq: ++running.previewSeq } : undefined;
          const snapshot: Job = { ...job, ...live };
          running.reporting = running.reporting
            .then(async () => {
              await this.backend.setProgress(job.id, live);
              if (preview) await this.backend.setPreview(job.id, preview);
              await this.backend.publish({
                type: 'progress',
                job: snapshot,
                phase,
                step: e.step,
                totalSteps: e.totalSteps,
                progress: live.progress,
                ...(preview ? { preview } : {}),
              });
            })
            .catch((err) => this.opts.log?.warn({ err, jobId: job.id }, 'progress report failed'));
        },
      })
      .then(
        async (result) => {
          await running.reporting;
          return this.untilRecorded(job.id, () => (running.reason ? this.onStopped(running) : this.onSuccess(running, result)));
        },
        async (err) => {
          await running.reporting;
          return this.untilRecorded(job.id, () => (running.reason ? this.onStopped(running) : this.onFailure(running, err)));
        },
      )
      .catch((e) => this.opts.log?.error({ err: e, jobId: job.id }, 'job bookkeeping failed'))
      .finally(() => {
        clearTimeout(timer);
        clearTimeout(hardStopTimer);
        if (this.running === running) this.running = undefined;
        if (split) {
          if (this.coordinating.get(job.id) === running) this.coordinating.delete(job.id);
          if (running.reason !== 'shutdown') void this.afterSplit(job.id, split);
        }
        setImmediate(() => this.pump());
      });
  }

  /** The job this process runs or coordinates, by id. */
  private localRun(id: string): Running | undefined {
    return this.running?.job.id === id ? this.running : this.coordinating.get(id);
  }

  private splitDeps() {
    return {
      backend: this.backend,
      storage: this.opts.storage!,
      now: this.now,
      cancel: (id: string) => this.cancel(id),
      wake: () => setImmediate(() => this.pump()),
    };
  }

  /** A split parent ended (not handed back): once it is final, its chunks and their files go. */
  private async afterSplit(id: string, plan: SplitPlan): Promise<void> {
    const parent = await this.backend.get(id).catch(() => undefined);
    if (!parent || !FINAL_STATES.has(parent.state)) return;
    await removeChunks(plan, this.backend, this.opts.storage).catch((e) =>
      this.opts.log?.warn({ err: e, jobId: id }, 'could not remove the chunks of a split batch'),
    );
  }

  /** A chunk whose batch already ended (cancelled or failed while its coordinator was gone) is not run: it is cancelled. */
  private async orphanChunk(job: Job): Promise<boolean> {
    const link = chunkLink(job);
    if (!link) return false;
    const parent = await this.backend.get(link.parent);
    if (parent && !FINAL_STATES.has(parent.state)) return false;
    const done = await this.backend.finish(job.id, ['running'], 'cancelled', this.now(), {
      error: { code: 'input', message: `its batch (job ${link.parent}) ended before this chunk ran` },
    });
    if (done) await this.finalized(done);
    return true;
  }

  /**
   * Records a job's end. While the disk is full the database cannot take even that, so it is retried (the job
   * stays this process's running job, which also holds the next claim back) until space is freed or the queue
   * stops; a job left running by a stop is recovered at the next start like any interrupted one.
   */
  private async untilRecorded(jobId: string, record: () => Promise<void>): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await record();
      } catch (e) {
        if (!isDiskFull(e) || this.stopping) throw e;
        if (attempt === 1) this.opts.log?.error({ err: e, jobId }, "disk full: the job's end is recorded once space is freed");
        await sleep(STORAGE_RETRY_MS);
      }
    }
  }

  /** The job's own limit (JobSpec.timeoutMs) or the server's, whichever is shorter; undefined = none. */
  private timeoutOf(spec: JobSpec): Running['timeout'] {
    const server = this.opts.config.jobTimeoutMs > 0 ? this.opts.config.jobTimeoutMs : undefined;
    const own = spec.timeoutMs !== undefined && spec.timeoutMs > 0 ? spec.timeoutMs : undefined;
    if (own !== undefined && (server === undefined || own < server)) return { ms: own, own: true };
    return server === undefined ? undefined : { ms: server, own: false };
  }

  private abortRunning(r: Running, reason: StopReason): void {
    r.reason ??= reason;
    r.controller.abort(new Error(reason));
  }

  /** Announces a final job (event, stats, webhook). */
  private async finalized(job: Job): Promise<void> {
    if (job.state === 'succeeded' || job.state === 'failed' || job.state === 'cancelled') {
      this.stats.finished[job.state]++;
      // Cleared before the final event goes out, so listeners that call get() see the stored final state.
      if (this.running?.job.id === job.id) this.running = undefined;
      this.coordinating.delete(job.id);
      this.opts.webhooks?.deliver(job);
      await this.backend.publish({ type: job.state, job });
    }
  }

  private async onSuccess(running: Running, result: JobResult): Promise<void> {
    const { job, live } = running;
    const now = this.now();
    const done = await this.backend.finish(job.id, ['running'], 'succeeded', now, {
      result,
      progress: { progress: 1, step: live.step, totalSteps: live.totalSteps },
    });
    if (!done) return;
    const ms = now - (job.startedAt ?? now);
    const units = this.units(job.spec);
    if (units > 0) this.msPerUnit = this.msPerUnit === undefined ? ms / units : 0.7 * this.msPerUnit + 0.3 * (ms / units);
    if (result.timings.sampleMs > 0 && live.totalSteps > 0) this.stats.lastStepsPerSecond = live.totalSteps / (result.timings.sampleMs / 1000);
    this.opts.log?.info({ ...jobLogFields(done), ms, images: result.images.length }, 'job succeeded');
    await this.finalized(done);
  }

  private async onFailure(running: Running, err: unknown): Promise<void> {
    if (err instanceof EngineCrashError) return this.onEngineCrash(running, err);
    const error = classifyError(err);
    const done = await this.backend.finish(running.job.id, ['running'], 'failed', this.now(), { error, progress: running.live });
    if (!done) return;
    const level = error.code === 'internal' ? 'error' : 'info';
    this.opts.log?.[level](
      { ...jobLogFields(done), code: error.code, reason: error.message, ...(level === 'error' ? { stack: (err as Error)?.stack } : {}) },
      'job failed',
    );
    await this.finalized(done);
  }

  /**
   * The engine process died under this job (a native crash, an out-of-memory kill, a kill from outside). One
   * crash is not taken as the job's fault (the machine may have been short of memory, or someone killed the
   * process), so the job is queued again while it has started fewer than maxAttempts runs; a job that keeps
   * crashing the engine fails instead of taking it down forever. Only this job is affected: a fresh engine
   * process serves the next one.
   */
  private async onEngineCrash(running: Running, err: EngineCrashError): Promise<void> {
    const { job, live } = running;
    const { maxAttempts } = this.opts.config;
    if (job.attempts < maxAttempts && !this.stopping) {
      if (this.running === running) this.running = undefined;
      const queued = await this.backend.requeue(job.id, false);
      this.opts.log?.warn({ jobId: job.id, attempt: job.attempts, maxAttempts, reason: err.message }, 'engine crashed; job re-queued');
      if (queued) await this.backend.publish({ type: 'queued', job: queued });
      return;
    }
    const message =
      job.attempts < maxAttempts
        ? `${err.message} while running this job, during shutdown; it was not re-run`
        : `${err.message} while running this job, on run ${job.attempts} of at most ${maxAttempts} (--max-attempts); it was not re-run`;
    const done = await this.backend.finish(job.id, ['running'], 'failed', this.now(), { error: { code: 'interrupted', message }, progress: live });
    this.opts.log?.error({ ...jobLogFields(done ?? job), reason: err.message }, 'engine crashed; job failed');
    if (done) await this.finalized(done);
  }

  private async onStopped(running: Running): Promise<void> {
    const { job, reason, live } = running;
    if (reason === 'shutdown') {
      if (this.running === running) this.running = undefined;
      const queued = await this.backend.requeue(job.id, true);
      this.opts.log?.info({ jobId: job.id }, 'job re-queued for shutdown');
      if (queued) await this.backend.publish({ type: 'queued', job: queued });
      return;
    }
    if (reason === 'timeout') {
      const t = running.timeout!;
      const s = t.ms >= 10_000 ? Math.round(t.ms / 1000) : Number((t.ms / 1000).toFixed(2));
      const message = t.own
        ? `the job ran longer than its own ${s} s execution timeout and was stopped`
        : `the job ran longer than the ${s} s limit and was stopped`;
      const done = await this.backend.finish(job.id, ['running'], 'failed', this.now(), { error: { code: 'timeout', message }, progress: live });
      if (done) this.opts.log?.info({ ...jobLogFields(done), limitMs: t.ms, own: t.own }, 'job timed out');
      if (done) await this.finalized(done);
      return;
    }
    const done = await this.backend.finish(job.id, ['running'], 'cancelled', this.now(), { error: CANCELLED_BY_REQUEST, progress: live });
    if (done) this.opts.log?.info({ ...jobLogFields(done), while: 'running', step: live.step, totalSteps: live.totalSteps }, 'job cancelled');
    if (done) await this.finalized(done);
  }

  /** Deletes finished jobs older than the retention period, and their files. Returns how many. */
  async cleanup(): Promise<number> {
    const cutoff = this.now() - this.opts.config.retentionMs;
    let total = 0;
    for (;;) {
      const expired = await this.backend.finishedBefore(cutoff, 500);
      if (expired.length === 0) return total;
      for (const job of expired) {
        const names = [
          ...(job.result?.images.flatMap((i) => (i.preview ? [i.name, i.preview] : [i.name])) ?? []),
          ...(job.spec.initImage ? [job.spec.initImage] : []),
          ...(job.spec.mask?.image ? [job.spec.mask.image] : []),
        ];
        for (const n of names) await this.opts.storage?.remove(n).catch(() => undefined);
      }
      await this.backend.delete(expired.map((j) => j.id));
      total += expired.length;
    }
  }

  /** Cancels every queued job (admin). Returns how many. */
  async purgeQueued(): Promise<number> {
    let removed = 0;
    for (const job of await this.backend.list({ state: 'queued', limit: 100_000 })) {
      const done = await this.backend.finish(job.id, ['queued'], 'cancelled', this.now(), {
        error: { code: 'input', message: 'removed from the queue by an administrator' },
      });
      if (!done) continue;
      this.opts.log?.info({ ...jobLogFields(done), while: 'queued', by: 'purge' }, 'job cancelled');
      await this.finalized(done);
      removed++;
    }
    return removed;
  }

  /**
   * Stops taking jobs; lets the running job finish for up to graceMs, then aborts it and puts it back in the
   * queue so the next start runs it again (an engine that ignores the abort is stopped after abortGraceMs).
   * Callers still waiting for a job (synchronous routes) are then answered with QueueClosedError, so no
   * client holds the shutdown past the grace. The backend stays open (the caller closes it).
   */
  async stop(graceMs = this.opts.config.shutdownGraceMs): Promise<void> {
    this.stopping = true;
    clearInterval(this.cleanupTimer);
    for (const off of this.unsubscribe.splice(0)) off();
    await this.claiming;
    // Coordinators hand their parents back at once (their chunks run on; the next coordinator picks them up).
    const coordinators = [...this.coordinating.values()];
    for (const c of coordinators) this.abortRunning(c, 'shutdown');
    await Promise.all(coordinators.map((c) => c.done));
    const r = this.running;
    if (r) {
      await Promise.race([r.done, sleep(graceMs)]);
      if (this.running === r) {
        this.abortRunning(r, 'shutdown');
        await r.done;
      }
    }
    for (const answer of [...this.waiters]) answer();
  }
}

/** Engine / executor errors -> what the client is told. */
export function classifyError(err: unknown): JobError {
  if (err instanceof BatchChunkError) return err.jobError;
  if (err instanceof SpecError) return { code: 'input', message: err.message, field: err.field };
  if (err instanceof KilnInputError) return { code: 'input', message: err.message, field: err.field };
  if (err instanceof ModelFileError) return { code: 'model', message: err.message };
  if (isDiskFull(err)) return { code: 'storage', message: diskFullMessage(err, 'the result could not be stored') };
  const e = err as Error;
  return { code: 'internal', message: e?.message ? `generation failed: ${e.message}` : 'generation failed' };
}

/**
 * What every job log line says: the job, its model and API surface (recorded at submission), and its durations so
 * far: queue wait (created -> started) and run time (started -> finished), in ms.
 */
export function jobLogFields(job: Job): Record<string, unknown> {
  const origin = job.spec.origin;
  return {
    jobId: job.id,
    kind: job.spec.kind,
    model: origin?.model ?? job.spec.model ?? 'default',
    surface: origin?.surface ?? 'unknown',
    ...(origin?.preset ? { preset: origin.preset } : {}),
    queueWaitMs: Math.max(0, (job.startedAt ?? job.finishedAt ?? job.createdAt) - job.createdAt),
    ...(job.startedAt !== undefined ? { runMs: Math.max(0, (job.finishedAt ?? Date.now()) - job.startedAt) } : {}),
  };
}
