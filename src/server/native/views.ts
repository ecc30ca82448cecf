// What clients see of a job: snake_case JSON with state, progress, queue position, ETA, timings, seeds
// and images (as URLs or base64, as the client chose).
import type { FastifyRequest } from 'fastify';
import type { KilnServices } from '../services.ts';
import type { Job, StoredImage } from '../../queue/job.ts';
import type { ResponseKind } from '../../queue/job-spec.ts';
import { imageCount } from '../../queue/job-spec.ts';

export function baseUrl(kiln: KilnServices, req: FastifyRequest): string {
  if (kiln.config.publicUrl) return kiln.config.publicUrl.replace(/\/$/, '');
  return `${req.protocol}://${req.host}`;
}

const iso = (ms: number | undefined) => (ms === undefined ? null : new Date(ms).toISOString());

/** Seeds the job will use (known at submission) or used (from the result). */
export function seedsOf(job: Job): number[] {
  if (job.result) return job.result.images.map((i) => i.seed);
  const n = imageCount(job.spec);
  return Array.from({ length: n }, (_, i) => job.spec.seed + (job.spec.subseedStrength > 0 ? 0 : i));
}

export function jobLinks(id: string) {
  return { self: `/v1/jobs/${id}`, events: `/v1/jobs/${id}/events`, cancel: `/v1/jobs/${id}/cancel` };
}

/** State without images: what polling and SSE progress frames carry. */
export async function jobSummary(kiln: KilnServices, job: Job) {
  const [eta, position, preview] = await Promise.all([kiln.queue.etaSeconds(job), kiln.queue.position(job), kiln.queue.preview(job.id)]);
  const timings = job.result?.timings;
  return {
    id: job.id,
    state: job.state,
    progress: job.state === 'succeeded' ? 1 : Number(job.progress.toFixed(4)),
    phase: job.state === 'running' ? (job.phase ?? 'loading') : job.state === 'queued' ? 'queued' : 'done',
    step: job.step,
    total_steps: job.totalSteps,
    position: position ?? null,
    priority: job.priority,
    eta_seconds: eta === undefined ? null : Number(eta.toFixed(2)),
    attempts: job.attempts,
    created_at: iso(job.createdAt),
    started_at: iso(job.startedAt),
    finished_at: iso(job.finishedAt),
    timings: {
      queued_ms: job.startedAt !== undefined ? job.startedAt - job.createdAt : null,
      run_ms: job.startedAt !== undefined && job.finishedAt !== undefined ? job.finishedAt - job.startedAt : null,
      load_ms: timings?.loadMs ?? null,
      encode_ms: timings?.encodeMs ?? null,
      sample_ms: timings?.sampleMs ?? null,
      decode_ms: timings?.decodeMs ?? null,
      total_ms: timings?.totalMs ?? null,
    },
    // Only when there are some (LoRA keys that matched no layer, ...): the job ran, but not all of it applied.
    ...(job.result?.warnings?.length ? { warnings: job.result.warnings } : {}),
    seeds: seedsOf(job),
    request: {
      type: job.spec.kind,
      model: job.spec.model ?? kiln.models.default?.name ?? null,
      width: job.spec.width,
      height: job.spec.height,
      steps: job.spec.steps,
      cfg_scale: job.spec.cfgScale,
      sampler: job.spec.sampler,
      schedule: job.spec.schedule,
      images: imageCount(job.spec),
      output: job.spec.output,
    },
    error: job.error ?? null,
    /** Path of the running job's latest live preview (PNG), null when there is none (yet). */
    preview_url: preview ? previewPath(job.id) : null,
  };
}

export const previewPath = (id: string) => `/v1/jobs/${id}/preview`;

/** Where a stored image is served (GET /v1/images/{name}), for every surface that answers URLs. */
export const imageUrl = (base: string, name: string) => `${base}/v1/images/${name}`;

export async function imageView(kiln: KilnServices, img: StoredImage, base: string, response: ResponseKind) {
  const out: Record<string, unknown> = {
    name: img.name,
    url: imageUrl(base, img.name),
    format: img.format,
    width: img.width,
    height: img.height,
    seed: img.seed,
    subseed: img.subseed,
    prompt: img.prompt,
    negative_prompt: img.negativePrompt,
    infotext: img.infotext,
  };
  if (response === 'base64') {
    const bytes = await kiln.storage.read(img.name);
    out.base64 = bytes ? bytes.toString('base64') : null;
  }
  if (img.preview) {
    const preview: Record<string, unknown> = { name: img.preview, url: imageUrl(base, img.preview), format: 'png', width: img.width, height: img.height };
    if (response === 'base64') preview.base64 = (await kiln.storage.read(img.preview))?.toString('base64') ?? null;
    out.preview = preview;
  }
  return out;
}

/** The full job view, with images once it succeeded. */
export async function jobView(kiln: KilnServices, job: Job, base: string, response?: ResponseKind) {
  const kind = response ?? job.spec.output.response;
  const images = job.result ? await Promise.all(job.result.images.map((i) => imageView(kiln, i, base, kind))) : [];
  const vision = job.result?.vision;
  // Image-understanding jobs answer data instead of images (the same fields their own routes return).
  const result = vision && {
    clip_model: vision.clipModel,
    ...(vision.clipEmbedding
      ? { clip_embedding: vision.clipEmbedding, vae_latent: vision.vaeLatent ? { shape: vision.vaeShape, data: vision.vaeLatent } : null }
      : {}),
    ...(vision.prompt !== undefined ? { prompt: vision.prompt, text_tower: vision.textTower, categories: vision.categories } : {}),
  };
  return { ...(await jobSummary(kiln, job)), images, ...(result ? { result } : {}) };
}
