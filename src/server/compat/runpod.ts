// RunPod serverless queue API, with the payload of seed 000 (LayerDiffuse Alpha API): POST /run, /runsync,
// GET /status/{id}, /stream/{id}, POST /cancel/{id}, /retry/{id}, /purge-queue, GET /health — at the root and
// under /v2/{endpoint_id}/ (the path RunPod clients use, so only host and port change). `input` is an
// A1111-style txt2img body with seed 000's defaults; each request becomes one native job whose id is the
// RunPod job id. Input a handler would reject (missing prompt, unknown sampler, missing features) makes a
// FAILED job with the reason in `error`, as a RunPod worker does. The policy's executionTimeout, the webhook and
// /retry are the job model's (JobSpec.timeoutMs, JobSpec.webhook, JobQueue.retry); this adapter only maps
// shapes and keeps no state of its own. Also /alpha/v1/txt2img and /alpha/v1/file/{filename} from the same seed.
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { Ajv } from 'ajv';
import type { ValidateFunction } from 'ajv';
import type { Job } from '../../queue/job.ts';
import type { JobSpec } from '../../queue/job-spec.ts';
import { QueueClosedError, QueueFullError } from '../../queue/queue.ts';
import { BackendUnavailableError } from '../../queue/backend.ts';
import { HttpError } from '../errors.ts';
import { ajvPath, type SchemaValidationError } from '../validation-errors.ts';
import { LayerDiffuseFilesMissing } from '../models/layerdiffuse.ts';
import { maySeeJob, seesAllJobs } from '../auth.ts';
import { failureStatus } from '../job-failure.ts';
import { baseUrl } from '../native/views.ts';
import { checkS3Config, ClientBucketError, s3ConfigSchema, uploadToClientBucket } from './runpod-s3.ts';
import type { RunPodS3Config } from './runpod-s3.ts';
import { a1111BodySchema, specFromA1111 } from './a1111.ts';
import type { Body } from './a1111.ts';
import { baseSpec, classify, dataUrl, ownerOf, resultImages, sendClassified, submitWithInput, syncWaitMs } from './common.ts';

/** Seed 000's documented defaults (they differ from A1111's). */
export const SEED000_DEFAULTS = {
  negative_prompt: 'bad, ugly',
  seed: 12345,
  steps: 20,
  sampler_name: 'DPM++ 2M SDE',
  scheduler: 'Karras',
  cfg_scale: 5.0,
  width: 1024,
  height: 1024,
  batch_size: 1,
  n_iter: 1,
  restore_faces: false,
  tiling: false,
  subseed: -1,
  subseed_strength: 0,
  seed_resize_from_h: -1,
  seed_resize_from_w: -1,
  eta: null,
  s_churn: 0,
  s_tmax: null,
  s_tmin: 0,
  s_noise: 1,
  override_settings: {},
  refiner_checkpoint: null,
  refiner_switch_at: null,
};

export type RunPodStatus = 'IN_QUEUE' | 'IN_PROGRESS' | 'COMPLETED' | 'FAILED' | 'CANCELLED' | 'TIMED_OUT';

/** What this surface keeps in the job record (Job.extra.runpod). */
interface RunPodExtra {
  /** The input was refused before it could run; kept so /retry can map it again. */
  rejected?: boolean;
  input?: unknown;
  /** Size of a refused input too large to keep (see KEPT_INPUT_BYTES); such a job cannot be retried. */
  inputBytes?: number;
  /** /stream already handed out the output. */
  streamed?: boolean;
  /** The client's own bucket for the results (RunPod s3Config); never shown by any view. */
  s3?: RunPodS3Config;
}

/**
 * The most JSON a refused input may take in its job record, for /retry. Larger inputs (base64 images) are not
 * kept: every record is bounded, and all of it goes with the job at retention cleanup.
 */
export const KEPT_INPUT_BYTES = 256 * 1024;

const runpodOf = (job: Job): RunPodExtra => (job.extra.runpod ?? {}) as RunPodExtra;

