// Prometheus metrics with prom-client, on a registry of this server's own (several servers in one process, as in
// tests, never share counters): the default process metrics (CPU, memory, event loop lag, GC, handles) plus
// Kiln's: jobs finished by outcome and API surface, queue wait, per-phase time (load, encode, sampling, decode,
// upscale), model load time, queue depth, jobs by state, loaded models, and the older gauges kept by name.
import { AsyncLocalStorage } from 'node:async_hooks';
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';
import type { Job } from '../queue/job.ts';
import { JOB_STATES } from '../queue/job.ts';
import type { JobQueue } from '../queue/queue.ts';

const JOB_BUCKETS = [0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600];
const PHASE_BUCKETS = [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300];
const WAIT_BUCKETS = [0.01, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600];
const LOAD_BUCKETS = [0.1, 0.5, 1, 2, 5, 10, 20, 40, 60, 120, 300];
/** A job whose load phase took this long loaded a model (a model already in memory costs milliseconds). */
const MODEL_LOAD_MIN_MS = 500;
/** Jobs whose surface is remembered until they finish; beyond it the oldest are forgotten (labelled unknown). */
const MAX_TRACKED_JOBS = 10_000;

/** Which API a request came through, from its path (the same names as docs/compat.md). */
export function surfaceOf(url: string): string {
  const path = url.split('?')[0] ?? '';
  if (path.startsWith('/sdapi/')) return 'a1111';
  if (path.startsWith('/v1/images/')) return 'openai';
  if (/^\/(run|runsync|status|stream|cancel)\b/.test(path)) return 'runpod';
  if (path.startsWith('/v1/')) return 'native';
  if (/^\/(post_config|prompt2img|add_new_lora)\b/.test(path)) return 'seed-003';
  return 'other';
}

/** The surface of the request being handled, set by the onRequest hook (see health.ts), read at submit. */
export const requestSurface = new AsyncLocalStorage<string>();

export class Metrics {
  readonly registry = new Registry();
  private readonly surfaces = new Map<string, string>();
  private lastStepsPerSecond = 0;
  private readonly off: () => void;
  private readonly finished: Counter<'state' | 'outcome' | 'surface'>;
  private readonly generation: Histogram;
  private readonly queueWait: Histogram<'surface'>;
  private readonly phase: Histogram<'phase'>;
  readonly modelLoad: Histogram;

