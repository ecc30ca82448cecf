// Seed 001 (SDXL-Lightning batch API): POST /generate with `prompts` x num_images_per_prompt (at most 150
// images), base64 or URL results, GET / with API info; /health and /docs are the shared routes. Long
// requests send heartbeats (whitespace before the JSON body) so tunnels such as ngrok keep the connection.
// The seed's server is locked to 1024x576 and 8 steps (its Lightning UNet); those are the defaults here, and
// Kiln accepts steps / width / height / guidance_scale / seed / model / sampler as extensions.
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { KilnServices } from '../services.ts';
import { resolveSeed } from '../../queue/job-spec.ts';
import { HttpError } from '../errors.ts';
import { VERSION } from '../../version.ts';
import { baseUrl } from '../native/views.ts';
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

/** How often a heartbeat goes out while a /generate request waits (KILN_HEARTBEAT_MS overrides, for tests). */
function heartbeatMs(): number {
  const v = Number(process.env.KILN_HEARTBEAT_MS);
  return Number.isFinite(v) && v > 0 ? v : 10_000;
}

/**
 * Answers a JSON body after `work` resolves. If that takes longer than one heartbeat interval, the 200 headers
 * go out at once and a space is written every interval (JSON allows leading whitespace), then the body; an
 * error after that point can only be reported in the body, as {success: false, detail}.
 */
export async function withHeartbeats(req: FastifyRequest, reply: FastifyReply, work: () => Promise<unknown>): Promise<void> {
  const interval = heartbeatMs();
  let streaming = false;
  let timer: NodeJS.Timeout | undefined;
  const beat = () => {
    if (!streaming) {
      streaming = true;
      reply.hijack();
      reply.raw.writeHead(200, { 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-cache' });
    }
    reply.raw.write(' ');
    timer = setTimeout(beat, interval);
  };
  timer = setTimeout(beat, interval);
  try {
    const body = await work();
    clearTimeout(timer);
    if (streaming) reply.raw.end(JSON.stringify(body));
    else await reply.status(200).send(body);
  } catch (e) {
    clearTimeout(timer);
    if (!streaming) throw e;
    const c = classify(e);
    req.log.info({ status: c.status }, 'generate failed after heartbeats started');
    reply.raw.end(JSON.stringify({ success: false, detail: c.message }));
  }
}

export async function generateBatch(kiln: KilnServices, req: FastifyRequest, reply: FastifyReply, body: BatchRequest): Promise<void> {
  const perPrompt = body.num_images_per_prompt ?? 1;
  const total = body.prompts.length * perPrompt;
  if (total > SEED001_LIMIT) throw new HttpError(400, 'invalid_request', `prompts x num_images_per_prompt = ${total}; at most ${SEED001_LIMIT} images per request`);
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
  });
  // Refused requests (bad model, queue full) answer at once with a status code, before any heartbeat.
  const job = await kiln.submit(spec, { owner: ownerOf(req) });
  const onClose = () => {
    if (!reply.raw.writableFinished) void kiln.queue.cancel(job.id);
  };
  reply.raw.on('close', onClose);
  await withHeartbeats(req, reply, async () => {
    const done = (await kiln.queue.waitFor(job.id, syncWaitMs(kiln)))!;
    reply.raw.off('close', onClose);
    if (done.state !== 'succeeded') {
      const f = jobFailure(done);
      throw new HttpError(f.statusCode, f.code, `Image generation failed: ${f.message}`, f.field);
    }
    const images = await resultImages(kiln, done);
    const base = baseUrl(kiln, req);
    const list = images.map((img) => (body.return_format === 'url' ? `${base}/v1/images/${img.meta.name}` : img.bytes.toString('base64')));
    return { success: true, images: list, count: list.length, message: `Successfully generated ${list.length} image(s)` };
  });
}

export async function seed001Routes(app: FastifyInstance): Promise<void> {
  app.get('/', { config: { auth: 'public' }, schema: { tags: ['seed-001'], summary: 'API information and endpoints.' } }, async () => ({
    name: 'Kiln',
    version: VERSION,
    status: 'running',
    endpoints: {
      generate: '/generate - POST - Generate images from prompts (prompts list, or one prompt)',
      health: '/health - GET - Health check',
      docs: '/docs - GET - API documentation',
    },
  }));
}
