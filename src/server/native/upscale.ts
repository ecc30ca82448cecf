// POST /v1/upscale: an image through an upscaler (A1111 Extras semantics) as a job with progress; the job is
// then polled, streamed and fetched like any other (/v1/jobs/{id}).
import type { FastifyInstance } from 'fastify';
import { MAX_UPSCALE_FACTOR, SPEC_DEFAULTS, type JobSpec } from '../../queue/job-spec.ts';
import { resolveSeed } from '../../engine/index.ts';
import { decodeBase64Field } from '../uploads.ts';
import { jobLinks } from './views.ts';

interface UpscaleBody {
  image: string;
  scale?: number;
  width?: number;
  height?: number;
  crop?: boolean;
  upscaler: string;
  upscaler_2?: string;
  upscaler_2_visibility?: number;
  format?: 'png' | 'jpeg' | 'webp';
}

const schema = {
  type: 'object',
  required: ['image', 'upscaler'],
  additionalProperties: false,
  properties: {
    image: { type: 'string', minLength: 1, description: 'The image, base64 or a data: URI.' },
    scale: { type: 'number', minimum: 1, maximum: MAX_UPSCALE_FACTOR, description: 'Upscale by this factor (default 2).' },
    width: { type: 'integer', minimum: 1, maximum: 65536, description: 'Upscale to this width (with height; instead of scale).' },
    height: { type: 'integer', minimum: 1, maximum: 65536 },
    crop: { type: 'boolean', description: 'With width/height: centre-crop to exactly that size (default true).' },
    upscaler: { type: 'string', minLength: 1, maxLength: 200, description: 'Lanczos, Nearest or a model in models/upscalers (GET /sdapi/v1/upscalers).' },
    upscaler_2: { type: 'string', minLength: 1, maxLength: 200 },
    upscaler_2_visibility: { type: 'number', minimum: 0, maximum: 1 },
    format: { type: 'string', enum: ['png', 'jpeg', 'webp'] },
  },
} as const;

export async function upscaleRoutes(app: FastifyInstance): Promise<void> {
  const kiln = app.kiln;
  app.post('/v1/upscale', { schema: { tags: ['jobs'], summary: 'Upscale an image; answers 202 with the job id.', body: schema } }, async (req, reply) => {
    const b = req.body as UpscaleBody;
    const toSize = b.width !== undefined || b.height !== undefined;
    const spec: JobSpec = {
      kind: 'upscale',
      prompts: [''],
      negativePrompts: [''],
      imagesPerPrompt: 1,
      width: SPEC_DEFAULTS.width,
      height: SPEC_DEFAULTS.height,
      steps: 1,
      cfgScale: 0,
      sampler: SPEC_DEFAULTS.sampler,
      schedule: SPEC_DEFAULTS.schedule,
      seed: resolveSeed(undefined),
      subseed: 0,
      subseedStrength: 0,
      output: { ...SPEC_DEFAULTS.output, format: b.format ?? 'png' },
      upscale: {
        mode: toSize ? 1 : 0,
        scale: toSize ? undefined : (b.scale ?? 2),
        width: toSize ? b.width : undefined,
        height: toSize ? b.height : undefined,
        crop: toSize ? b.crop !== false : undefined,
        upscaler1: b.upscaler,
        upscaler2: b.upscaler_2,
        upscaler2Visibility: b.upscaler_2_visibility,
      },
      sourceFields: { upscale: 'upscaler' },
    };
    const bytes = decodeBase64Field(b.image, 'image', kiln.config.limits);
    kiln.checkSpec({ ...spec, initImage: 'pending' });
    spec.initImage = await kiln.storeUpload(bytes, 'image');
    try {
      const job = await kiln.submit(spec, { owner: req.principal.name });
      return reply
        .status(202)
        .header('location', `/v1/jobs/${job.id}`)
        .send({ id: job.id, state: job.state, links: jobLinks(job.id) });
    } catch (e) {
      await kiln.storage.remove(spec.initImage).catch(() => undefined);
      throw e;
    }
  });
}
