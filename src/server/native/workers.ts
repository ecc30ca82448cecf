// GET /v1/workers: the processes that run jobs, their device, loaded models, current job and last heartbeat.
import type { FastifyInstance } from 'fastify';
import { listWorkers } from '../workers.ts';

export async function workerRoutes(app: FastifyInstance): Promise<void> {
  app.get(
    '/v1/workers',
    {
      schema: {
        tags: ['health'],
        summary: 'Workers (this process on the embedded queue; every kiln worker on a Redis queue) with device, loaded models, current job and last heartbeat.',
      },
    },
    async () => ({ workers: await listWorkers(app.kiln) }),
  );
}
