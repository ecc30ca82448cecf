// POST /generate serves two seed APIs with one route: a body with `prompts` (a list) is seed 001's batch
// request, a body with `prompt` is seed 002's single request. Both speak FastAPI's error shapes.
import type { FastifyInstance } from 'fastify';
import { fastApiErrorHandler } from './fastapi.ts';
import { generateBatch, seed001Routes, SEED001_LIMIT } from './seed-001.ts';
import type { BatchRequest } from './seed-001.ts';
import { generateSingle } from './seed-002.ts';
import type { SingleRequest } from './seed-002.ts';

const body = {
  type: 'object',
  properties: {
    prompts: {
      type: 'array',
      minItems: 1,
      maxItems: SEED001_LIMIT,
      items: { type: 'string' },
      description: 'Seed 001: prompts (1-150); each gets num_images_per_prompt images.',
    },
    num_images_per_prompt: {
      type: 'integer',
      minimum: 1,
      maximum: 50,
      description: 'Seed 001: variations per prompt (default 1, max 50; prompts x this <= 150).',
    },
    return_format: { type: 'string', enum: ['base64', 'url'], description: 'Seed 001: "base64" (default) or "url".' },
    prompt: { type: 'string', description: 'Seed 002: one prompt.' },
    negative_prompt: { type: 'string' },
    steps: { type: 'integer', minimum: 1, maximum: 150, description: 'Seed 002 (default 20); Kiln extension for seed 001 (default 8).' },
    width: { type: 'integer', minimum: 64, description: 'Seed 002 (default 512, max 512); Kiln extension for seed 001 (default 1024).' },
    height: { type: 'integer', minimum: 64, description: 'Seed 002 (default 512, max 512); Kiln extension for seed 001 (default 576).' },
    guidance_scale: { type: 'number', minimum: 0, maximum: 30, description: 'Seed 002 (default 7.5).' },
    seed: { type: 'integer', minimum: 0, maximum: 4294967295, description: 'Random when absent; always returned (seed 002).' },
    model: { type: 'string', description: 'Kiln extension (seed 001 shape): a model name or label.' },
    sampler: { type: 'string', description: 'Kiln extension (seed 001 shape): an A1111 sampler name.' },
  },
  anyOf: [{ required: ['prompts'] }, { required: ['prompt'] }],
};

export async function seedGenerateRoutes(app: FastifyInstance): Promise<void> {
  const kiln = app.kiln;
  app.setErrorHandler(fastApiErrorHandler);
  await seed001Routes(app);
  app.post(
    '/generate',
    {
      schema: {
        tags: ['seed-001', 'seed-002'],
        summary: 'Generate: {prompts: [...]} (seed 001, batch) or {prompt} (seed 002, one image as a data URL).',
        body,
      },
    },
    async (req, reply) => {
      const b = req.body as Record<string, unknown>;
      if (Array.isArray(b.prompts)) {
        await generateBatch(kiln, req, reply, b as unknown as BatchRequest);
        return reply;
      }
      return generateSingle(kiln, req, reply, b as unknown as SingleRequest);
    },
  );
}
