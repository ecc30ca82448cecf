// Discovery: models (with friendly labels), samplers, schedules; admin model refresh and queue purge.
import type { FastifyInstance } from 'fastify';
import { MODEL_FOLDERS } from '../models/registry.ts';
import type { ModelKind } from '../models/registry.ts';
import { describeCheckpoint } from '../models/family.ts';

export async function catalogRoutes(app: FastifyInstance): Promise<void> {
  const kiln = app.kiln;
  const listModels = (kind: ModelKind) =>
    Promise.all(
      kiln.models.list(kind).map(async (m) => ({
        name: m.name,
        label: m.labels[0] ?? m.name,
        labels: m.labels,
        kind: m.kind,
        format: m.format,
        source: m.source,
        default: kiln.models.default?.path === m.path,
        // Checkpoints only: family (sd1, sd2, sdxl, sdxl-refiner) and prediction type, from the file headers.
        ...(m.kind === 'checkpoint' ? await describeCheckpoint(m.path) : {}),
      })),
    );

  app.get(
    '/v1/models',
    {
      schema: {
        tags: ['models'],
        summary: 'Models in the models folder (and the configured default), with friendly labels.',
        querystring: {
          type: 'object',
          additionalProperties: false,
          properties: { kind: { type: 'string', enum: Object.keys(MODEL_FOLDERS), default: 'checkpoint' } },
        },
      },
    },
    async (req) => ({ models: await listModels((req.query as { kind: ModelKind }).kind) }),
  );

  app.post(
    '/v1/models/refresh',
    { config: { auth: 'admin' }, schema: { tags: ['models', 'admin'], summary: 'Re-scan the models folder (admin).' } },
    async () => {
      kiln.models.refresh();
      return { models: await listModels('checkpoint') };
    },
  );

  app.get('/v1/samplers', { schema: { tags: ['models'], summary: 'Sampler names the engine accepts (A1111 names and aliases).' } }, async () => ({
    samplers: kiln.samplers(),
  }));

  app.get('/v1/schedules', { schema: { tags: ['models'], summary: 'Noise schedules (A1111 labels such as Karras).' } }, async () => ({
    schedules: kiln.schedules(),
  }));

  app.delete(
    '/v1/queue',
    { config: { auth: 'admin' }, schema: { tags: ['admin'], summary: 'Cancel every queued job (admin). The running job is not affected.' } },
    async () => ({ removed: await kiln.queue.purgeQueued() }),
  );
}
