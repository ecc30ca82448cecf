// GET /v1/workers: the processes that run jobs, their device, loaded models, current job and last heartbeat.
import type { FastifyInstance } from 'fastify';
import { listWorkers, unservedModels } from '../workers.ts';

export async function workerRoutes(app: FastifyInstance): Promise<void> {
  app.get(
    '/v1/workers',
    {
      schema: {
        tags: ['health'],
        summary:
          'Workers (this process on the embedded queue; every kiln worker on a Redis queue) with device, loaded models, the models they run jobs for, current job and last heartbeat; unserved_models: jobs waiting for a model no live worker runs.',
      },
    },
    async () => {
      const workers = await listWorkers(app.kiln);
      return { workers, unserved_models: await unservedModels(app.kiln, workers) };
    },
  );
}
