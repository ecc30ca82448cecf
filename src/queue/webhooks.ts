// Webhooks: when a job whose spec names one ends, its body is POSTed there. A failed delivery (network error
// or non-2xx answer) is tried again, 3 attempts 10 s apart by default; each attempt has its own timeout. The
// body's shape is a format a surface registered (RunPod's job object); 'native' is the server's job view.
// The process that ends the job delivers it, so each webhook goes out once however many processes listen.
// Targets pass the WebhookPolicy (webhook-target.ts) at delivery too: the host is resolved, every address
// checked, and the connection made to the checked address, so a DNS answer that changed since submission
// (rebinding) cannot redirect the POST into the server's own network. A refused target is not retried.
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import type { LookupFunction } from 'node:net';
import type { Job } from './job.ts';
import { WebhookPolicy, WebhookTargetError } from './webhook-target.ts';

export type WebhookRenderer = (job: Job) => Promise<unknown>;

export interface WebhookOptions {
  attempts?: number;
  retryDelayMs?: number;
  /** Per attempt. */
  requestTimeoutMs?: number;
  /** Which targets are allowed (default: public addresses only). */
  policy?: WebhookPolicy;
  log?: { warn: (o: object, msg: string) => void };
}

export class WebhookSender {
  private readonly formats = new Map<string, WebhookRenderer>();
  private readonly pending = new Set<Promise<void>>();
  readonly policy: WebhookPolicy;

  constructor(private readonly opts: WebhookOptions = {}) {
    this.policy = opts.policy ?? new WebhookPolicy();
  }

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

  /**
   * Submission-time check of a webhook URL against the policy (literal host and its current DNS answer).
   * Throws WebhookTargetError. A name that does not resolve now is let through: delivery checks again.
   */
  async checkTarget(url: string): Promise<void> {
    const host = this.policy.checkLiteral(new URL(url));
    try {
      await this.policy.resolve(host);
    } catch (e) {
      if (e instanceof WebhookTargetError) throw e;
    }
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
        const status = await this.post(url, body);
        if (status >= 200 && status < 300) return;
        last = `HTTP ${status}`;
      } catch (e) {
        if (e instanceof WebhookTargetError) {
          this.opts.log?.warn({ jobId: job.id, url, reason: e.message }, 'webhook refused');
          return;
        }
        last = (e as Error).message;
      }
      if (attempt < attempts) await new Promise((res) => setTimeout(res, this.opts.retryDelayMs ?? 10_000).unref());
    }
    this.opts.log?.warn({ jobId: job.id, url, reason: last }, `webhook failed after ${attempts} attempts`);
  }

  /** One POST to the checked address; resolves with the HTTP status (the answer's body is discarded). */
  private async post(url: string, body: string): Promise<number> {
    const target = new URL(url);
    const host = this.policy.checkLiteral(target);
    const addresses = await this.policy.resolve(host);
    const first = addresses[0]!;
    // Connect to the addresses just checked, never to a second DNS answer.
    const pinned: LookupFunction = (_name, options, callback) => {
      if (options.all) (callback as (e: null, a: typeof addresses) => void)(null, addresses);
      else callback(null, first.address, first.family);
    };
    const timeoutMs = this.opts.requestTimeoutMs ?? 10_000;
    const send = target.protocol === 'https:' ? httpsRequest : httpRequest;
    return new Promise<number>((resolve, reject) => {
      const req = send(
        target,
        {
          method: 'POST',
          headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) },
          lookup: pinned,
          signal: AbortSignal.timeout(timeoutMs),
        },
        (res) => {
          res.resume();
          res.on('end', () => resolve(res.statusCode ?? 0));
          res.on('error', reject);
        },
      );
      req.on('error', reject);
      req.end(body);
    });
  }
}
