// Seed 003 (multi-model API, X-API-Key auth with an admin role): POST /post_config takes its parameters in the
// query string and an optional `image` upload (img2img) and answers the image bytes (several images as one
// grid, so a client's Image.open(BytesIO(content)) still works). Model ids are names or labels in the models
// registry (an operator maps Hugging Face ids such as stabilityai/stable-diffusion-2-1 to local models with
// modelAliases). Also /get_available_stable_diffs, /get_available_loras, /buffer_status, admin-only
// /add_new_lora, and the UniDiffuser routes (/prompt2img, /img2prompt through the CLIP interrogator, /img2embed).
// Errors use FastAPI's shapes.
import { leftOutFields, sentFields } from '../model-presets.ts';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import sharp from 'sharp';
import type { KilnServices } from '../services.ts';
import type { JobSpec } from '../../queue/job-spec.ts';
import { loraList } from '../models/loras.ts';
import { addLoraFromCivitai } from '../models/lora-download.ts';
import { resolveSeed } from '../../engine/index.ts';
import { HttpError } from '../errors.ts';
import { fastApiErrorHandler } from './fastapi.ts';
import { DIFFUSERS_SCHEDULERS, fromDiffusersScheduler } from './diffusers-schedulers.ts';
import { addPngText } from '../../storage/png-text.ts';
import { lastFile, readMultipart } from '../multipart.ts';
import { baseSpec, generateImages, notImplemented, promptNetworks, storeImageBytes, type ResultImage } from './common.ts';
import { understandImage } from '../vision.ts';

/** The square the seed's UniDiffuser server resized every input image to. */
const SEED003_IMAGE_SIZE = 512;

/** A flat [c*h*w] latent as the nested [c][h][w] lists of the seed's `.tolist()`. */
function nested(flat: number[], [c, h, w]: number[]): number[][][] {
  return Array.from({ length: c! }, (_, k) => Array.from({ length: h! }, (_, y) => flat.slice((k * h! + y) * w!, (k * h! + y + 1) * w!)));
}

/** diffusers' pipeline defaults, which the seed's server passes through. */
export const SEED003_DEFAULTS = { steps: 50, guidance: 7.5, width: 512, height: 512, count: 1, strength: 0.75 };

const postConfigQuery = {
  type: 'object',
  required: ['prompt'],
  properties: {
    prompt: { type: 'string', minLength: 1 },
    negative_prompt: { type: 'string' },
    model_id: { type: 'string', description: 'A model name or label (GET /get_available_stable_diffs); default: the server model.' },
    torch_dtype: {
      type: 'string',
      description:
        'float16, bfloat16 or float32 (also as torch.float16, ...). Kiln picks the precision for its device: on CPU every network runs in float32 whatever is asked; on GPUs half precision where the network allows. Anything else is refused (400).',
    },
    num_inference_steps: { type: 'integer', minimum: 1, maximum: 150, default: SEED003_DEFAULTS.steps },
    guidance_scale: { type: 'number', minimum: 0, maximum: 30, default: SEED003_DEFAULTS.guidance },
    width: { type: 'integer', minimum: 64, description: "Default 512; img2img: the uploaded image's width, rounded down to a multiple of 8." },
    height: { type: 'integer', minimum: 64, description: "Default 512; img2img: the uploaded image's height, rounded down to a multiple of 8." },
    count_returned: { type: 'integer', minimum: 1, maximum: 16, default: SEED003_DEFAULTS.count },
    seed: { type: 'integer', minimum: -1, maximum: 4294967295 },
    scheduler: {
      type: 'string',
      description: `A1111 sampler name or diffusers scheduler class (${DIFFUSERS_SCHEDULERS.join(', ')}), mapped to its A1111 sampler; add " Karras" (or use_karras_sigmas=true) for Karras sigmas.`,
    },
    use_karras_sigmas: { type: 'boolean', description: "diffusers' flag: Karras sigmas for the scheduler." },
    strength: { type: 'number', minimum: 0, maximum: 1, default: SEED003_DEFAULTS.strength, description: 'img2img: how much to change the uploaded image.' },
    lora: { type: 'string' },
  },
};

