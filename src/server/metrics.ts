// Prometheus text exposition of queue and generation numbers. Generation time is a histogram fed by queue
// events; the other values are read when /metrics is scraped.
import type { JobQueue } from '../queue/queue.ts';
import { JOB_STATES } from '../queue/job.ts';

const BUCKETS = [0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600];

export class Metrics {
  private readonly counts = new Array<number>(BUCKETS.length).fill(0);
  private sum = 0;
  private count = 0;
  private finished = { succeeded: 0, failed: 0, cancelled: 0 };
  private lastStepsPerSecond = 0;
  private readonly off: () => void;

  constructor(private readonly queue: JobQueue) {
    this.off = queue.events('*', (e) => {
      if (e.type === 'succeeded' || e.type === 'failed' || e.type === 'cancelled') this.finished[e.type]++;
      if (e.type !== 'succeeded' || e.job.startedAt === undefined || e.job.finishedAt === undefined) return;
      const s = (e.job.finishedAt - e.job.startedAt) / 1000;
      this.sum += s;
      this.count++;
      BUCKETS.forEach((b, i) => {
        if (s <= b) this.counts[i]!++;
      });
      const sps = queue.stats.lastStepsPerSecond;
      if (sps !== undefined) this.lastStepsPerSecond = sps;
    });
  }

  async render(): Promise<string> {
    const byState = await this.queue.counts();
    const lines: string[] = [];
    const metric = (name: string, type: string, help: string, samples: Array<[string, number]>) => {
      lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
      for (const [labels, v] of samples) lines.push(`${name}${labels} ${Number.isFinite(v) ? v : 0}`);
    };
    metric('kiln_queue_depth', 'gauge', 'Jobs waiting to run.', [['', byState.queued]]);
    metric(
      'kiln_jobs',
      'gauge',
      'Jobs in the database by state.',
      JOB_STATES.map((s) => [`{state="${s}"}`, byState[s]]),
    );
    metric(
      'kiln_jobs_finished_total',
      'counter',
      'Jobs finished since the server started, by final state.',
      Object.entries(this.finished).map(([s, n]) => [`{state="${s}"}`, n]),
    );
    metric('kiln_worker_busy', 'gauge', '1 while a generation is running.', [['', this.queue.busy ? 1 : 0]]);
    metric('kiln_steps_per_second', 'gauge', 'Sampling steps per second of the last successful job.', [['', this.lastStepsPerSecond]]);
    lines.push('# HELP kiln_generation_seconds Wall time of successful jobs, from start to stored images.', '# TYPE kiln_generation_seconds histogram');
    BUCKETS.forEach((b, i) => lines.push(`kiln_generation_seconds_bucket{le="${b}"} ${this.counts[i]}`));
    lines.push(
      `kiln_generation_seconds_bucket{le="+Inf"} ${this.count}`,
      `kiln_generation_seconds_sum ${this.sum}`,
      `kiln_generation_seconds_count ${this.count}`,
    );
    const mem = process.memoryUsage();
    metric('kiln_process_resident_memory_bytes', 'gauge', 'Resident memory of the server process.', [['', mem.rss]]);
    return `${lines.join('\n')}\n`;
  }

  close(): void {
    this.off();
  }
}
