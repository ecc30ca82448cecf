// OpenAI Images API: POST /v1/images/generations (JSON), /v1/images/edits and /v1/images/variations
// (multipart). Each request becomes one native job (n images of one prompt); results come back as b64_json or
// as URLs of the stored files. Errors are OpenAI's {error: {message, type, param, code}} with all four keys.
// Negative prompts have no OpenAI field; as LocalAI does, "positive|negative" in the prompt and a
// `negative_prompt` field both work, and sd.cpp's <sd_cpp_extra_args>{json}</sd_cpp_extra_args> sets native fields.
import { leftOutFields, recordSentFields, sentFields } from '../model-presets.ts';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import sharp from 'sharp';
import type { KilnServices } from '../services.ts';
import type { JobSpec } from '../../queue/job-spec.ts';
import type { ImageFormat } from '../../storage/encode.ts';
import { resolveSeed } from '../../engine/index.ts';
import { HttpError } from '../errors.ts';
import { ajvPath, type SchemaValidationError } from '../validation-errors.ts';
import { lastFile, readMultipart } from '../multipart.ts';
import { baseUrl, imageUrl } from '../native/views.ts';
import { baseSpec, floor8, generateImages, parseSize, promptNetworks, sendClassified, storeImageBytes } from './common.ts';
import { storeMaskImage } from '../uploads.ts';

// ---------------------------------------------------------------------------------------------------------
// Errors.

function errorType(status: number): string {
  if (status === 401) return 'authentication_error';
  if (status === 403) return 'permission_error';
  if (status === 404) return 'not_found_error';
  if (status === 429) return 'rate_limit_error';
  if (status === 501) return 'not_implemented_error';
  return status >= 500 ? 'server_error' : 'invalid_request_error';
}

export function openAiError(status: number, message: string, param: string | null = null, code: string | null = null) {
  return { error: { message, type: errorType(status), param, code } };
}

function errorHandler(err: SchemaValidationError, req: FastifyRequest, reply: FastifyReply): void {
  if (err.validation) {
    const e = err.validation.find((v) => v.keyword === 'anyOf') ?? err.validation[0]!;
    const param = ajvPath(e).join('.') || null;
    const message =
      e.keyword === 'required'
        ? `Missing required parameter: '${param}'.`
        : e.keyword === 'additionalProperties'
          ? `Unrecognized request argument supplied: ${param}`
          : e.keyword === 'enum'
            ? `Invalid value for '${param}': must be one of ${((e.params?.allowedValues ?? []) as unknown[]).map((v) => `'${String(v)}'`).join(', ')}.`
            : `Invalid value for '${param}': ${e.message ?? 'invalid'}.`;
    void reply
      .status(400)
      .send(
        openAiError(
          400,
          message,
          param,
          e.keyword === 'required' ? 'missing_required_parameter' : e.keyword === 'additionalProperties' ? 'unknown_parameter' : 'invalid_value',
        ),
      );
    return;
  }
  sendClassified(err, req, reply, 'openai request failed', (c) => {
    const code = c.status === 401 ? 'invalid_api_key' : c.code;
    // Width and height come from `size` here.
    const param = c.field === 'width' || c.field === 'height' ? 'size' : (c.field ?? null);
    return openAiError(c.status, c.message, param, code);
  });
}

// ---------------------------------------------------------------------------------------------------------
// Requests.

const _FORMATS = ['png', 'jpeg', 'webp'] as const;
const QUALITY_STEPS: Record<string, number> = { low: 12, medium: 20, standard: 20, auto: 20, high: 30, hd: 30 };

const common = {
  prompt: { type: 'string', maxLength: 32000 },
  negative_prompt: { type: 'string', maxLength: 32000, description: 'Kiln/LocalAI extension; "positive|negative" in prompt also works.' },
  model: { type: 'string', description: 'A local model name or label; OpenAI names (dall-e-2, gpt-image-1, ...) use the server default.' },
  n: { anyOf: [{ type: 'integer', minimum: 1, maximum: 10 }, { type: 'null' }] },
  size: { anyOf: [{ type: 'string', pattern: '^(auto|\\d{1,5}x\\d{1,5})$' }, { type: 'null' }] },
  quality: { anyOf: [{ type: 'string', enum: ['auto', 'high', 'medium', 'low', 'hd', 'standard'] }, { type: 'null' }] },
  response_format: { anyOf: [{ type: 'string', enum: ['url', 'b64_json'] }, { type: 'null' }] },
  output_format: { anyOf: [{ type: 'string', enum: ['png', 'jpeg', 'webp'] }, { type: 'null' }] },
  output_compression: { anyOf: [{ type: 'integer', minimum: 0, maximum: 100 }, { type: 'null' }] },
  background: { anyOf: [{ type: 'string', enum: ['transparent', 'opaque', 'auto'] }, { type: 'null' }] },
  moderation: { anyOf: [{ type: 'string', enum: ['low', 'auto'] }, { type: 'null' }] },
  style: { anyOf: [{ type: 'string', enum: ['vivid', 'natural'] }, { type: 'null' }] },
  stream: { anyOf: [{ type: 'boolean' }, { type: 'null' }] },
  partial_images: { anyOf: [{ type: 'integer', minimum: 0, maximum: 3 }, { type: 'null' }] },
  user: { type: 'string' },
  seed: { type: 'integer', minimum: -1, maximum: 4294967295, description: 'Kiln extension.' },
};

