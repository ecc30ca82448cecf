// RunPod serverless queue API, with the payload of seed 000 (LayerDiffuse Alpha API): POST /run, /runsync,
// GET /status/{id}, /stream/{id}, POST /cancel/{id}, /retry/{id}, /purge-queue, GET /health — at the root and
// under /v2/{endpoint_id}/ (the path RunPod clients use, so only host and port change). `input` is an
// A1111-style txt2img body with seed 000's defaults; each request becomes one native job whose id is the
// RunPod job id. Input a handler would reject (missing prompt, unknown sampler, missing features) makes a
// FAILED job with the reason in `error`, as a RunPod worker does. Also /alpha/v1/txt2img and
// /alpha/v1/file/{filename} from the same seed.
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { randomUUID } from 'node:crypto';
import { Ajv } from 'ajv';
import type { ValidateFunction } from 'ajv';
import type { KilnServices } from '../services.ts';
import type { Job } from '../../queue/job.ts';
import { FINAL_STATES } from '../../queue/job.ts';
import { QueueClosedError, QueueFullError } from '../../queue/queue.ts';
import { HttpError } from '../errors.ts';
import { ajvPath, type SchemaValidationError } from '../validation-errors.ts';
import { maySeeJob, seesAllJobs } from '../auth.ts';
import { baseUrl } from '../native/views.ts';
import { a1111BodySchema, specFromA1111 } from './a1111.ts';
import type { Body } from './a1111.ts';
import { classify, dataUrl, ownerOf, resultImages, sendClassified, submitWithInput, syncWaitMs } from './common.ts';

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

/** What the adapter remembers about a RunPod job beyond the native job. */
interface RunPodRecord {
  id: string;
  owner: string;
  /** The native job now serving this id (a retry replaces it); undefined when the input was rejected. */
  nativeId?: string;
  input: unknown;
  createdAt: number;
  /** Why the input was rejected (a FAILED job without a native job). */
  error?: string;
  /** The policy's executionTimeout stopped it. */
  timedOut?: boolean;
  /** /stream already handed out the output. */
  streamed?: boolean;
}

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
    s3Config: { type: 'object' },
  },
};

interface Envelope {
  input: Record<string, unknown>;
  webhook?: string;
  policy?: { executionTimeout?: number; lowPriority?: boolean; ttl?: number };
  s3Config?: object;
}

