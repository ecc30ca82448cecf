// Seed 002 (CPU-only Stable Diffusion API): POST /generate with prompt, steps, width, height, guidance_scale
// and seed (random when absent, always returned), answering {success, image (PNG data URL), prompt, steps,
// guidance_scale, dimensions, seed}. Its server limits images to 512x512 and that limit is kept.
import { leftOutFields, sentFields } from '../model-presets.ts';
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { KilnServices } from '../services.ts';
import { resolveSeed } from '../../engine/index.ts';
import { baseSpec, dataUrl, jobFailure, promptNetworks, resultImages, runJob } from './common.ts';

export const SEED002_DEFAULTS = { steps: 20, width: 512, height: 512, guidanceScale: 7.5, maxSide: 512 };

export interface SingleRequest {
  prompt: string;
  negative_prompt?: string;
  steps?: number;
  width?: number;
  height?: number;
  guidance_scale?: number;
  seed?: number;
}

export async function generateSingle(kiln: KilnServices, req: FastifyRequest, reply: FastifyReply, body: SingleRequest) {
  const width = body.width ?? SEED002_DEFAULTS.width;
  const height = body.height ?? SEED002_DEFAULTS.height;
  for (const [field, v] of [
    ['width', width],
    ['height', height],
  ] as const) {
    if (v > SEED002_DEFAULTS.maxSide) {
      return reply
        .status(422)
        .send({ detail: [{ loc: ['body', field], msg: `Input should be less than or equal to ${SEED002_DEFAULTS.maxSide}`, type: 'less_than_equal' }] });
    }
  }
  const steps = body.steps ?? SEED002_DEFAULTS.steps;
  const guidance = body.guidance_scale ?? SEED002_DEFAULTS.guidanceScale;
  // diffusers' StableDiffusionPipeline (what the seed runs) defaults to PNDM, A1111's "PLMS".
  const spec = baseSpec({
    prompts: [body.prompt],
    negativePrompts: [body.negative_prompt ?? ''],
    width,
    height,
    steps,
    cfgScale: guidance,
    sampler: 'PLMS',
    seed: resolveSeed(body.seed),
    ...promptNetworks([body.prompt]),
    leftOut: leftOutFields(sentFields(req), { steps: ['steps'], cfgScale: ['guidance_scale'], sampler: [], width: ['width'], height: ['height'] }),
  });
  const done = await runJob(kiln, req, reply, spec);
  if (done.state !== 'succeeded') throw jobFailure(done, 'Image generation failed: ');
  const [img] = await resultImages(kiln, done);
  // The job's own values: a model preset may have filled what the request left out.
  const s = done.spec;
  return {
    success: true,
    image: dataUrl(img!),
    prompt: body.prompt,
    steps: s.steps,
    guidance_scale: s.cfgScale,
    dimensions: `${s.width}x${s.height}`,
    seed: img!.meta.seed,
  };
}