const generationsSchema = { type: 'object', additionalProperties: false, required: ['prompt'], properties: common };
const editsSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['prompt'],
  properties: {
    ...common,
    input_fidelity: { anyOf: [{ type: 'string', enum: ['high', 'low'] }, { type: 'null' }] },
    strength: { type: 'number', minimum: 0, maximum: 1, description: 'Kiln extension: how much to change the image (default 0.75).' },
  },
};
const variationsSchema = {
  type: 'object',
  additionalProperties: false,
  properties: { model: common.model, n: common.n, size: common.size, response_format: common.response_format, user: common.user, seed: common.seed },
};

interface ImagesRequest {
  prompt?: string;
  negative_prompt?: string;
  model?: string;
  n?: number | null;
  size?: string | null;
  quality?: string | null;
  response_format?: 'url' | 'b64_json' | null;
  output_format?: ImageFormat | null;
  output_compression?: number | null;
  background?: string | null;
  stream?: boolean | null;
  partial_images?: number | null;
  seed?: number;
  strength?: number;
}

/** Uploaded files of an edit/variation request, kept as bytes. */
interface Uploads {
  images: Buffer[];
  mask?: Buffer;
}

declare module 'fastify' {
  interface FastifyRequest {
    openaiUploads?: Uploads;
  }
}

const NUMERIC_FIELDS = new Set(['n', 'output_compression', 'partial_images', 'seed', 'strength']);

/** One text field of an edit/variation form: numbers and booleans converted, the rest kept as strings. */
function addFormField(body: Record<string, unknown>, name: string, raw: string): Record<string, unknown> {
  if (NUMERIC_FIELDS.has(name) && raw.trim() !== '' && Number.isFinite(Number(raw))) body[name] = Number(raw);
  else if (name === 'stream') body.stream = raw === 'true';
  else body[name] = raw;
  return body;
}

/** multipart/form-data -> req.body (strings; numbers and booleans converted) + the files in req.openaiUploads. */
async function assembleForm(req: FastifyRequest): Promise<void> {
  const form = await readMultipart(req, {
    fileFields: ['image', 'image[]', 'mask'],
    unknownFile: (field) => new HttpError(400, 'invalid_request', `Unrecognized file field: ${field}`, field),
    addField: addFormField,
  });
  if (!form) throw new HttpError(400, 'invalid_request', "body: send multipart/form-data with an 'image' file", 'image');
  const uploads: Uploads = { images: form.files.filter((f) => f.field !== 'mask').map((f) => f.bytes) };
  const mask = lastFile(form, 'mask');
  if (mask) uploads.mask = mask;
  req.body = form.body;
  req.openaiUploads = uploads;
  recordSentFields(req); // the fields are known only now (model presets fill what was left out)
}

/** LocalAI "positive|negative" and sd.cpp <sd_cpp_extra_args>{...}</sd_cpp_extra_args> conventions. */
export function parsePrompt(raw: string, negativeField?: string): { prompt: string; negative: string; extra: Record<string, unknown> } {
  let text = raw;
  let extra: Record<string, unknown> = {};
  const m = /<sd_cpp_extra_args>([\s\S]*?)<\/sd_cpp_extra_args>/.exec(text);
  if (m) {
    try {
      const parsed = JSON.parse(m[1]!);
      if (parsed && typeof parsed === 'object' && !Array.isArray(parsed)) extra = parsed as Record<string, unknown>;
    } catch {
      throw new HttpError(400, 'invalid_request', 'prompt: <sd_cpp_extra_args> must hold a JSON object', 'prompt');
    }
    text = text.replace(m[0], '').trim();
  }
  const bar = text.indexOf('|');
  const prompt = bar >= 0 ? text.slice(0, bar).trim() : text;
  const negative = negativeField ?? (bar >= 0 ? text.slice(bar + 1).trim() : typeof extra.negative_prompt === 'string' ? extra.negative_prompt : '');
  return { prompt, negative, extra };
}

