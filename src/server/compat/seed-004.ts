// Seed 004 (Diffusion API, async jobs): POST /txt2img -> {job_id, status: "queued"}; GET /queue/{job_id} reports
// progress (0-100), current_phase and state, and once done the image, the request payload with defaults and
// generation facts. The payload and what the seed's API already handed out live in the job record (`extra.seed004`),
// so /queue/{id} answers the same after a restart. As in the seed, a job is gone for this API once its final
// answer was delivered (the image file stays). Listings: /hello, /models, /models/aliases, /loras, /upscalers,
// /sampling_methods.
// LoRA and hires fix map onto the job model (the capability check answers 501). Errors: {status: "error", error}.
import { leftOutFields, sentFields } from '../model-presets.ts';
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Job } from '../../queue/job.ts';
import { resolveSeed } from '../../engine/index.ts';
import { HttpError } from '../errors.ts';
import { maySeeJob } from '../auth.ts';
import { baseSpec, ownerOf, promptNetworks, resultImages, sendClassified } from './common.ts';
import { sendStoredImage } from '../native/images.ts';

/** Seed 004's request defaults. */
export const SEED004_DEFAULTS = {
  steps: 30,
  cfg_scale: 7.0,
  width: 512,
  height: 512,
  sampler_name: 'DPM++ 2M Karras',
  scheduler_type: 'karras',
  fileType: 'jpg',
  jpeg_quality: 85,
  refiner_switch_at: 0.8,
};

const SCHEDULER_TYPES = ['default', 'karras', 'exponential', 'ddim', 'pndm'];

const body = {
  type: 'object',
  required: ['prompt'],
  properties: {
    prompt: { type: 'string' },
    negative_prompt: { type: 'string' },
    steps: { type: 'integer', minimum: 1, default: SEED004_DEFAULTS.steps },
    cfg_scale: { type: 'number', minimum: 0, default: SEED004_DEFAULTS.cfg_scale },
    width: { type: 'integer', minimum: 64, default: SEED004_DEFAULTS.width },
    height: { type: 'integer', minimum: 64, default: SEED004_DEFAULTS.height },
    model: { type: 'string', description: 'Model name or friendly label (GET /models/aliases); default: the server model.' },
    sampler_name: { type: 'string', default: SEED004_DEFAULTS.sampler_name },
    scheduler_type: { type: 'string', enum: SCHEDULER_TYPES, default: SEED004_DEFAULTS.scheduler_type },
    fileType: { type: 'string', enum: ['jpg', 'png'], default: SEED004_DEFAULTS.fileType },
    jpeg_quality: { type: 'integer', minimum: 1, maximum: 100, default: SEED004_DEFAULTS.jpeg_quality },
    loras: {
      type: 'array',
      items: {
        anyOf: [{ type: 'string' }, { type: 'object', required: ['name'], properties: { name: { type: 'string' }, scale: { type: 'number', default: 1.0 } } }],
      },
    },
    hires: {
      type: 'object',
      properties: {
        enabled: { type: 'boolean' },
        scale: { type: 'number', default: 2.0 },
        upscaler: { type: 'string', default: 'Latent' },
        steps: { type: 'integer', default: 20 },
        denoising_strength: { type: 'number', default: 0.4 },
      },
    },
    refiner_checkpoint: { type: ['string', 'null'] },
    refiner_switch_at: { type: 'number', minimum: 0, maximum: 1, default: SEED004_DEFAULTS.refiner_switch_at },
    seed: { type: 'integer', minimum: -1, maximum: 4294967295 },
  },
};

// biome-ignore lint/suspicious/noExplicitAny: validated against the route's body schema before use; fields are read as the schema types them
type Txt2ImgRequest = Record<string, any>;

/** What this surface keeps in the job record (Job.extra.seed004). */
interface Seed004Extra {
  /** The request with defaults filled and the seed resolved, echoed back when the job is done. */
  payload: Txt2ImgRequest;
  /** Server memory when the job was accepted (the seed reports before/after). */
  memoryBeforeMb: number;
  /** The final answer was handed out; the seed deletes the job then. */
  delivered?: boolean;
}

