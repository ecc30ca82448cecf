// POST /v1/embeddings/image and POST /v1/interrogate: image understanding as queued jobs answered synchronously
// (the job also stays visible at /v1/jobs/{id}, with its result). Images are base64 or data: URIs.
import type { FastifyInstance } from 'fastify';
import { decodeBase64Field } from '../uploads.ts';
import { understandImage } from '../vision.ts';

const common = {
  image: { type: 'string', minLength: 1, description: 'The image, base64 or a data: URI (PNG, JPEG or WebP).' },
  clip_model: {
    type: 'string',
    minLength: 1,
    maxLength: 200,
    description: "A model in models/clip_vision/ (GET /v1/models?kind=clip_vision); default: the server's choice.",
  },
  model: {
    type: 'string',
    minLength: 1,
    maxLength: 200,
    description: 'The checkpoint (its VAE, or its text encoder for a vision-only CLIP model); default: the server model.',
  },
} as const;

const embedSchema = {
  type: 'object',
  required: ['image'],
  additionalProperties: false,
  properties: {
    ...common,
    vae: { type: 'boolean', description: 'Also return the checkpoint VAE latent (default true).' },
    vae_size: { type: 'integer', minimum: 8, maximum: 2048, description: "The VAE's square input size (default: the checkpoint's native size, 512 for SD1)." },
  },
} as const;

const interrogateSchema = {
  type: 'object',
  required: ['image'],
  additionalProperties: false,
  properties: { ...common, return_ranks: { type: 'boolean', description: 'Each phrase as "(phrase:probability)" (A1111 interrogate_return_ranks).' } },
} as const;

interface Body {
  image: string;
  clip_model?: string;
  model?: string;
  vae?: boolean;
  vae_size?: number;
  return_ranks?: boolean;
}

export async function visionRoutes(app: FastifyInstance): Promise<void> {
  const kiln = app.kiln;
  app.post(
    '/v1/embeddings/image',
    { schema: { tags: ['vision'], summary: "An image's CLIP embedding and its checkpoint VAE latent (mean x scaling factor).", body: embedSchema } },
    async (req, reply) => {
      const b = req.body as Body;
      const image = decodeBase64Field(b.image, 'image', kiln.config.limits);
      const { id, output } = await understandImage(kiln, req, reply, {
        kind: 'embed-image',
        image,
        field: 'image',
        model: b.model,
        vision: { clipModel: b.clip_model, vae: b.vae, vaeSize: b.vae_size },
      });
      return {
        id,
        clip_model: output.clipModel,
        clip_embedding: output.clipEmbedding,
        vae_latent: output.vaeLatent ? { shape: output.vaeShape, data: output.vaeLatent } : null,
      };
    },
  );
  app.post(
    '/v1/interrogate',
    { schema: { tags: ['vision'], summary: "A prompt for an image: A1111's CLIP interrogator over phrase lists.", body: interrogateSchema } },
    async (req, reply) => {
      const b = req.body as Body;
      const image = decodeBase64Field(b.image, 'image', kiln.config.limits);
      const { id, output } = await understandImage(kiln, req, reply, {
        kind: 'interrogate',
        image,
        field: 'image',
        model: b.model,
        vision: { clipModel: b.clip_model, returnRanks: b.return_ranks },
      });
      return { id, prompt: output.prompt, clip_model: output.clipModel, text_tower: output.textTower, categories: output.categories };
    },
  );
}