interface PostConfig {
  prompt: string;
  negative_prompt?: string;
  model_id?: string;
  num_inference_steps: number;
  guidance_scale: number;
  torch_dtype?: string;
  width?: number;
  height?: number;
  count_returned: number;
  seed?: number;
  scheduler?: string;
  use_karras_sigmas?: boolean;
  strength: number;
  lora?: string;
}

/** Reads the optional `image` file of a multipart request (other fields are ignored: parameters are in the query). */
async function uploadedImage(req: FastifyRequest): Promise<Buffer | undefined> {
  const form = await readMultipart(req, { fileFields: ['image'] });
  return form && lastFile(form, 'image');
}

/**
 * Several results as one PNG grid (columns = ceil(sqrt(n))), in generation order. The grid keeps every image's
 * infotext: `parameters` is the first image's (as A1111 labels its grids, so PNG Info tools read it) and
 * `parameters_1` ... `parameters_<n>` are each cell's, row by row.
 */
export async function grid(images: ResultImage[]): Promise<Buffer> {
  if (images.length === 1) return images[0]!.bytes;
  const { width, height } = images[0]!.meta;
  const cols = Math.ceil(Math.sqrt(images.length));
  const rows = Math.ceil(images.length / cols);
  let png: Buffer = await sharp({ create: { width: cols * width, height: rows * height, channels: 3, background: '#000' } })
    .composite(images.map((img, i) => ({ input: img.bytes, left: (i % cols) * width, top: Math.floor(i / cols) * height })))
    .png()
    .toBuffer();
  const texts = images.map((img) => img.meta.infotext);
  if (texts[0]) png = addPngText(png, 'parameters', texts[0]);
  for (const [i, text] of texts.entries()) if (text) png = addPngText(png, `parameters_${i + 1}`, text);
  return png;
}

/** torch_dtype values the seed's clients send (getattr(torch, name)). */
const TORCH_DTYPES = ['float16', 'bfloat16', 'float32'];

function checkTorchDtype(value: string | undefined): void {
  if (value === undefined || TORCH_DTYPES.includes(value.replace(/^torch\./, ''))) return;
  throw new HttpError(400, 'invalid_request', `torch_dtype: "${value.slice(0, 40)}" is not a dtype Kiln runs; use ${TORCH_DTYPES.join(', ')}`, 'torch_dtype');
}

/** diffusers' img2img size: the upload's, rounded down to a multiple of 8 (its VAE factor). */
async function uploadSize(bytes: Buffer): Promise<{ width?: number; height?: number }> {
  const meta = await sharp(bytes)
    .metadata()
    .catch(() => undefined);
  if (!meta?.width || !meta.height) return {}; // not an image: storeImageBytes answers the 4xx
  return { width: Math.floor(meta.width / 8) * 8, height: Math.floor(meta.height / 8) * 8 };
}

function modelFor(kiln: KilnServices, id: string | undefined): string | undefined {
  if (id === undefined || id === '') return undefined;
  // Names and labels (config modelAliases: "black-forest-labs/FLUX.1-dev" -> a Flux model); an HF cache repo is
  // named by its repo id. A Flux id with no such model here stays a 501 saying how to make it work; other unknown
  // ids: checkSpec answers 400 with the available models.
  if (/flux/i.test(id) && !kiln.models.has(id)) {
    const shown = JSON.stringify(id.slice(0, 100));
    throw new HttpError(
      501,
      'not_implemented',
      `model_id: no Flux model ${shown} on this server; Kiln runs FLUX.1 once one is installed under that name or label (modelAliases)`,
      'model_id',
    );
  }
  return id;
}