  constructor(
    private readonly queue: JobQueue,
    loadedModels: () => Array<{ name: string; family?: string }> = () => [],
  ) {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry });
    this.finished = new Counter({
      name: 'kiln_jobs_finished_total',
      help: 'Jobs finished since the server started, by final state (= outcome) and the API surface that submitted them.',
      labelNames: ['state', 'outcome', 'surface'],
      registers,
    });
    this.generation = new Histogram({
      name: 'kiln_generation_seconds',
      help: 'Wall time of successful jobs, from start to stored images.',
      buckets: JOB_BUCKETS,
      registers,
    });
    this.queueWait = new Histogram({
      name: 'kiln_queue_wait_seconds',
      help: 'Time jobs waited in the queue before they started.',
      labelNames: ['surface'],
      buckets: WAIT_BUCKETS,
      registers,
    });
    this.phase = new Histogram({
      name: 'kiln_phase_seconds',
      help: 'Time successful jobs spent in each phase: load (model), encode (prompts, init image), sampling, decode (VAE), upscale (upscale jobs).',
      labelNames: ['phase'],
      buckets: PHASE_BUCKETS,
      registers,
    });
    this.modelLoad = new Histogram({
      name: 'kiln_model_load_seconds',
      help: 'Time to load a model (graph build or cache, sessions): the default model at start, and jobs that had to load theirs.',
      buckets: LOAD_BUCKETS,
      registers,
    });
    const countsGauge = (name: string, help: string, labelNames: string[], read: (g: Gauge<string>) => Promise<void>) =>
      new Gauge({
        name,
        help,
        labelNames,
        registers,
        async collect() {
          await read(this);
        },
      });
    countsGauge('kiln_queue_depth', 'Jobs waiting to run.', [], async (g) => g.set((await queue.counts()).queued));
    countsGauge('kiln_jobs', 'Jobs in the database by state.', ['state'], async (g) => {
      const byState = await queue.counts();
      for (const s of JOB_STATES) g.set({ state: s }, byState[s]);
    });
    new Gauge({
      name: 'kiln_worker_busy',
      help: '1 while a generation is running.',
      registers,
      collect() {
        this.set(queue.busy ? 1 : 0);
      },
    });
    const self = this;
    new Gauge({
      name: 'kiln_steps_per_second',
      help: 'Sampling steps per second of the last successful job.',
      registers,
      collect() {
        this.set(self.lastStepsPerSecond);
      },
    });
    new Gauge({
      name: 'kiln_loaded_models',
      help: 'Models held in the engine memory now.',
      registers,
      collect() {
        this.set(loadedModels().length);
      },
    });
    new Gauge({
      name: 'kiln_loaded_model_info',
      help: 'One series per loaded model (value 1), labelled with its name and family.',
      labelNames: ['model', 'family'],
      registers,
      collect() {
        this.reset();
        for (const m of loadedModels()) this.set({ model: m.name, family: m.family ?? 'unknown' }, 1);
      },
    });
    new Gauge({
      name: 'kiln_process_resident_memory_bytes',
      help: 'Resident memory of the server process.',
      registers,
      collect() {
        this.set(process.memoryUsage().rss);
      },
    });
    this.off = queue.events('*', (e) => {
      if (e.type === 'started') this.onStarted(e.job);
      if (e.type === 'succeeded' || e.type === 'failed' || e.type === 'cancelled') this.onFinished(e.job, e.type);
    });
  }

  /** Remembers which surface submitted a job (submit runs inside the request's async context). */
  jobSubmitted(job: Job): void {
    this.surfaces.set(job.id, requestSurface.getStore() ?? 'internal');
    if (this.surfaces.size > MAX_TRACKED_JOBS) this.surfaces.delete(this.surfaces.keys().next().value!);
  }

  private surface(job: Job): string {
    return this.surfaces.get(job.id) ?? 'unknown';
  }

  private onStarted(job: Job): void {
    if (job.startedAt !== undefined && job.attempts <= 1)
      this.queueWait.observe({ surface: this.surface(job) }, Math.max(0, job.startedAt - job.createdAt) / 1000);
  }

  private onFinished(job: Job, outcome: 'succeeded' | 'failed' | 'cancelled'): void {
    this.finished.inc({ state: outcome, outcome, surface: this.surface(job) });
    this.surfaces.delete(job.id);
    if (outcome !== 'succeeded' || job.startedAt === undefined || job.finishedAt === undefined) return;
    this.generation.observe((job.finishedAt - job.startedAt) / 1000);
    const t = job.result?.timings;
    if (t) {
      if (job.spec.kind === 'upscale') this.phase.observe({ phase: 'upscale' }, t.totalMs / 1000);
      else {
        this.phase.observe({ phase: 'load' }, t.loadMs / 1000);
        this.phase.observe({ phase: 'encode' }, t.encodeMs / 1000);
        this.phase.observe({ phase: 'sampling' }, t.sampleMs / 1000);
        this.phase.observe({ phase: 'decode' }, t.decodeMs / 1000);
        if (t.loadMs >= MODEL_LOAD_MIN_MS) this.modelLoad.observe(t.loadMs / 1000);
      }
    }
    const sps = this.queue.stats.lastStepsPerSecond;
    if (sps !== undefined) this.lastStepsPerSecond = sps;
  }

  async render(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  close(): void {
    this.off();
    this.registry.clear();
  }
}
