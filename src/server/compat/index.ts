// Every compat surface, registered onto the app by buildApp with one call. Each is its own encapsulated
// plugin (own error shape and hooks) over the same services, queue and engine as the native API.
import type { FastifyInstance } from 'fastify';
import { a1111Routes } from './a1111.ts';
import { openAiRoutes } from './openai.ts';
import { runpodRoutes } from './runpod.ts';
import { seedGenerateRoutes } from './seed-generate.ts';
import { seed003Routes } from './seed-003.ts';
import { seed004Routes } from './seed-004.ts';

export async function registerCompat(app: FastifyInstance): Promise<void> {
  await app.register(a1111Routes);
  await app.register(openAiRoutes);
  await app.register(runpodRoutes);
  await app.register(seedGenerateRoutes);
  await app.register(seed003Routes);
  await app.register(seed004Routes);
}
