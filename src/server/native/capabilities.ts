// GET /v1/capabilities: what a client (the playground) needs to build its form without hard-coding: the
// optional features the engine has (a feature that lands appears here with no client change), the upscaler
// names, and the limits.
import type { FastifyInstance } from 'fastify';
import { featureTable } from '../../queue/capabilities.ts';
import { MAX_UPSCALE_FACTOR } from '../../queue/job-spec.ts';
import { VERSION } from '../../version.ts';

export async function capabilityRoutes(app: FastifyInstance): Promise<void> {
  const kiln = app.kiln;
  app.get(
    '/v1/capabilities',
    {
      schema: {
        tags: ['models'],
        summary: 'Optional features (true when available), upscaler names for hires fix and /v1/upscale, and the request limits.',
      },
    },
    async () => {
      const l = kiln.config.limits;
      return {
        version: VERSION,
        features: featureTable(),
        upscalers: { hires: kiln.upscalers.names({ latent: true }), image: kiln.upscalers.names({ latent: false }) },
        limits: {
          max_width: l.maxWidth,
          max_height: l.maxHeight,
          max_pixels: l.maxPixels,
          max_steps: l.maxSteps,
          max_images: l.maxImages,
          max_prompt_chars: l.maxPromptChars,
          max_upload_bytes: l.uploadBytes,
          max_body_bytes: l.bodyBytes,
          max_upscale_factor: MAX_UPSCALE_FACTOR,
        },
        preview_every: kiln.config.previewEvery,
      };
    },
  );
}
