// The BullMQ queues of the Redis backend, one per route (routing.ts): producers for queueing, and in a worker
// process one BullMQ Worker (manual processing: getNextJob, lock renewal, stalled-job recovery) per route it
// serves, made on first use. A route nobody serves has no Worker anywhere, so its jobs wait rather than stall.
import type { Redis } from 'ioredis';
import { Queue, Worker } from 'bullmq';
import type { ConnectionOptions, Job as BullJob } from 'bullmq';
import { bullQueueName } from './routing.ts';

export interface RouteQueueOptions {
  /** BullMQ's key prefix. */
  prefix: string;
  /** Producers share this connection (fail-fast; closed by the owner). */
  producerConnection: Redis;
  /** Workers open their own (blocking-capable) connections with these. */
  workerConnection: ConnectionOptions;
  lockMs: number;
  stalledCheckMs: number;
  /** A job of a route put back in line after its worker died. */
  onStalled: (jobId: string) => void;
}

export class RouteQueues {
  private readonly producers = new Map<string, Queue>();
  private readonly workers = new Map<string, Worker>();

  constructor(private readonly opts: RouteQueueOptions) {}

  producer(route: string): Queue {
    let q = this.producers.get(route);
    if (!q) {
      q = new Queue(bullQueueName(route), { connection: this.opts.producerConnection, prefix: this.opts.prefix });
      q.on('error', () => undefined);
      this.producers.set(route, q);
    }
    return q;
  }

  /** This process's BullMQ worker of a route (made on first use: API nodes never make one). */
  worker(route: string): Worker {
    let w = this.workers.get(route);
    if (!w) {
      w = new Worker(bullQueueName(route), null, {
        connection: this.opts.workerConnection,
        prefix: this.opts.prefix,
        autorun: false,
        lockDuration: this.opts.lockMs,
        stalledInterval: this.opts.stalledCheckMs,
        // Kiln counts attempts itself (maxAttempts); BullMQ only puts stalled jobs back in line.
        maxStalledCount: 1_000_000,
      });
      w.on('error', () => undefined);
      w.on('stalled', (jobId: string) => this.opts.onStalled(jobId));
      void w.startStalledCheckTimer().catch(() => undefined);
      this.workers.set(route, w);
    }
    return w;
  }

  /** The next job of the first of `routes` that has one, taken under `token`. */
  async next(routes: readonly string[], token: string): Promise<BullJob | undefined> {
    // Every served route gets its Worker (and so its stalled-job check) at once, not only those looked at.
    for (const route of routes) this.worker(route);
    for (const route of routes) {
      const job = (await this.worker(route).getNextJob(token, { block: false })) as BullJob | undefined;
      if (job?.id) return job;
    }
    return undefined;
  }

  /** Jobs waiting in a route's queue. */
  waiting(route: string): Promise<number> {
    return this.producer(route).getJobCountByTypes('wait', 'prioritized');
  }

  async close(): Promise<void> {
    for (const w of this.workers.values()) await w.close(true).catch(() => undefined);
    for (const q of this.producers.values()) await q.close().catch(() => undefined);
  }
}