const envelopeSchema = {
  type: 'object',
  required: ['input'],
  properties: {
    input: { type: 'object' },
    webhook: { type: 'string' },
    policy: {
      type: 'object',
      properties: {
        executionTimeout: { type: 'integer', exclusiveMinimum: 5000 },
        lowPriority: { type: 'boolean' },
        ttl: { type: 'integer', minimum: 10_000, maximum: 604_800_000 },
      },
    },
    s3Config: s3ConfigSchema,
  },
};

interface Envelope {
  input: Record<string, unknown>;
  webhook?: string;
  policy?: { executionTimeout?: number; lowPriority?: boolean; ttl?: number };
  s3Config?: RunPodS3Config;
}

function errorHandler(err: SchemaValidationError, req: FastifyRequest, reply: FastifyReply): void {
  if (err.validation) {
    const e = err.validation[0]!;
    const field = ajvPath(e).join('.') || 'body';
    void reply.status(400).send({ error: `${field}: ${e.keyword === 'required' ? 'is required' : (e.message ?? 'is invalid')}` });
    return;
  }
  // Seed 000's client reads `status` before anything else: it prints a FAILED body instead of a KeyError.
  sendClassified(err, req, reply, 'runpod request failed', (c) =>
    err instanceof LayerDiffuseFilesMissing ? { status: 'FAILED', error: c.message } : { error: c.message },
  );
}

/** The input validators: A1111 txt2img / img2img bodies with seed 000's defaults filled in. */
function inputValidators() {
  const ajv = new Ajv({ useDefaults: true, coerceTypes: false, strict: false, allErrors: false });
  return {
    txt2img: ajv.compile(a1111BodySchema('txt2img', SEED000_DEFAULTS)),
    img2img: ajv.compile(a1111BodySchema('img2img', SEED000_DEFAULTS)),
  };
}

function describeAjv(v: ValidateFunction): string {
  const e = v.errors?.[0];
  if (!e) return 'input is invalid';
  const field = ['input', ...e.instancePath.split('/').filter(Boolean)].join('.');
  return `${field}: ${e.message ?? 'is invalid'}`;
}