const num = (v: unknown): number | undefined => (typeof v === 'number' && Number.isFinite(v) ? v : undefined);
const text = (v: unknown): string | undefined => (typeof v === 'string' && v ? v : undefined);

function toSpec(
  kiln: KilnServices,
  body: ImagesRequest,
  kind: 'txt2img' | 'img2img',
  fallbackSize?: { width: number; height: number },
  sent?: Record<string, unknown>,
): JobSpec {
  const { prompt, negative, extra } = parsePrompt(body.prompt ?? '', body.negative_prompt);
  const tags = promptNetworks([prompt]);
  let width = fallbackSize?.width ?? 512;
  let height = fallbackSize?.height ?? 512;
  if (body.size && body.size !== 'auto') ({ width, height } = parseSize(body.size, 'size'));
  const format = body.output_format ?? 'png';
  // A model name OpenAI clients send (dall-e-3, gpt-image-1, ...) means "the server's model".
  const model = body.model && kiln.models.has(body.model) ? body.model : undefined;
  const spec = baseSpec({
    kind,
    model,
    prompts: [prompt],
    negativePrompts: [negative],
    imagesPerPrompt: body.n ?? 1,
    width: floor8(width),
    height: floor8(height),
    steps: num(extra.steps) ?? num(extra.sample_steps) ?? QUALITY_STEPS[body.quality ?? 'auto']!,
    cfgScale: num(extra.cfg_scale) ?? 7,
    sampler: text(extra.sampler) ?? text(extra.sample_method) ?? 'Euler a',
    schedule: text(extra.schedule) ?? text(extra.scheduler) ?? 'Automatic',
    seed: resolveSeed(body.seed ?? num(extra.seed)),
    clipSkip: num(extra.clip_skip),
    // OpenAI documents output_compression 0-100; the encoders' lowest quality is 1, so 0 means 1.
    output: { format, quality: Math.max(1, body.output_compression ?? 100), response: body.response_format === 'url' ? 'url' : 'base64' },
    ...tags,
    transparentBackground: body.background === 'transparent' || undefined,
    sourceFields: { ...tags.sourceFields, transparentBackground: 'background', output: 'output_format' },
    // sd.cpp-style extra args in the prompt count as sent; an edit's size comes from its image, so it is never left out.
    leftOut: leftOutFields(sent && { ...extra, ...sent, ...(sent.size === 'auto' ? { size: undefined } : {}) }, {
      steps: ['steps', 'sample_steps', 'quality'],
      cfgScale: ['cfg_scale'],
      sampler: ['sampler', 'sample_method'],
      schedule: ['schedule', 'scheduler'],
      clipSkip: ['clip_skip'],
      ...(fallbackSize ? {} : { width: ['size'], height: ['size'] }),
    }),
  });
  if (kind === 'img2img') spec.denoisingStrength = body.strength ?? num(extra.strength) ?? 0.75;
  return spec;
}

/** Width/height of an uploaded image, rounded down to multiples of 8 (the default output size of an edit). */
async function sizeOf(bytes: Buffer, limits: KilnServices['config']['limits']): Promise<{ width: number; height: number }> {
  const meta = await sharp(bytes, { limitInputPixels: limits.maxDecodedPixels })
    .metadata()
    .catch(() => {
      throw new HttpError(400, 'invalid_request', 'image: is not a readable image; send a PNG, JPEG or WebP file', 'image');
    });
  const scale = Math.min(1, Math.sqrt(limits.maxPixels / ((meta.width ?? 512) * (meta.height ?? 512))));
  return { width: Math.min(limits.maxWidth, floor8((meta.width ?? 512) * scale)), height: Math.min(limits.maxHeight, floor8((meta.height ?? 512) * scale)) };
}

