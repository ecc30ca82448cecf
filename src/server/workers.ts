// Who runs the jobs: the worker table behind GET /v1/workers and /health. On the embedded queue that is this
// process; on a shared (Redis) queue it is every `kiln worker` (and `kiln serve` that runs jobs) that announced
// itself, with a heartbeat every WORKER_HEARTBEAT_MS: one silent for three beats is shown as gone (its job was
// handed to another worker by the queue's stalled-job check).
import { hostname } from 'node:os';
import { RedisJobBackend } from '../queue/redis-backend.ts';
import type { KilnServices } from './services.ts';
import { WORKER_HEARTBEAT_MS } from './services.ts';

export interface WorkerView {
  id: string;
  host: string;
  pid: number;
  device: string;
  state: 'idle' | 'running' | 'gone';
  loaded_models: string[];
  /** The models it runs jobs for (model-aware routing; `kiln worker --model X` gives [X]). */
  models: string[];
  job: string | null;
  started_at: string;
  last_heartbeat: string;
}

export async function listWorkers(kiln: KilnServices, now = Date.now()): Promise<WorkerView[]> {
  if (kiln.backend instanceof RedisJobBackend) {
    return (await kiln.backend.workers(now)).map((w) => ({
      id: w.id,
      host: w.host,
      pid: w.pid,
      device: w.device,
      state: now - w.heartbeatAt > 3 * WORKER_HEARTBEAT_MS ? 'gone' : w.job ? 'running' : 'idle',
      loaded_models: w.loadedModels,
      models: w.models ?? [],
      job: w.job ?? null,
      started_at: new Date(w.startedAt).toISOString(),
      last_heartbeat: new Date(w.heartbeatAt).toISOString(),
    }));
  }
  const job = kiln.queue.runningJobId;
  return [
    {
      id: 'local',
      host: hostname(),
      pid: process.pid,
      device: kiln.config.device,
      state: job ? 'running' : 'idle',
      loaded_models: kiln.loadedModels().map((m) => m.name),
      models: kiln.models.list().map((e) => e.name),
      job: job ?? null,
      started_at: new Date(now - process.uptime() * 1000).toISOString(),
      last_heartbeat: new Date(now).toISOString(),
    },
  ];
}

/** Jobs waiting for a model that no live worker runs: they stay queued until such a worker starts. */
export interface UnservedModel {
  model: string;
  queued: number;
  note: string;
}

/** Model queues with waiting jobs that no live worker serves (shared queue only; empty on the embedded one). */
export async function unservedModels(kiln: KilnServices, workers: WorkerView[]): Promise<UnservedModel[]> {
  if (!(kiln.backend instanceof RedisJobBackend)) return [];
  const alive = workers.filter((w) => w.state !== 'gone');
  return (await kiln.backend.routeBacklog())
    .filter(({ route }) => !alive.some((w) => w.models.includes(route)))
    .map(({ route, queued }) => ({
      model: route,
      queued,
      note: `${queued} job(s) wait for model "${route}", which no live worker runs; start one with \`kiln worker --model ${route}\` (or with it in its models folder)`,
    }));
}
