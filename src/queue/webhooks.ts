// Webhooks: when a job whose spec names one ends, its body is POSTed there. A failed delivery (network error
// or non-2xx answer) is tried again, 3 attempts 10 s apart by default; each attempt has its own timeout. The
// body's shape is a format a surface registered (RunPod's job object); 'native' is the server's job view.
// The process that ends the job delivers it, so each webhook goes out once however many processes listen.
import type { Job } from './job.ts';

export type WebhookRenderer = (job: Job) => Promise<unknown>;

export interface WebhookOptions {
  attempts?: number;
  retryDelayMs?: number;
  /** Per attempt. */
  requestTimeoutMs?: number;
  log?: { warn: (o: object, msg: string) => void };
}

export class WebhookSender {
  private readonly formats = new Map<string, WebhookRenderer>();
  private readonly pending = new Set<Promise<void>>();

  constructor(private readonly opts: WebhookOptions = {}) {}

  /** Registers the body shape for `format` (JobSpec.webhook.format). */
  register(format: string, render: WebhookRenderer): void {
    this.formats.set(format, render);
  }

  /** Starts delivering a finished job to its webhook, if it has one (in the background). */
  deliver(job: Job): void {
    const hook = job.spec.webhook;
    if (!hook) return;
    const p = this.send(job, hook.url, hook.format ?? 'native').finally(() => this.pending.delete(p));
    this.pending.add(p);
  }

  /** Resolves when every delivery under way has succeeded or given up. */
  async drain(): Promise<void> {
    while (this.pending.size) await Promise.all([...this.pending]);
  }

  private async send(job: Job, url: string, format: string): Promise<void> {
    const attempts = this.opts.attempts ?? 3;
    const render = this.formats.get(format) ?? this.formats.get('native');
    let body: string;
    try {
      body = JSON.stringify(render ? await render(job) : { id: job.id, state: job.state, error: job.error ?? null });
    } catch (err) {
      this.opts.log?.warn({ err, jobId: job.id }, 'webhook body could not be made');
      return;
    }
    let last = '';
    for (let attempt = 1; attempt <= attempts; attempt++) {
      try {
        const r = await fetch(url, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body,
          signal: AbortSignal.timeout(this.opts.requestTimeoutMs ?? 10_000),
        });
        if (r.ok) return;
        last = `HTTP ${r.status}`;
      } catch (e) {
        last = (e as Error).message;
      }
      if (attempt < attempts) await new Promise((res) => setTimeout(res, this.opts.retryDelayMs ?? 10_000).unref());
    }
    this.opts.log?.warn({ jobId: job.id, url, reason: last }, `webhook failed after ${attempts} attempts`);
  }
}