function errorHandler(err: SchemaValidationError, req: FastifyRequest, reply: FastifyReply): void {
  if (err.validation) {
    const e = err.validation[0]!;
    const field = ajvPath(e).join('.') || 'body';
    void reply.status(400).send({ error: `${field}: ${e.keyword === 'required' ? 'is required' : (e.message ?? 'is invalid')}` });
    return;
  }
  sendClassified(err, req, reply, 'runpod request failed', (c) => ({ error: c.message }));
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
  const records = new Map<string, RunPodRecord>();
  const validators = inputValidators();
  let retried = 0;
  app.setErrorHandler(errorHandler);

  const visible = (req: FastifyRequest, owner: string) => maySeeJob(req.principal, owner);

  /** The record for an id (falling back to a native job submitted here before a restart); 404 otherwise. */
  const recordOf = (req: FastifyRequest, id: string): RunPodRecord => {
    let rec = records.get(id);
    if (!rec) {
      const job = kiln.queue.get(id);
      if (job) rec = { id, owner: job.owner, nativeId: id, input: null, createdAt: job.createdAt };
    }
    if (!rec || !visible(req, rec.owner)) throw new HttpError(404, 'not_found', `job ${id} not found`);
    return rec;
  };

  /** A1111-style input -> a submitted native job, or the reason it is rejected. */
  async function submitInput(input: Record<string, unknown>, owner: string): Promise<{ job?: Job; error?: string }> {
    try {
      if (typeof input.prompt !== 'string' || input.prompt.trim() === '') throw new HttpError(400, 'invalid_request', 'input.prompt: Missing prompt (a non-empty string is required)');
      const kind = input.init_images !== undefined ? 'img2img' : 'txt2img';
      const body = structuredClone(input) as Body;
      const validate = validators[kind];
      if (!validate(body)) throw new HttpError(400, 'invalid_request', describeAjv(validate));
      const spec = await specFromA1111(kiln, body, kind);
      spec.output = { format: 'png', quality: 90, response: 'base64' };
      return { job: await submitWithInput(kiln, spec, async () => kiln.submit(spec, { owner })) };
    } catch (e) {
      // A full queue or shutdown is the platform refusing the request, not a failed job.
      if (e instanceof QueueFullError || e instanceof QueueClosedError) throw e;
      const c = classify(e);
      if (c.status >= 500 && c.status !== 501) throw e;
      return { error: c.message };
    }
  }

  async function create(req: FastifyRequest, env: Envelope): Promise<RunPodRecord> {
    if (env.s3Config) throw new HttpError(501, 'not_implemented', 's3Config: uploading results to S3 is not implemented in Kiln yet; results come back in the output');
    const owner = ownerOf(req);
    const { job, error } = await submitInput(env.input, owner);
    const rec: RunPodRecord = { id: job?.id ?? randomUUID(), owner, nativeId: job?.id, input: env.input, createdAt: job?.createdAt ?? Date.now(), error };
    records.set(rec.id, rec);
    if (job) watch(rec, env);
    else if (env.webhook) void notify(env.webhook, rec);
    return rec;
  }

  /** Policy timeout and webhook for a submitted job. */
  function watch(rec: RunPodRecord, env: Envelope): void {
    const nativeId = rec.nativeId!;
    const timeout = env.policy?.executionTimeout;
    let timer: NodeJS.Timeout | undefined;
    if (timeout) {
      timer = setTimeout(() => {
        const job = kiln.queue.get(nativeId);
        if (job && !FINAL_STATES.has(job.state)) {
          rec.timedOut = true;
          void kiln.queue.cancel(nativeId);
        }
      }, timeout);
      timer.unref();
    }
    const off = kiln.queue.events(nativeId, (e) => {
      if (e.type !== 'succeeded' && e.type !== 'failed' && e.type !== 'cancelled') return;
      off();
      clearTimeout(timer);
      if (env.webhook) void notify(env.webhook, rec);
    });
  }

  /** Webhook: POST the /status body; a non-2xx answer is retried twice, 10 s apart. */
  async function notify(url: string, rec: RunPodRecord): Promise<void> {
    const body = JSON.stringify(await jobObject(rec));
    for (let attempt = 0; attempt < 3; attempt++) {
      try {
        const r = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body });
        if (r.ok) return;
      } catch {
        // retried below
      }
      if (attempt < 2) await new Promise((res) => setTimeout(res, 10_000).unref());
    }
    app.log.warn({ jobId: rec.id }, 'runpod webhook failed after 3 attempts');
  }

  function statusOf(rec: RunPodRecord, job: Job | undefined): RunPodStatus {
    if (!job) return 'FAILED';
    if (rec.timedOut) return 'TIMED_OUT';
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
  async function jobObject(rec: RunPodRecord): Promise<Record<string, unknown>> {
    const job = rec.nativeId ? kiln.queue.get(rec.nativeId) : undefined;
    const status = statusOf(rec, job);
    const now = Date.now();
    const out: Record<string, unknown> = {
      delayTime: job ? (job.startedAt ?? now) - job.createdAt : 0,
      executionTime: job?.startedAt !== undefined ? (job.finishedAt ?? now) - job.startedAt : 0,
      id: rec.id,
      status,
      workerId: 'kiln',
    };
    if (status === 'COMPLETED' && job) out.output = await outputOf(job);
    if (status === 'FAILED' || status === 'TIMED_OUT') out.error = rec.error ?? (rec.timedOut ? 'the job ran longer than the policy executionTimeout' : (job?.error?.message ?? 'the job failed'));
    return out;
  }

  async function outputOf(job: Job) {
    const images = await resultImages(kiln, job);
    const first = images[0]!;
    const out: Record<string, unknown> = {
      status: 'success',
      url: dataUrl(first),
      filename: alphaFilename(job, 0),
      image_base64: first.bytes.toString('base64'),
      info: first.meta.infotext,
    };
    // Seed 000 returns one image; with batch_size/n_iter > 1 the rest come in `images`.
    if (images.length > 1) out.images = images.map((img, i) => ({ filename: alphaFilename(job, i), image_base64: img.bytes.toString('base64'), info: img.meta.infotext }));
    return out;
  }

  const waitMs = (q: { wait?: number }) => Math.min(300_000, Math.max(1000, q.wait ?? 90_000));

  const routes = async (r: FastifyInstance, prefixed: boolean) => {
    const tags = ['runpod'];
    const idParams = { type: 'object', properties: { id: { type: 'string', minLength: 1, maxLength: 100 } } };
    r.post('/run', { schema: { tags, summary: 'RunPod: queue a job; answers {id, status}.', body: envelopeSchema } }, async (req) => {
      const rec = await create(req, req.body as Envelope);
      const obj = await jobObject(rec);
      return { id: rec.id, status: obj.status, ...(obj.error ? { error: obj.error } : {}) };
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
        const rec = await create(req, req.body as Envelope);
        if (rec.nativeId) await kiln.queue.waitFor(rec.nativeId, waitMs(req.query as { wait?: number }));
        return jobObject(rec);
      },
    );
    r.get('/status/:id', { schema: { tags, summary: 'RunPod: the job object.', params: idParams } }, async (req) => jobObject(recordOf(req, (req.params as { id: string }).id)));
    r.get('/stream/:id', { schema: { tags, summary: 'RunPod: output produced since the last call.', params: idParams } }, async (req) => {
      const rec = recordOf(req, (req.params as { id: string }).id);
      const obj = await jobObject(rec);
      const stream = obj.output !== undefined && !rec.streamed ? [{ output: obj.output }] : [];
      if (stream.length) rec.streamed = true;
      return { status: obj.status, stream };
    });
    r.post('/cancel/:id', { schema: { tags, summary: 'RunPod: cancel a job.', params: idParams } }, async (req) => {
      const rec = recordOf(req, (req.params as { id: string }).id);
      if (rec.nativeId) await kiln.queue.cancel(rec.nativeId);
      const obj = await jobObject(rec);
      return { id: rec.id, status: obj.status };
    });
    r.post('/retry/:id', { schema: { tags, summary: 'RunPod: run a FAILED or TIMED_OUT job again under the same id.', params: idParams } }, async (req) => {
      const rec = recordOf(req, (req.params as { id: string }).id);
      const obj = await jobObject(rec);
      if (obj.status !== 'FAILED' && obj.status !== 'TIMED_OUT') throw new HttpError(400, 'invalid_request', `job ${rec.id} is ${String(obj.status)}; only FAILED or TIMED_OUT jobs can be retried`);
      const old = rec.nativeId ? kiln.queue.get(rec.nativeId) : undefined;
      let job: Job | undefined;
      let error: string | undefined;
      if (old) job = kiln.submit(old.spec, { owner: rec.owner });
      else ({ job, error } = await submitInput((rec.input ?? {}) as Record<string, unknown>, rec.owner));
      Object.assign(rec, { nativeId: job?.id, error, timedOut: false, streamed: false });
      retried++;
      if (job) watch(rec, { input: {} });
      return { id: rec.id, status: (await jobObject(rec)).status };
    });
    r.post('/purge-queue', { schema: { tags, summary: 'RunPod: remove your queued jobs (all queued jobs for an admin).' } }, async (req) => {
      if (seesAllJobs(req.principal)) return { removed: kiln.queue.purgeQueued(), status: 'completed' };
      let removed = 0;
      for (const job of kiln.queue.list({ owner: req.principal.name, state: 'queued', limit: 10_000 })) {
        await kiln.queue.cancel(job.id);
        removed++;
      }
      return { removed, status: 'completed' };
    });
    // At the root, /health is the native route (which carries these fields too).
    if (prefixed) {
      r.get('/health', { schema: { tags, summary: 'RunPod: job and worker counts.' } }, async () => {
        const c = kiln.queue.counts();
        return {
          jobs: { completed: c.succeeded, failed: c.failed, inProgress: c.running, inQueue: c.queued, retried },
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
      const { job, error } = await submitInput(input, ownerOf(req));
      if (!job) throw new HttpError(400, 'invalid_request', error!);
      const done = (await kiln.queue.waitFor(job.id, syncWaitMs(kiln)))!;
      if (done.state !== 'succeeded') return reply.status(done.state === 'cancelled' ? 409 : 500).send({ status: 'error', error: done.error?.message ?? done.state });
      const images = await resultImages(kiln, done);
      const filename = alphaFilename(done, 0);
      return { status: 'success', url: `${baseUrl(kiln, req)}/alpha/v1/file/${filename}`, filename, info: images[0]!.meta.infotext };
    },
  );
  app.get(
    '/alpha/v1/file/:filename',
    { schema: { tags: ['runpod'], summary: 'Seed 000: a generated PNG by file name.', params: { type: 'object', properties: { filename: { type: 'string', maxLength: 200 } } } } },
    async (req, reply) => {
      const { filename } = req.params as { filename: string };
      const m = /^alpha_\d+_([0-9a-f-]{36})(?:_(\d+))?\.png$/.exec(filename);
      const notFound = new HttpError(404, 'not_found', `file ${filename} not found`);
      if (!m) throw notFound;
      const job = kiln.queue.get(m[1]!);
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
