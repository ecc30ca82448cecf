// Native job routes: submit (202), get, list, cancel, SSE events, and a synchronous generate.
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { ResponseKind } from '../../queue/job-spec.ts';
import { nativeRequestSchema, specFromNative } from './request.ts';
import { sentFields } from '../model-presets.ts';
import type { NativeRequest } from './request.ts';
import { decodeBase64Field, storeMaskImage } from '../uploads.ts';
import type { Job } from '../../queue/job.ts';
import { JOB_STATES } from '../../queue/job.ts';
import { HttpError } from '../errors.ts';
import { failureStatus } from '../job-failure.ts';
import { cancelOnHangUp } from '../hang-up.ts';
import { maySeeJob, seesAllJobs } from '../auth.ts';
import { assembleMultipart } from './upload.ts';
import { streamJob } from './sse.ts';
import { baseUrl, jobLinks, jobSummary, jobView } from './views.ts';
import { previewPng } from '../preview.ts';

const idParams = { type: 'object', required: ['id'], properties: { id: { type: 'string', minLength: 1, maxLength: 100 } } } as const;
const responseQuery = {
  type: 'object',
  additionalProperties: false,
  properties: { response: { type: 'string', enum: ['base64', 'url'], description: 'Override how images are returned.' } },
} as const;

