// Batch split: a large batch runs as chunks on several workers and comes back as one job, byte for byte the job
// one worker would have made. The parent job is claimed like any job; the worker that claims it becomes its
// coordinator (it does no engine work for it, so its own engine slot stays free for chunks): it queues one chunk
// job per window of the batch (spec.batchWindow; the engine generates each image exactly as in the whole batch,
// see engine pipelines/batch-window.ts), follows their progress into the parent's, and when every chunk has
// succeeded copies their images, in order, under the parent's names (`<parent>-<i>`), so the parent's result is
// what a single run would have stored. A failed chunk fails the parent with its reason (a chunk is retried like
// any job first: engine crash or worker death, up to --max-attempts); cancelling the parent cancels its chunks.
// The coordinator's hold on the parent is an ordinary running job: if it dies, the parent is re-delivered and the
// next coordinator picks up the chunks already queued or done (the plan is kept in the parent's extra).
import type { ProgressEvent } from '../engine/index.ts';
import { BATCH_WINDOW_ALIGN, batchSplitRefusal } from '../engine/index.ts';
import type { ImageStore } from '../storage/image-store.ts';
import type { JobBackend } from './backend.ts';
import type { RunContext } from './executor.ts';
import { FINAL_STATES } from './job.ts';
import type { Job, JobError, JobEvent, JobResult, StoredImage } from './job.ts';
import type { JobSpec } from './job-spec.ts';
import { imageCount } from './job-spec.ts';

/** Job.extra key of a split parent: its chunks. */
export const SPLIT_KEY = 'kilnSplit';
/** Job.extra key of a chunk: its parent and window. */
export const CHUNK_KEY = 'kilnChunkOf';

export interface SplitChunk {
  id: string;
  start: number;
  count: number;
}

export interface SplitPlan {
  images: number;
  chunks: SplitChunk[];
}

export interface ChunkLink {
  parent: string;
  start: number;
  count: number;
}

/** How often the coordinator re-reads its chunks (a safety net under the events, which it also follows). */
const POLL_MS = 1000;
/** At most this many chunks per batch, whatever the chunk size (bounds the coordinator's reads and listeners). */
export const MAX_CHUNKS = 64;

/** Checks a chunk size option: a positive multiple of the engine's alignment, or 0 (never split). */
export function checkChunkImages(n: number, flag = '--split-batch'): void {
  if (!Number.isInteger(n) || n < 0 || n % BATCH_WINDOW_ALIGN !== 0)
    throw new Error(`${flag}: images per chunk must be 0 (never split) or a multiple of ${BATCH_WINDOW_ALIGN}, got ${n}`);
}

/** The chunk link of a job that is a chunk of a split batch, if it is one. */
export function chunkLink(job: Job): ChunkLink | undefined {
  const link = job.extra[CHUNK_KEY] as ChunkLink | undefined;
  return link && typeof link.parent === 'string' ? link : undefined;
}

/**
 * How a job's batch is split into chunks of `chunkImages` images, or undefined when it runs whole: not a
 * generation, already a chunk, small enough, or its sampler couples the batch. A plan stored with the job (a
 * coordinator before this one made it) wins, so every coordinator of one job uses the same chunks.
 */
export function planSplit(job: Job, chunkImages: number): SplitPlan | undefined {
  const stored = job.extra[SPLIT_KEY] as SplitPlan | undefined;
  if (stored && Array.isArray(stored.chunks) && stored.chunks.length > 0) return stored;
  const spec = job.spec;
  if (chunkImages <= 0 || (spec.kind !== 'txt2img' && spec.kind !== 'img2img') || spec.batchWindow || chunkLink(job)) return undefined;
  const images = imageCount(spec);
  if (images <= chunkImages) return undefined;
  if (batchSplitRefusal([spec.sampler, spec.hires?.sampler])) return undefined;
  // Never more than MAX_CHUNKS chunks: a larger chunk (still aligned) when the batch is very large.
  const minSize = Math.ceil(images / MAX_CHUNKS / BATCH_WINDOW_ALIGN) * BATCH_WINDOW_ALIGN;
  const size = Math.max(chunkImages, minSize);
  const chunks: SplitChunk[] = [];
  for (let start = 0, k = 0; start < images; start += size, k++) chunks.push({ id: `${job.id}-part${k}`, start, count: Math.min(size, images - start) });
  return { images, chunks };
}