export async function runpodRoutes(app: FastifyInstance): Promise<void> {
  const kiln = app.kiln;
  const validators = inputValidators();
  app.setErrorHandler(errorHandler);
  // Webhooks of jobs submitted here carry RunPod's job object.
  kiln.webhooks.register('runpod', (job) => jobObject(job));

  const visible = (req: FastifyRequest, owner: string) => maySeeJob(req.principal, owner);

  /** The job if the caller may see it; 404 otherwise. Every native job id is a RunPod job id too. */
  const jobOf = async (req: FastifyRequest, id: string): Promise<Job> => {
    const job = await kiln.queue.get(id);
    if (!job || !visible(req, job.owner)) throw new HttpError(404, 'not_found', `job ${id} not found`);
    return job;
  };

  /** A1111-style input -> JobSpec (seed 000's defaults); throws for input a handler would reject. */
  async function specOf(input: Record<string, unknown>, job: Partial<JobSpec> = {}): Promise<JobSpec> {
    if (typeof input.prompt !== 'string' || input.prompt.trim() === '')
      throw new HttpError(400, 'invalid_request', 'input.prompt: Missing prompt (a non-empty string is required)');
    const kind = input.init_images !== undefined ? 'img2img' : 'txt2img';
    const body = structuredClone(input) as Body;
    const validate = validators[kind];
    if (!validate(body)) throw new HttpError(400, 'invalid_request', describeAjv(validate));
    const spec = await specFromA1111(kiln, body, kind, { options: {}, sent: input });
    // Seed 000 is "PNG images with transparent backgrounds": always, unless the server turned it off.
    const transparent = kiln.config.seed000Transparent
      ? { transparentBackground: true, sourceFields: { ...spec.sourceFields, transparentBackground: 'input' } }
      : {};
    return { ...spec, ...job, ...transparent, output: { format: 'png', quality: 90, response: 'base64' } };
  }

  /** Why a RunPod worker would report the request as a FAILED job; undefined for errors of the platform itself. */
  function rejection(e: unknown): string | undefined {
    // A full queue or shutdown is the platform refusing the request, not a failed job.
    if (e instanceof QueueFullError || e instanceof QueueClosedError || e instanceof BackendUnavailableError) return undefined;
    // Missing LayerDiffuse files are the server's setup, not the input: a 4xx naming them, never a job.
    if (e instanceof LayerDiffuseFilesMissing) return undefined;
    const c = classify(e);
    return c.status >= 500 && c.status !== 501 ? undefined : c.message;
  }

  /** Input -> a queued job, or a FAILED job holding the reason (and the input, for /retry). */
  async function submitInput(input: Record<string, unknown>, owner: string, job: Partial<JobSpec> = {}, s3?: RunPodS3Config): Promise<Job> {
    try {
      const spec = await specOf(input, job);
      const extra = s3 ? { runpod: { s3 } satisfies RunPodExtra } : undefined;
      return await submitWithInput(kiln, spec, () => kiln.submit(spec, { owner, extra }));
    } catch (e) {
      const reason = rejection(e);
      if (reason === undefined) throw e;
      const placeholder = baseSpec({ prompts: [typeof input.prompt === 'string' ? input.prompt : ''], ...job });
      const inputBytes = Buffer.byteLength(JSON.stringify(input));
      const extra: RunPodExtra = inputBytes <= KEPT_INPUT_BYTES ? { rejected: true, input } : { rejected: true, inputBytes };
      return kiln.queue.recordFailed(placeholder, { code: 'input', message: reason }, { owner, extra: { runpod: extra } });
    }
  }

  async function create(req: FastifyRequest, env: Envelope): Promise<Job> {
    if (env.s3Config) await checkS3Config(env.s3Config, (url) => kiln.webhooks.checkTarget(url));
    if (env.webhook !== undefined) await kiln.checkWebhook(env.webhook);
    return submitInput(
      env.input,
      ownerOf(req),
      {
        timeoutMs: env.policy?.executionTimeout,
        webhook: env.webhook !== undefined ? { url: env.webhook, format: 'runpod' } : undefined,
        // RunPod's lowPriority job waits for an idle worker instead of scaling up; on a fixed pool: behind the rest.
        priority: env.policy?.lowPriority ? -1 : undefined,
      },
      env.s3Config,
    );
  }

  function statusOf(job: Job): RunPodStatus {
    switch (job.state) {
      case 'queued':
        return 'IN_QUEUE';
      case 'running':
        return 'IN_PROGRESS';
      case 'succeeded':
        return 'COMPLETED';
      case 'cancelled':
        return 'CANCELLED';
      case 'failed':
        return job.error?.code === 'timeout' ? 'TIMED_OUT' : 'FAILED';
    }
  }

  /** RunPod's job object: {id, status, delayTime, executionTime, output?, error?}. */
  async function jobObject(job: Job): Promise<Record<string, unknown>> {
    const status = statusOf(job);
    const now = Date.now();
    const ran = job.startedAt !== undefined;
    const out: Record<string, unknown> = {
      delayTime: runpodOf(job).rejected ? 0 : (job.startedAt ?? now) - job.createdAt,
      executionTime: ran ? (job.finishedAt ?? now) - job.startedAt! : 0,
      id: job.id,
      status,
      workerId: 'kiln',
    };
    if (status === 'COMPLETED') {
      try {
        out.output = await outputOf(job);
      } catch (e) {
        // The images exist but the client's bucket refused them: a RunPod worker reports that as a failed job.
        if (!(e instanceof ClientBucketError)) throw e;
        out.status = 'FAILED';
        out.error = e.message;
      }
    }
    if (status === 'FAILED' || status === 'TIMED_OUT') out.error = job.error?.message ?? 'the job failed';
    return out;
  }

  async function outputOf(job: Job) {
    const images = await resultImages(kiln, job);
    const s3 = runpodOf(job).s3;
    if (s3) {
      // The client's bucket: presigned URLs in place of base64 (as runpod-python's rp_upload answers).
      const files = images.map((img, i) => ({ filename: alphaFilename(job, i), bytes: img.bytes }));
      const urls = await uploadToClientBucket(s3, job.id, files);
      const out: Record<string, unknown> = { status: 'success', url: urls[0], filename: files[0]!.filename, info: images[0]!.meta.infotext };
      if (images.length > 1) out.images = images.map((img, i) => ({ filename: files[i]!.filename, url: urls[i], info: img.meta.infotext }));
      return out;
    }
    const first = images[0]!;
    const out: Record<string, unknown> = {
      status: 'success',
      url: dataUrl(first),
      filename: alphaFilename(job, 0),
      image_base64: first.bytes.toString('base64'),
      info: first.meta.infotext,
    };
    // Seed 000 returns one image; with batch_size/n_iter > 1 the rest come in `images`.
    if (images.length > 1)
      out.images = images.map((img, i) => ({ filename: alphaFilename(job, i), image_base64: img.bytes.toString('base64'), info: img.meta.infotext }));
    return out;
  }

  const waitMs = (q: { wait?: number }) => Math.min(300_000, Math.max(1000, q.wait ?? 90_000));

  const routes = async (r: FastifyInstance, prefixed: boolean) => {
    const tags = ['runpod'];
    const idParams = { type: 'object', properties: { id: { type: 'string', minLength: 1, maxLength: 100 } } };
    r.post('/run', { schema: { tags, summary: 'RunPod: queue a job; answers {id, status}.', body: envelopeSchema } }, async (req) => {
      const obj = await jobObject(await create(req, req.body as Envelope));
      return { id: obj.id, status: obj.status, ...(obj.error ? { error: obj.error } : {}) };
    });
    r.post(
      '/runsync',
      {
        schema: {
          tags,
          summary: 'RunPod: run and wait up to ?wait= ms (default 90 s); a job still running comes back IN_PROGRESS / IN_QUEUE for /status polling.',
          body: envelopeSchema,
          querystring: { type: 'object', properties: { wait: { type: 'integer', minimum: 1 } } },
        },
      },
      async (req) => {
        const job = await create(req, req.body as Envelope);
        return jobObject((await kiln.queue.waitFor(job.id, waitMs(req.query as { wait?: number }))) ?? job);
      },
    );
    r.get('/status/:id', { schema: { tags, summary: 'RunPod: the job object.', params: idParams } }, async (req) =>
      jobObject(await jobOf(req, (req.params as { id: string }).id)),
    );
    r.get('/stream/:id', { schema: { tags, summary: 'RunPod: output produced since the last call.', params: idParams } }, async (req) => {
      const job = await jobOf(req, (req.params as { id: string }).id);
      const obj = await jobObject(job);
      const fresh = obj.output !== undefined && !runpodOf(job).streamed;
      if (fresh) await kiln.queue.updateExtra(job.id, { runpod: { ...runpodOf(job), streamed: true } });
      return { status: obj.status, stream: fresh ? [{ output: obj.output }] : [] };
    });
    r.post('/cancel/:id', { schema: { tags, summary: 'RunPod: cancel a job.', params: idParams } }, async (req) => {
      const job = await jobOf(req, (req.params as { id: string }).id);
      const after = (await kiln.queue.cancel(job.id)) ?? job;
      return { id: job.id, status: statusOf(after) };
    });
    r.post('/retry/:id', { schema: { tags, summary: 'RunPod: run a FAILED or TIMED_OUT job again under the same id.', params: idParams } }, async (req) => {
      const job = await jobOf(req, (req.params as { id: string }).id);
      const status = statusOf(job);
      if (status !== 'FAILED' && status !== 'TIMED_OUT')
        throw new HttpError(400, 'invalid_request', `job ${job.id} is ${status}; only FAILED or TIMED_OUT jobs can be retried`);
      const extra = runpodOf(job);
      let spec: JobSpec | undefined;
      if (extra.rejected && extra.input === undefined)
        throw new HttpError(
          400,
          'invalid_request',
          `job ${job.id} was refused and its input (${extra.inputBytes ?? 0} bytes, over the ${KEPT_INPUT_BYTES}-byte limit kept for /retry) was not kept; submit it again with /run`,
        );
      if (extra.rejected) {
        // Refused input is mapped again (the server may have what it lacked); refused again, it stays FAILED.
        try {
          spec = await specOf((extra.input ?? {}) as Record<string, unknown>, {
            timeoutMs: job.spec.timeoutMs,
            webhook: job.spec.webhook,
            priority: job.spec.priority,
          });
          kiln.checkSpec(spec);
        } catch (e) {
          if (spec?.initImage) await kiln.storage.remove(spec.initImage).catch(() => undefined);
          if (rejection(e) === undefined) throw e;
          return { id: job.id, status: 'FAILED' };
        }
        await kiln.queue.updateExtra(job.id, { runpod: {} });
      } else {
        kiln.checkSpec(job.spec);
        await kiln.queue.updateExtra(job.id, { runpod: { ...extra, streamed: false } });
      }
      const queued = await kiln.queue.retry(job.id, spec);
      return { id: job.id, status: queued ? statusOf(queued) : status };
    });
    r.post('/purge-queue', { schema: { tags, summary: 'RunPod: remove your queued jobs (all queued jobs for an admin).' } }, async (req) => {
      if (seesAllJobs(req.principal)) return { removed: await kiln.queue.purgeQueued(), status: 'completed' };
      let removed = 0;
      for (const job of await kiln.queue.list({ owner: req.principal.name, state: 'queued', limit: 10_000 })) {
        await kiln.queue.cancel(job.id);
        removed++;
      }
      return { removed, status: 'completed' };
    });
    // At the root, /health is the native route (which carries these fields too).
    if (prefixed) {
      r.get('/health', { schema: { tags, summary: 'RunPod: job and worker counts.' } }, async () => {
        const c = await kiln.queue.counts();
        return {
          jobs: { completed: c.succeeded, failed: c.failed, inProgress: c.running, inQueue: c.queued, retried: kiln.queue.stats.retried },
          workers: { idle: kiln.queue.busy ? 0 : 1, running: kiln.queue.busy ? 1 : 0, ready: 1, initializing: 0, throttled: 0, unhealthy: 0 },
        };
      });
    }
  };
  await app.register((r) => routes(r, false));
  await app.register((r) => routes(r, true), { prefix: '/v2/:endpointId' });

  // Seed 000's direct routes: generate and answer a URL of the PNG, then serve it by file name.
  app.post(
    '/alpha/v1/txt2img',
    { schema: { tags: ['runpod'], summary: 'Seed 000: generate (blocking) and answer {status, url, filename, info}.', body: { type: 'object' } } },
    async (req, reply) => {
      const raw = req.body as Record<string, unknown>;
      const input = (raw.input && typeof raw.input === 'object' ? raw.input : raw) as Record<string, unknown>;
      const spec = await specOf(input);
      const job = await submitWithInput(kiln, spec, () => kiln.submit(spec, { owner: ownerOf(req) }));
      const done = (await kiln.queue.waitFor(job.id, syncWaitMs(kiln)))!;
      if (done.state !== 'succeeded') return reply.status(failureStatus(done).status).send({ status: 'error', error: done.error?.message ?? done.state });
      const images = await resultImages(kiln, done);
      const filename = alphaFilename(done, 0);
      return { status: 'success', url: `${baseUrl(kiln, req)}/alpha/v1/file/${filename}`, filename, info: images[0]!.meta.infotext };
    },
  );
  app.get(
    '/alpha/v1/file/:filename',
    {
      schema: {
        tags: ['runpod'],
        summary: 'Seed 000: a generated PNG by file name.',
        params: { type: 'object', properties: { filename: { type: 'string', maxLength: 200 } } },
      },
    },
    async (req, reply) => {
      const { filename } = req.params as { filename: string };
      const m = /^alpha_\d+_([0-9a-f-]{36})(?:_(\d+))?\.png$/.exec(filename);
      const notFound = new HttpError(404, 'not_found', `file ${filename} not found`);
      if (!m) throw notFound;
      const job = await kiln.queue.get(m[1]!);
      const meta = job?.result?.images[Number(m[2] ?? 0)];
      if (!job || !meta || meta.format !== 'png' || !visible(req, job.owner)) throw notFound;
      const bytes = await kiln.storage.read(meta.name);
      if (!bytes) throw notFound;
      return reply.type('image/png').send(bytes);
    },
  );
}

/** Seed 000's file names: alpha_<unix seconds>_<job id>[_<index>].png. */
function alphaFilename(job: Job, index: number): string {
  return `alpha_${Math.floor(job.createdAt / 1000)}_${job.id}${index > 0 ? `_${index}` : ''}.png`;
}