export async function openAiRoutes(app: FastifyInstance): Promise<void> {
  const kiln = app.kiln;
  app.setErrorHandler(errorHandler);

  async function respond(req: FastifyRequest, reply: FastifyReply, body: ImagesRequest, spec: JobSpec, eventPrefix: string) {
    const { job: done, images } = await generateImages(kiln, req, reply, spec);
    const created = Math.floor((done.finishedAt ?? Date.now()) / 1000);
    const base = baseUrl(kiln, req);
    const size = `${spec.width}x${spec.height}`;
    const quality = body.quality ?? 'auto';
    // background "transparent" makes RGBA through LayerDiffuse (checked before queueing); "auto" stays opaque.
    const background = spec.transparentBackground ? 'transparent' : 'opaque';
    const data = images.map((img) => (spec.output.response === 'url' ? { url: imageUrl(base, img.meta.name) } : { b64_json: img.bytes.toString('base64') }));
    if (body.stream) {
      // No partial previews exist yet, so the stream carries each finished image as its completed event.
      reply.raw.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive' });
      for (const img of images) {
        const event = {
          type: `${eventPrefix}.completed`,
          b64_json: img.bytes.toString('base64'),
          created_at: created,
          size,
          quality,
          background,
          output_format: spec.output.format,
          usage: usage(spec),
        };
        reply.raw.write(`event: ${event.type}\ndata: ${JSON.stringify(event)}\n\n`);
      }
      reply.raw.end();
      return reply;
    }
    return { created, data, background, output_format: spec.output.format, size, quality, usage: usage(spec) };
  }

  app.post(
    '/v1/images/generations',
    { schema: { tags: ['openai'], summary: 'OpenAI Images: create images from a prompt.', body: generationsSchema } },
    async (req, reply) => {
      const body = req.body as ImagesRequest;
      if (!body.prompt) throw new HttpError(400, 'invalid_request', "Missing required parameter: 'prompt'.", 'prompt');
      return respond(req, reply, body, toSpec(kiln, body, 'txt2img', undefined, sentFields(req)), 'image_generation');
    },
  );

  const editLike = async (req: FastifyRequest, reply: FastifyReply, variation: boolean) => {
    const body = req.body as ImagesRequest;
    const uploads = req.openaiUploads ?? { images: [] };
    if (uploads.images.length === 0) throw new HttpError(400, 'invalid_request', "Missing required parameter: 'image'.", 'image');
    if (!variation && !body.prompt) throw new HttpError(400, 'invalid_request', "Missing required parameter: 'prompt'.", 'prompt');
    const bytes = uploads.images[0]!;
    const spec = toSpec(kiln, variation ? { ...body, prompt: '', strength: 0.6 } : body, 'img2img', await sizeOf(bytes, kiln.config.limits), sentFields(req));
    spec.inputImageCount = uploads.images.length;
    // OpenAI masks: fully transparent pixels are the ones to repaint; the whole picture is processed.
    if (uploads.mask) spec.mask = { fullResolution: false };
    spec.sourceFields = { ...spec.sourceFields, inputImageCount: 'image', mask: 'mask' };
    kiln.checkSpec({ ...spec, initImage: 'pending' });
    if (spec.mask && uploads.mask)
      spec.mask.image = await storeMaskImage(uploads.mask, kiln.storage, kiln.config.limits, 'mask', { transparentRepaints: true });
    try {
      spec.initImage = await storeImageBytes(kiln, bytes, 'image');
    } catch (e) {
      if (spec.mask?.image) await kiln.storage.remove(spec.mask.image).catch(() => undefined);
      throw e;
    }
    return respond(req, reply, body, spec, 'image_edit');
  };

  app.post(
    '/v1/images/edits',
    {
      preValidation: assembleForm,
      schema: {
        tags: ['openai'],
        summary: 'OpenAI Images: edit an image (img2img) from a prompt; multipart.',
        consumes: ['multipart/form-data'],
        body: editsSchema,
      },
    },
    (req, reply) => editLike(req, reply, false),
  );
  app.post(
    '/v1/images/variations',
    {
      preValidation: assembleForm,
      schema: {
        tags: ['openai'],
        summary: 'OpenAI Images: variations of an image (img2img, empty prompt); multipart.',
        consumes: ['multipart/form-data'],
        body: variationsSchema,
      },
    },
    (req, reply) => editLike(req, reply, true),
  );
}

/** Token-like usage numbers: prompt words in, images x pixels out (OpenAI clients only display them). */
function usage(spec: JobSpec) {
  const input = spec.prompts.join(' ').split(/\s+/).filter(Boolean).length;
  const output = spec.prompts.length * spec.imagesPerPrompt * Math.ceil((spec.width * spec.height) / 4096);
  return {
    total_tokens: input + output,
    input_tokens: input,
    output_tokens: output,
    input_tokens_details: { text_tokens: input, image_tokens: spec.initImage ? 1 : 0 },
  };
}