/** A chunk's spec: the parent's, windowed; its webhook and own timeout stay with the parent. */
export function chunkSpec(spec: JobSpec, chunk: SplitChunk): JobSpec {
  const { webhook: _webhook, timeoutMs: _timeout, ...rest } = spec;
  return { ...rest, batchWindow: { start: chunk.start, count: chunk.count } };
}

/** A chunk failed or was cancelled: the parent fails with its reason (classifyError passes `jobError` through). */
export class BatchChunkError extends Error {
  constructor(readonly jobError: JobError) {
    super(jobError.message);
    this.name = 'BatchChunkError';
  }
}

export interface SplitDeps {
  backend: JobBackend;
  storage: ImageStore;
  now: () => number;
  /** Cancels a chunk wherever it is (queued: at once; running: its worker stops it). */
  cancel: (id: string) => Promise<unknown>;
  /** Something may have been queued: look for work. */
  wake: () => void;
}

/** Coordinates a split parent to its end: the runner of a split job (see the top of this file). */
export async function runSplit(parent: Job, plan: SplitPlan, ctx: RunContext, deps: SplitDeps): Promise<JobResult> {
  const { backend } = deps;
  if (!parent.extra[SPLIT_KEY]) await backend.updateExtra(parent.id, { [SPLIT_KEY]: plan });
  const live = new Map<string, { fraction: number; step: number; totalSteps: number }>();
  let phase: ProgressEvent['phase'] = 'encoding';
  let wakeUp: () => void = () => undefined;
  const report = (preview?: ProgressEvent['preview']) => {
    let done = 0;
    let step = 0;
    let total = 0;
    const perChunk = Math.max(0, ...[...live.values()].map((l) => l.totalSteps));
    for (const c of plan.chunks) {
      const l = live.get(c.id);
      done += c.count * (l?.fraction ?? 0);
      step += l?.step ?? 0;
      total += l?.totalSteps || perChunk;
    }
    ctx.onProgress({ phase, step, totalSteps: total, fraction: done / plan.images, ...(preview ? { preview } : {}) });
  };
  const onEvent = (e: JobEvent) => {
    if (e.type === 'progress') {
      live.set(e.job.id, { fraction: e.progress, step: e.step, totalSteps: e.totalSteps });
      phase = e.phase;
      report(e.preview?.image);
    } else if (FINAL_STATES.has(e.job.state)) wakeUp();
  };
  const offs = plan.chunks.map((c) => backend.subscribe(c.id, onEvent));
  try {
    await queueChunks(parent, plan, deps);
    for (;;) {
      if (ctx.signal.aborted) return await stopChunks(plan, ctx.signal, deps);
      const chunks = await Promise.all(plan.chunks.map((c) => backend.get(c.id)));
      const failed = chunks.find((c) => !c || c.state === 'failed' || c.state === 'cancelled');
      if (failed || chunks.some((c) => !c)) {
        const index = chunks.indexOf(failed);
        const c = plan.chunks[index]!;
        await Promise.all(plan.chunks.map((other) => deps.cancel(other.id).catch(() => undefined)));
        const why = !failed ? 'was deleted' : failed.state === 'cancelled' ? 'was cancelled' : `failed: ${failed.error?.message ?? 'unknown error'}`;
        throw new BatchChunkError({
          code: failed?.state === 'failed' ? (failed.error?.code ?? 'internal') : 'interrupted',
          message: `images ${c.start}-${c.start + c.count - 1} of this batch (run as job ${c.id}) ${why}`,
          ...(failed?.error?.field ? { field: failed.error.field } : {}),
        });
      }
      if (chunks.every((c) => c!.state === 'succeeded')) return await assemble(parent, plan, chunks as Job[], deps.storage);
      for (const c of chunks) if (c!.state === 'succeeded') live.set(c!.id, { fraction: 1, step: c!.step, totalSteps: c!.totalSteps });
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, POLL_MS);
        const done = () => {
          clearTimeout(timer);
          ctx.signal.removeEventListener('abort', done);
          resolve();
        };
        wakeUp = done;
        ctx.signal.addEventListener('abort', done);
      });
    }
  } finally {
    for (const off of offs) off();
  }
}

