// Liveness (/health), readiness (/ready) and Prometheus metrics (/metrics). These never touch the engine
// thread, so they answer within milliseconds even while a generation runs.
import type { FastifyInstance } from 'fastify';
import { execFile } from 'node:child_process';
import { VERSION } from '../version.ts';
import { BackendUnavailableError } from '../queue/backend.ts';
import { RedisJobBackend } from '../queue/redis-backend.ts';
import { listWorkers, unservedModels } from './workers.ts';
import type { WorkerView } from './workers.ts';

let gpuName: string | null | undefined;

/** The CUDA device name from nvidia-smi (once, in the background); null when there is none. */
function detectGpu(): void {
  if (gpuName !== undefined) return;
  gpuName = null;
  execFile('nvidia-smi', ['--query-gpu=name', '--format=csv,noheader'], { timeout: 3000 }, (err, stdout) => {
    if (!err && stdout.trim()) gpuName = stdout.trim().split('\n')[0];
  });
}

export async function healthRoutes(app: FastifyInstance): Promise<void> {
  const kiln = app.kiln;
  const started = Date.now();
  const cuda = kiln.config.device === 'cuda' || kiln.config.device === 'tensorrt';
  // Probes come every few seconds: their request lines show at --log-level debug (or trace) only.
  const probeLogLevel = (['debug', 'trace'].includes(kiln.config.logLevel) ? kiln.config.logLevel : 'warn') as 'debug' | 'trace' | 'warn';
  if (cuda) detectGpu();

  app.get(
    '/health',
    {
      config: { auth: 'public', rateLimit: false },
      logLevel: probeLogLevel,
      schema: { tags: ['health'], summary: 'Liveness and device info (seed 001 shape: status, cuda_available, cuda_device).' },
    },
    async () => {
      let counts: Awaited<ReturnType<typeof kiln.queue.counts>>;
      let workers: WorkerView[];
      let unserved: Awaited<ReturnType<typeof unservedModels>>;
      try {
        [counts, workers] = await Promise.all([kiln.queue.counts(), listWorkers(kiln)]);
        unserved = await unservedModels(kiln, workers);
      } catch (e) {
        // The process lives but the shared queue is away: say so (200, so a supervisor does not restart us for it).
        if (!(e instanceof BackendUnavailableError)) throw e;
        return { status: 'degraded', version: VERSION, error: e.message, engine: kiln.engineStatus.state, device: kiln.config.device };
      }
      const alive = workers.filter((w) => w.state !== 'gone');
      return {
        status: 'healthy',
        version: VERSION,
        uptime_s: Math.round((Date.now() - started) / 1000),
        device: kiln.config.device,
        cuda_available: cuda && kiln.engineStatus.state === 'ready',
        cuda_device: cuda ? (gpuName ?? null) : null,
        engine: kiln.engineStatus.state,
        busy: kiln.queue.busy,
        queue: { queued: counts.queued, running: counts.running },
        // RunPod's /health fields too, so this one route serves native, seed and RunPod clients.
        jobs: { completed: counts.succeeded, failed: counts.failed, inProgress: counts.running, inQueue: counts.queued, retried: kiln.queue.stats.retried },
        workers: { idle: alive.filter((w) => w.state === 'idle').length, running: alive.filter((w) => w.state === 'running').length },
        worker_list: workers,
        // Shared queue: jobs waiting for a model no live worker runs (they stay queued until one does).
        ...(unserved.length ? { unserved_models: unserved } : {}),
      };
    },
  );

  app.get(
    '/ready',
    {
      config: { auth: 'public', rateLimit: false },
      logLevel: probeLogLevel,
      schema: { tags: ['health'], summary: 'Ready to generate: engine started and a default model known (503 otherwise).' },
    },
    async (_req, reply) => {
      const r = kiln.readiness();
      if (r.ready && kiln.backend instanceof RedisJobBackend) {
        try {
          await kiln.backend.ready(1000);
        } catch (e) {
          return reply.status(503).send({ ready: false, reason: (e as Error).message });
        }
      }
      return reply.status(r.ready ? 200 : 503).send(r);
    },
  );

  app.get(
    '/metrics',
    {
      config: { auth: kiln.config.metricsPublic ? 'public' : 'user', rateLimit: false },
      logLevel: probeLogLevel,
      schema: { tags: ['health'], summary: 'Prometheus metrics.' },
    },
    async (_req, reply) => reply.type(kiln.metrics.contentType).send(await kiln.metrics.render()),
  );
}
