// The native API, version 1.
import type { FastifyInstance } from 'fastify';
import { jobRoutes } from './jobs.ts';
import { upscaleRoutes } from './upscale.ts';
import { catalogRoutes } from './catalog.ts';
import { imageRoutes } from './images.ts';
import { capabilityRoutes } from './capabilities.ts';
import { workerRoutes } from './workers.ts';
import { visionRoutes } from './vision.ts';

export async function nativeRoutes(app: FastifyInstance): Promise<void> {
  await jobRoutes(app);
  await upscaleRoutes(app);
  await catalogRoutes(app);
  await imageRoutes(app);
  await capabilityRoutes(app);
  await workerRoutes(app);
  await visionRoutes(app);
}