/** Queues every chunk not already queued, running or done (a chunk that failed before is queued afresh). */
async function queueChunks(parent: Job, plan: SplitPlan, deps: SplitDeps): Promise<void> {
  const { backend } = deps;
  for (const c of plan.chunks) {
    const existing = await backend.get(c.id);
    // A chunk queued by a coordinator that died right after writing its record may have no dispatch entry yet.
    if (existing?.state === 'queued') await backend.ensureDispatched(c.id);
    if (existing && !(existing.state === 'failed' || existing.state === 'cancelled')) continue;
    if (existing) await backend.delete([c.id]);
    const link: ChunkLink = { parent: parent.id, start: c.start, count: c.count };
    const job = await backend.insert({ id: c.id, owner: parent.owner, spec: chunkSpec(parent.spec, c), createdAt: deps.now(), extra: { [CHUNK_KEY]: link } });
    await backend.publish({ type: 'queued', job });
  }
  deps.wake();
}

/** The parent was stopped: a cancel or timeout cancels its chunks; a shutdown leaves them to run (the parent is handed back). */
async function stopChunks(plan: SplitPlan, signal: AbortSignal, deps: SplitDeps): Promise<never> {
  const reason = (signal.reason as Error | undefined)?.message;
  if (reason !== 'shutdown') await Promise.all(plan.chunks.map((c) => deps.cancel(c.id).catch(() => undefined)));
  throw signal.reason instanceof Error ? signal.reason : new Error('aborted');
}

/** Every chunk succeeded: their images copied under the parent's names, in batch order. */
async function assemble(parent: Job, plan: SplitPlan, chunks: Job[], storage: ImageStore): Promise<JobResult> {
  const images: StoredImage[] = [];
  const timings = { loadMs: 0, encodeMs: 0, sampleMs: 0, decodeMs: 0, totalMs: 0 };
  const warnings = new Set<string>();
  try {
    for (const [k, chunk] of chunks.entries()) {
      const result = chunk.result!;
      const start = plan.chunks[k]!.start;
      for (const [i, img] of result.images.entries()) {
        const bytes = await storage.read(img.name);
        if (!bytes) throw new BatchChunkError({ code: 'storage', message: `image ${img.name} of job ${chunk.id} is missing from storage` });
        const name = `${parent.id}-${start + i}.${img.name.split('.').pop()}`;
        await storage.write(name, bytes);
        images.push({ ...img, name });
      }
      for (const key of Object.keys(timings) as Array<keyof typeof timings>) timings[key] += result.timings[key] ?? 0;
      for (const w of result.warnings ?? []) warnings.add(w);
    }
  } catch (e) {
    for (const img of images) await storage.remove(img.name).catch(() => undefined);
    throw e;
  }
  timings.totalMs = Date.now() - (parent.startedAt ?? Date.now());
  return { images, timings, ...(warnings.size ? { warnings: [...warnings] } : {}) };
}

/** After the parent ended: its finished chunks and their files go (the parent holds copies). */
export async function removeChunks(plan: SplitPlan, backend: JobBackend, storage: ImageStore | undefined): Promise<void> {
  const gone: string[] = [];
  for (const c of plan.chunks) {
    const job = await backend.get(c.id);
    if (!job || !FINAL_STATES.has(job.state)) continue;
    for (const img of job.result?.images ?? []) await storage?.remove(img.name).catch(() => undefined);
    gone.push(c.id);
  }
  if (gone.length) await backend.delete(gone);
}