export async function seed003Routes(app: FastifyInstance): Promise<void> {
  const kiln = app.kiln;
  app.setErrorHandler(fastApiErrorHandler);
  const tags = ['seed-003'];

  const imageReply = async (reply: FastifyReply, spec: JobSpec, req: FastifyRequest) => {
    const { images } = await generateImages(kiln, req, reply, spec);
    return reply
      .type('image/png')
      .header('x-seeds', images.map((i) => i.meta.seed).join(','))
      .send(await grid(images));
  };

  app.post(
    '/post_config',
    {
      schema: {
        tags,
        summary: 'Generate (txt2img, or img2img with an uploaded image); answers the image bytes (a grid for count_returned > 1).',
        querystring: postConfigQuery,
      },
    },
    async (req, reply) => {
      const q = req.query as PostConfig;
      checkTorchDtype(q.torch_dtype);
      const upload = await uploadedImage(req);
      const tags = promptNetworks([q.prompt]);
      const size = upload && (q.width === undefined || q.height === undefined) ? await uploadSize(upload) : {};
      const scheduler = q.scheduler === undefined ? undefined : fromDiffusersScheduler(q.scheduler, q.use_karras_sigmas);
      const spec = baseSpec({
        kind: upload ? 'img2img' : 'txt2img',
        model: modelFor(kiln, q.model_id),
        prompts: [q.prompt],
        negativePrompts: [q.negative_prompt ?? ''],
        imagesPerPrompt: q.count_returned,
        width: q.width ?? size.width ?? SEED003_DEFAULTS.width,
        height: q.height ?? size.height ?? SEED003_DEFAULTS.height,
        steps: q.num_inference_steps,
        cfgScale: q.guidance_scale,
        // diffusers' FluxPipeline takes guidance_scale as the distilled guidance (there is no CFG batch).
        cfgAsGuidance: true,
        sampler: scheduler?.sampler ?? q.scheduler ?? 'Euler',
        schedule: scheduler?.schedule ?? (q.use_karras_sigmas ? 'Karras' : 'Automatic'),
        seed: resolveSeed(q.seed),
        // An img2img size comes from the upload, so only a txt2img size can be left out.
        leftOut: leftOutFields(sentFields(req), {
          steps: ['num_inference_steps'],
          cfgScale: ['guidance_scale'],
          sampler: ['scheduler'],
          schedule: ['scheduler', 'use_karras_sigmas'],
          ...(upload ? {} : { width: ['width'], height: ['height'] }),
        }),
        ...tags,
        ...(q.lora ? { loras: [{ name: q.lora, weight: 1 }, ...(tags.loras ?? [])], sourceFields: { ...tags.sourceFields, loras: 'lora' } } : {}),
      });
      if (upload) {
        spec.denoisingStrength = q.strength;
        kiln.checkSpec({ ...spec, initImage: 'pending' });
        spec.initImage = await storeImageBytes(kiln, upload, 'image');
      }
      return imageReply(reply, spec, req);
    },
  );

  app.get('/get_available_stable_diffs', { schema: { tags, summary: 'Model ids that model_id accepts.' } }, async () =>
    kiln.models.list('checkpoint').flatMap((m) => [m.name, ...m.labels]),
  );

  app.get(
    '/get_available_loras',
    { schema: { tags, summary: 'LoRAs from lora_list.json in the models folder (the seed format) and the files in models/loras/.' } },
    async () => loraList(kiln.models, kiln.config.modelsDir),
  );

  app.get('/buffer_status', { schema: { tags, summary: 'Which model is loaded and whether the server is busy.' } }, async () => {
    const counts = await kiln.queue.counts();
    const loaded = kiln.loadedModels().map((m) => m.name);
    return {
      status: 'ok',
      loaded: loaded.length > 0,
      loaded_models: loaded,
      idle_unload_s: kiln.config.idleUnloadMs / 1000,
      default_model: kiln.models.default?.name ?? null,
      busy: kiln.queue.busy,
      queued: counts.queued,
    };
  });

  const addLora = async (req: FastifyRequest) => {
    const q = req.query as { name: string; model_id?: string };
    const added = await addLoraFromCivitai(
      { models: kiln.models, modelsDir: kiln.config.modelsDir, civitaiEndpoint: kiln.config.civitaiEndpoint, log: req.log },
      q.name,
      q.model_id,
    );
    return { status: 'ok', name: added.name, ...added.entry };
  };
  const addLoraSchema = {
    tags,
    summary: 'Admin: download a LoRA from Civitai (CIVIT_KEY) and record it in lora_list.json.',
    description:
      'name: a Civitai model id, a model/version URL, an AIR (urn:air:...:civitai:ID@VERSION) or a LoRA name to search for. ' +
      "The LoRA's base model must be the family of model_id (default: the server model), else 400.",
    querystring: {
      type: 'object',
      required: ['name'],
      properties: { name: { type: 'string', minLength: 1, maxLength: 300 }, model_id: { type: 'string', maxLength: 300 } },
    },
  };
  app.post('/add_new_lora', { config: { auth: 'admin' }, schema: addLoraSchema }, addLora);
  // The seed's own example calls it with GET.
  app.get('/add_new_lora', { config: { auth: 'admin' }, schema: { ...addLoraSchema, hide: true } }, addLora);

  for (const path of ['/llm_prompt_assistance', '/llm_interface']) {
    app.get(path, { schema: { tags, querystring: { type: 'object', properties: { text: { type: 'string' } } } } }, async () =>
      notImplemented('the LLM endpoints (forwarded to a legacy API in the seed)', 'text'),
    );
  }

  // UniDiffuser routes of the same seed.
  const p2iQuery = {
    type: 'object',
    properties: {
      prompt: { type: 'string' },
      steps: { type: 'integer', minimum: 1, maximum: 150, description: 'Kiln extension (default 20).' },
      width: { type: 'integer', minimum: 64, description: 'Kiln extension (default 512).' },
      height: { type: 'integer', minimum: 64, description: 'Kiln extension (default 512).' },
      seed: { type: 'integer', minimum: -1, maximum: 4294967295 },
    },
  };
  app.post(
    '/prompt2img',
    { schema: { tags, summary: 'Text to image (prompt in the query or a JSON body); answers PNG bytes.', querystring: p2iQuery } },
    async (req, reply) => {
      const q = req.query as { prompt?: string; steps?: number; width?: number; height?: number; seed?: number };
      const prompt = q.prompt ?? ((req.body as { prompt?: unknown } | undefined)?.prompt as string | undefined);
      if (typeof prompt !== 'string' || !prompt) throw new HttpError(422, 'invalid_request', 'prompt: Field required', 'prompt');
      const spec = baseSpec({
        prompts: [prompt],
        seed: resolveSeed(q.seed),
        ...promptNetworks([prompt]),
        ...(q.steps ? { steps: q.steps } : {}),
        ...(q.width ? { width: q.width } : {}),
        ...(q.height ? { height: q.height } : {}),
        leftOut: leftOutFields(sentFields(req), { steps: ['steps'], width: ['width'], height: ['height'], cfgScale: [], sampler: [], schedule: [] }),
      });
      return imageReply(reply, spec, req);
    },
  );
  // UniDiffuser's image routes. Its server resized every image to 512x512 (Pillow's default BICUBIC) first; Kiln
  // does the same, so CLIP_embeddings match its ViT-B/32 numbers. The caption is A1111's CLIP interrogator's
  // prompt (Kiln has no captioning model), JSON-encoded as FastAPI returns a str.
  const seedImage = async (req: FastifyRequest) => {
    const image = await uploadedImage(req);
    if (!image) throw new HttpError(400, 'invalid_request', 'image: No image was passed! Send the image as the multipart file field "image"', 'image');
    return image;
  };
  app.post('/img2prompt', { schema: { tags, summary: 'A prompt (caption) for the uploaded image, as a JSON string.' } }, async (req, reply) => {
    const image = await seedImage(req);
    const { output } = await understandImage(kiln, req, reply, { kind: 'interrogate', image, field: 'image', vision: { squareResize: SEED003_IMAGE_SIZE } });
    return reply.type('application/json').send(JSON.stringify(output.prompt ?? ''));
  });
  app.post(
    '/img2embed',
    { schema: { tags, summary: 'CLIP image embedding and the VAE latent of the uploaded image ({CLIP_embeddings, vae_emb}).' } },
    async (req, reply) => {
      const image = await seedImage(req);
      const { output } = await understandImage(kiln, req, reply, { kind: 'embed-image', image, field: 'image', vision: { squareResize: SEED003_IMAGE_SIZE } });
      return { CLIP_embeddings: output.clipEmbedding, vae_emb: nested(output.vaeLatent ?? [], output.vaeShape ?? [0, 0, 0]) };
    },
  );
}
