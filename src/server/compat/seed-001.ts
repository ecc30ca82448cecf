// Seed 001 (SDXL-Lightning batch API): POST /generate with `prompts` x num_images_per_prompt (at most 150
// images), base64 or URL results, GET / with API info; /health and /docs are the shared routes. Long
// requests send heartbeats (whitespace before the JSON body) so tunnels such as ngrok keep the connection.
// The seed's server is locked to 1024x576 and 8 steps (its Lightning UNet); those are the defaults here, and
// Kiln accepts steps / width / height / guidance_scale / seed / model / sampler as extensions.
import { leftOutFields, sentFields } from '../model-presets.ts';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { KilnServices } from '../services.ts';
import { resolveSeed } from '../../engine/index.ts';
import { HttpError } from '../errors.ts';
import { VERSION } from '../../version.ts';
import { baseUrl, imageUrl } from '../native/views.ts';
import { cancelOnHangUp } from '../hang-up.ts';
import { sendJsonWithHeartbeats } from '../keep-alive.ts';
import { sendPlayground, wantsHtml } from '../playground/routes.ts';
import { baseSpec, classify, jobFailure, ownerOf, promptNetworks, resultImages, syncWaitMs } from './common.ts';

export const SEED001_LIMIT = 150;
export const SEED001_DEFAULTS = { width: 1024, height: 576, steps: 8, cfgScale: 1, sampler: 'Euler', schedule: 'SGM Uniform' };

export interface BatchRequest {
  prompts: string[];
  negative_prompt?: string;
  num_images_per_prompt?: number;
  return_format?: 'base64' | 'url';
  steps?: number;
  width?: number;
  height?: number;
  guidance_scale?: number;
  seed?: number;
  model?: string;
  sampler?: string;
}

export async function generateBatch(kiln: KilnServices, req: FastifyRequest, reply: FastifyReply, body: BatchRequest): Promise<void> {
  const perPrompt = body.num_images_per_prompt ?? 1;
  const total = body.prompts.length * perPrompt;
  if (total > SEED001_LIMIT)
    throw new HttpError(400, 'invalid_request', `prompts x num_images_per_prompt = ${total}; at most ${SEED001_LIMIT} images per request`);
  const spec = baseSpec({
    model: body.model,
    prompts: body.prompts,
    negativePrompts: [body.negative_prompt ?? ''],
    imagesPerPrompt: perPrompt,
    width: body.width ?? SEED001_DEFAULTS.width,
    height: body.height ?? SEED001_DEFAULTS.height,
    steps: body.steps ?? SEED001_DEFAULTS.steps,
    cfgScale: body.guidance_scale ?? SEED001_DEFAULTS.cfgScale,
    sampler: body.sampler ?? SEED001_DEFAULTS.sampler,
    schedule: SEED001_DEFAULTS.schedule,
    seed: resolveSeed(body.seed),
    ...promptNetworks(body.prompts, 'prompts'),
    leftOut: leftOutFields(sentFields(req), {
      steps: ['steps'],
      cfgScale: ['guidance_scale'],
      sampler: ['sampler'],
      schedule: [],
      width: ['width'],
      height: ['height'],
    }),
  });
  // Refused requests (bad model, queue full) answer at once with a status code, before any heartbeat.
  const job = await kiln.submit(spec, { owner: ownerOf(req) });
  const stopWatching = cancelOnHangUp(reply, () => kiln.queue.cancel(job.id));
  await sendJsonWithHeartbeats(
    req,
    reply,
    async () => {
      const done = (await kiln.queue.waitFor(job.id, syncWaitMs(kiln)))!;
      stopWatching();
      if (done.state !== 'succeeded') throw jobFailure(done, 'Image generation failed: ');
      const images = await resultImages(kiln, done);
      const base = baseUrl(kiln, req);
      const list = images.map((img) => (body.return_format === 'url' ? imageUrl(base, img.meta.name) : img.bytes.toString('base64')));
      return { success: true, images: list, count: list.length, message: `Successfully generated ${list.length} image(s)` };
    },
    { lateErrorBody: (e) => ({ success: false, detail: classify(e).message }) },
  );
}

export async function seed001Routes(app: FastifyInstance): Promise<void> {
  app.get('/', { config: { auth: 'public' }, schema: { tags: ['seed-001'], summary: 'API information and endpoints.' } }, async (req, reply) => {
    // Browsers asking for text/html get the web playground (src/server/playground); API clients the seed's JSON.
    if (wantsHtml(req)) return sendPlayground(reply);
    void reply.header('vary', 'Accept');
    return {
      name: 'Kiln',
      version: VERSION,
      status: 'running',
      endpoints: {
        generate: '/generate - POST - Generate images from prompts (prompts list, or one prompt)',
        health: '/health - GET - Health check',
        docs: '/docs - GET - API documentation',
      },
    };
  });
}