export async function jobRoutes(app: FastifyInstance): Promise<void> {
  const kiln = app.kiln;
  const body = nativeRequestSchema(kiln.config.limits);
  // Webhooks of native jobs carry the job view (image URLs are relative unless publicUrl is set).
  kiln.webhooks.register('native', (job) => jobView(kiln, job, kiln.config.publicUrl?.replace(/\/$/, '') ?? ''));

  /** The job if it exists and the caller may see it (owner or admin); 404 otherwise. */
  const visibleJob = async (req: FastifyRequest, id: string): Promise<Job> => {
    const job = await kiln.queue.get(id);
    const p = req.principal;
    if (!job || !maySeeJob(p, job.owner)) throw new HttpError(404, 'not_found', `id: no job ${id}`, 'id');
    return job;
  };

  const createJob = async (req: FastifyRequest): Promise<Job> => {
    const b = req.body as NativeRequest;
    // Raising a job above the others is an operator's call: a user key that could would undo per-key fairness.
    if ((b.priority ?? 0) > 0 && !seesAllJobs(req.principal))
      throw new HttpError(403, 'forbidden', `priority: above 0 needs an admin API key; user keys may queue at -10 to 0, got ${b.priority}`, 'priority');
    let initImage: string | undefined;
    const bytes = req.upload?.bytes ?? (b.init_image !== undefined ? decodeBase64Field(b.init_image, 'init_image', kiln.config.limits) : undefined);
    // Cheap checks first, so a bad request is refused before its upload is decoded and stored.
    kiln.checkSpec(specFromNative(b, kiln.config.limits, bytes ? 'pending-upload' : undefined));
    const maskBytes = b.mask ? (req.maskUpload ?? decodeBase64Field(b.mask.image, 'mask.image', kiln.config.limits)) : undefined;
    const mask = maskBytes ? await storeMaskImage(maskBytes, kiln.storage, kiln.config.limits, 'mask.image', { invert: b.mask?.invert }) : undefined;
    try {
      if (bytes) initImage = await kiln.storeUpload(bytes, 'init_image');
      const spec = specFromNative(b, kiln.config.limits, initImage, sentFields(req));
      if (spec.mask && mask) spec.mask.image = mask;
      return await kiln.submit(spec, { owner: req.principal.name });
    } catch (e) {
      if (initImage) await kiln.storage.remove(initImage).catch(() => undefined);
      if (mask) await kiln.storage.remove(mask).catch(() => undefined);
      throw e;
    }
  };

  const submitSchema = {
    tags: ['jobs'],
    consumes: ['application/json', 'multipart/form-data'],
    body,
  };

  app.post(
    '/v1/jobs',
    {
      preValidation: assembleMultipart,
      schema: { ...submitSchema, summary: 'Submit a txt2img or img2img job; answers 202 with the job id (429 with Retry-After when the queue is full).' },
    },
    async (req, reply) => {
      const job = await createJob(req);
      const summary = await jobSummary(kiln, job);
      return reply
        .status(202)
        .header('location', `/v1/jobs/${job.id}`)
        .send({ id: job.id, state: job.state, position: summary.position, eta_seconds: summary.eta_seconds, seeds: summary.seeds, links: jobLinks(job.id) });
    },
  );

  app.get(
    '/v1/jobs',
    {
      schema: {
        tags: ['jobs'],
        summary: 'List your jobs (admins see all), newest first.',
        querystring: {
          type: 'object',
          additionalProperties: false,
          properties: { state: { type: 'string', enum: [...JOB_STATES] }, limit: { type: 'integer', minimum: 1, maximum: 500, default: 50 } },
        },
      },
    },
    async (req) => {
      const q = req.query as { state?: (typeof JOB_STATES)[number]; limit: number };
      const p = req.principal;
      const jobs = await kiln.queue.list({ owner: seesAllJobs(p) ? undefined : p.name, state: q.state, limit: q.limit });
      return { jobs: await Promise.all(jobs.map((j) => jobSummary(kiln, j))) };
    },
  );

  app.get(
    '/v1/jobs/:id',
    {
      schema: {
        tags: ['jobs'],
        summary: 'A job: state, progress, phase, position, ETA, timings, seeds and (when done) images.',
        params: idParams,
        querystring: responseQuery,
      },
    },
    async (req) => {
      const job = await visibleJob(req, (req.params as { id: string }).id);
      return jobView(kiln, job, baseUrl(kiln, req), (req.query as { response?: ResponseKind }).response);
    },
  );

  app.get(
    '/v1/jobs/:id/events',
    {
      config: { rateLimit: false },
      schema: {
        tags: ['jobs'],
        summary: 'Server-Sent Events: state, progress (every step), then succeeded / failed / cancelled.',
        params: idParams,
        querystring: responseQuery,
      },
    },
    async (req, reply) => {
      const job = await visibleJob(req, (req.params as { id: string }).id);
      await streamJob(kiln, job, req, reply, (req.query as { response?: ResponseKind }).response);
    },
  );

  app.get(
    '/v1/jobs/:id/preview',
    {
      schema: {
        tags: ['jobs'],
        summary:
          "The running job's latest live preview: a PNG of the first image: full size when a TAESD decoder is in models/vae-approx/, else at 1/8 size (cheap latent-to-RGB approximation), updated every previewEvery steps; 404 until the first one and after the job ends.",
        params: idParams,
      },
    },
    async (req, reply) => {
      const job = await visibleJob(req, (req.params as { id: string }).id);
      const preview = await previewPng(kiln.queue, job.id);
      if (!preview) {
        const why =
          // The root cause first: with previews off no job ever has one, whatever its state.
          kiln.config.previewEvery <= 0 ? 'previews are disabled (previewEvery = 0)' : job.state !== 'running' ? `the job is ${job.state}` : 'no preview yet';
        throw new HttpError(404, 'not_found', `id: job ${job.id} has no live preview: ${why}`, 'id');
      }
      return reply
        .type('image/png')
        .header('cache-control', 'no-store')
        .header('x-preview-step', String(preview.step))
        .header('x-preview-seq', String(preview.seq))
        .send(preview.png);
    },
  );

  const cancel = async (req: FastifyRequest) => {
    const job = await visibleJob(req, (req.params as { id: string }).id);
    const after = (await kiln.queue.cancel(job.id)) ?? job;
    return jobSummary(kiln, after);
  };
  app.post(
    '/v1/jobs/:id/retry',
    {
      schema: { tags: ['jobs'], summary: 'Run a failed job (timeouts included) again under the same id; 409 for a job in any other state.', params: idParams },
    },
    async (req, reply) => {
      const job = await visibleJob(req, (req.params as { id: string }).id);
      if (job.state !== 'failed') throw new HttpError(409, 'not_retryable', `id: job ${job.id} is ${job.state}; only failed jobs can be retried`, 'id');
      kiln.checkSpec(job.spec);
      const queued = await kiln.queue.retry(job.id);
      if (!queued) throw new HttpError(409, 'not_retryable', `id: job ${job.id} is no longer failed`, 'id');
      return reply
        .status(202)
        .header('location', `/v1/jobs/${job.id}`)
        .send(await jobSummary(kiln, queued));
    },
  );
  app.post(
    '/v1/jobs/:id/cancel',
    { schema: { tags: ['jobs'], summary: 'Cancel a job (a running one stops within one sampling step).', params: idParams } },
    cancel,
  );
  app.delete('/v1/jobs/:id', { schema: { tags: ['jobs'], summary: 'Same as POST /v1/jobs/{id}/cancel.', params: idParams } }, cancel);

  app.post(
    '/v1/generate',
    {
      preValidation: assembleMultipart,
      schema: {
        ...submitSchema,
        summary: 'Generate and wait: returns the images (200), or the job (202) if it is not done within timeout_s.',
        querystring: {
          type: 'object',
          additionalProperties: false,
          properties: { timeout_s: { type: 'number', minimum: 1, maximum: 3600, description: 'How long to wait (default: the job timeout).' } },
        },
      },
    },
    async (req, reply: FastifyReply) => {
      const job = await createJob(req);
      // A client that hangs up no longer wants the images: free the device for others.
      const stopWatching = cancelOnHangUp(reply, () => kiln.queue.cancel(job.id));
      const timeoutMs = ((req.query as { timeout_s?: number }).timeout_s ?? kiln.config.queue.jobTimeoutMs / 1000 + 60) * 1000;
      const done = (await kiln.queue.waitFor(job.id, timeoutMs))!;
      stopWatching();
      const view = await jobView(kiln, done, baseUrl(kiln, req));
      if (done.state === 'succeeded') return reply.status(200).send(view);
      if (done.state === 'queued' || done.state === 'running') return reply.status(202).header('location', `/v1/jobs/${done.id}`).send(view);
      const { status, code } = failureStatus(done);
      return reply
        .status(status)
        .send({ ...view, error: { code, message: done.error?.message ?? done.state, ...(done.error?.field ? { field: done.error.field } : {}) } });
    },
  );
}