const seed004Of = (job: Job): Seed004Extra | undefined => job.extra.seed004 as Seed004Extra | undefined;

const rssMb = () => Number((process.memoryUsage().rss / (1024 * 1024)).toFixed(2));

function errorHandler(err: FastifyError, req: FastifyRequest, reply: FastifyReply): void {
  // Schema errors are FastAPI's 422 there.
  sendClassified(
    err,
    req,
    reply,
    'seed-004 request failed',
    (c) => ({ status: 'error', error: c.message }),
    (c) => (c.status === 400 && err.validation ? 422 : c.status),
  );
}

export async function seed004Routes(app: FastifyInstance): Promise<void> {
  const kiln = app.kiln;
  app.setErrorHandler(errorHandler);
  const tags = ['seed-004'];

  app.get('/hello', { config: { auth: 'public' }, schema: { tags, summary: 'Health check.' } }, async () => ({ ok: true }));

  const modelList = () => kiln.models.list('checkpoint').map((m) => ({ name: m.name, label: m.labels[0] ?? m.name }));
  app.get('/models', { schema: { tags, summary: 'Models with friendly labels.' } }, async () => ({ status: 'success', models: modelList() }));
  app.get('/models/aliases', { schema: { tags, summary: 'Models and the labels that can be used instead of their names.' } }, async () => {
    const models = kiln.models
      .list('checkpoint')
      .flatMap((m) => (m.labels.length ? m.labels.map((label) => ({ name: m.name, label })) : [{ name: m.name, label: m.name }]));
    return { status: 'success', models, message: `${models.length} model label(s) available` };
  });
  app.get('/loras', { schema: { tags } }, async () => ({ status: 'success', loras: kiln.models.list('lora').map((l) => ({ name: l.name, scale: 1.0 })) }));
  app.get('/upscalers', { schema: { tags } }, async () => ({
    status: 'success',
    // As the seed: built-in ones with path "internal", files by their path relative to the models folder.
    upscalers: [
      ...kiln.upscalers.names({ latent: true }).flatMap((name) => (kiln.upscalers.resolve(name) ? [] : [{ name, path: 'internal' }])),
      ...kiln.upscalers.files().map((u) => ({ name: u.name, path: u.relativePath })),
    ],
  }));
  app.get('/sampling_methods', { schema: { tags } }, async () => {
    const names = kiln.samplers().map((s) => s.name);
    // The seed also lists the legacy "<sampler> Karras" names; they are accepted as sampler_name.
    const karras = ['LMS', 'DPM++ 2M', 'DPM++ SDE'].filter((n) => names.includes(n)).map((n) => `${n} Karras`);
    return { status: 'success', sampling_methods: [...names, ...karras], scheduler_types: SCHEDULER_TYPES };
  });

  app.post('/txt2img', { schema: { tags, summary: 'Submit a generation job; poll GET /queue/{job_id}.', body } }, async (req) => {
    const b = req.body as Txt2ImgRequest;
    const loras = ((b.loras ?? []) as Array<string | { name: string; scale?: number }>).map((l) =>
      typeof l === 'string' ? { name: l, weight: 1 } : { name: l.name, weight: l.scale ?? 1 },
    );
    const tags = promptNetworks([b.prompt]);
    const scheduleOf: Record<string, string> = { default: 'Automatic', karras: 'Karras', exponential: 'Exponential', ddim: 'DDIM', pndm: 'Automatic' };
    const spec = baseSpec({
      model: b.model,
      prompts: [b.prompt],
      negativePrompts: [b.negative_prompt ?? ''],
      width: b.width,
      height: b.height,
      steps: b.steps,
      cfgScale: b.cfg_scale,
      // "pndm" names diffusers' PNDM scheduler, A1111's PLMS sampler.
      sampler: b.scheduler_type === 'pndm' ? 'PLMS' : b.sampler_name,
      schedule: scheduleOf[b.scheduler_type]!,
      seed: resolveSeed(b.seed),
      output: { format: b.fileType === 'png' ? 'png' : 'jpeg', quality: b.jpeg_quality, response: 'base64' },
      refiner: b.refiner_checkpoint || undefined,
      refinerSwitchAt: b.refiner_checkpoint ? b.refiner_switch_at : undefined,
      loras: loras.length || tags.loras ? [...loras, ...(tags.loras ?? [])] : undefined,
      hypernetworks: tags.hypernetworks,
      hires: b.hires?.enabled
        ? { scale: b.hires.scale, upscaler: b.hires.upscaler, steps: b.hires.steps, denoisingStrength: b.hires.denoising_strength }
        : undefined,
      sourceFields: { loras: loras.length ? 'loras' : 'prompt', hypernetworks: 'prompt', hires: 'hires' },
      leftOut: leftOutFields(sentFields(req), {
        steps: ['steps'],
        cfgScale: ['cfg_scale'],
        sampler: ['sampler_name', 'scheduler_type'],
        schedule: ['scheduler_type'],
        width: ['width'],
        height: ['height'],
      }),
    });
    const seed004: Seed004Extra = { payload: { ...b, seed: spec.seed }, memoryBeforeMb: rssMb() };
    const job = await kiln.submit(spec, { owner: ownerOf(req), extra: { seed004 } });
    return { job_id: job.id, status: 'queued' };
  });

  // output_path ("outputs/<name>") is served here, relative to the server root, as the seed's outputs folder.
  app.get(
    '/outputs/:name',
    {
      schema: {
        tags,
        summary: 'The image a finished job saved (output_path of GET /queue/{job_id}); for its owner or an admin.',
        params: { type: 'object', required: ['name'], properties: { name: { type: 'string', minLength: 1, maxLength: 255 } } },
      },
    },
    async (req, reply) => sendStoredImage(req, reply, (req.params as { name: string }).name),
  );

  app.get(
    '/queue/:job_id',
    {
      schema: {
        tags,
        summary: 'Job progress (0-100), phase and state; the image and details when done.',
        params: { type: 'object', properties: { job_id: { type: 'string', maxLength: 100 } } },
      },
    },
    async (req) => {
      const { job_id } = req.params as { job_id: string };
      const job = await kiln.queue.get(job_id);
      const p = req.principal;
      const entry = job && seed004Of(job);
      if (!job || !entry || entry.delivered || !maySeeJob(p, job.owner)) throw new HttpError(404, 'not_found', `job ${job_id} not found`);
      const base = { status: 'success', job_id, progress: progressOf(job), current_phase: phaseOf(job), state: stateOf(job), error: null as string | null };
      if (job.state === 'queued' || job.state === 'running') return base;
      await kiln.queue.updateExtra(job_id, { seed004: { ...entry, delivered: true } });
      if (job.state !== 'succeeded') return { ...base, status: 'error', error: job.error?.message ?? job.state };
      const [img] = await resultImages(kiln, job);
      const fileType = job.spec.output.format === 'png' ? 'png' : 'jpg';
      return {
        ...base,
        payload: entry.payload,
        image: img!.bytes.toString('base64'),
        output_path: `outputs/${img!.meta.name}`,
        width: img!.meta.width,
        height: img!.meta.height,
        file_type: fileType,
        jpeg_quality: job.spec.output.quality,
        generation_time_sec: Number((((job.finishedAt ?? 0) - (job.startedAt ?? 0)) / 1000).toFixed(2)),
        memory_before_mb: entry.memoryBeforeMb,
        memory_after_mb: rssMb(),
        seed: img!.meta.seed,
      };
    },
  );
}

function progressOf(job: Job): number {
  if (job.state === 'succeeded') return 100;
  return Number((job.progress * 100).toFixed(1));
}

function phaseOf(job: Job): string {
  if (job.state === 'queued') return 'queued';
  if (job.state === 'running') {
    if (job.phase === 'decoding' || job.phase === 'loading' || job.phase === 'upscaling') return job.phase;
    // With hires fix the seed calls the first pass "initial generation" (0-50 %), then "upscaling" (50-100 %).
    return job.spec.hires ? 'initial generation' : 'generation';
  }
  return job.state === 'succeeded' ? 'done' : 'error';
}

function stateOf(job: Job): string {
  return { queued: 'queued', running: 'processing', succeeded: 'done', failed: 'error', cancelled: 'error' }[job.state];
}
