// Server-Sent Events for one job: `state` first, then `progress` on every engine step, then exactly one of
// `succeeded` / `failed` / `cancelled` (with the full job view), then the stream ends. A comment line is
// sent every 15 s so proxies and tunnels keep the connection open during long jobs.
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { KilnServices } from '../services.ts';
import { FINAL_STATES } from '../../queue/job.ts';
import type { Job, JobEvent } from '../../queue/job.ts';
import type { ResponseKind } from '../../queue/job-spec.ts';
import { baseUrl, jobSummary, jobView, previewPath } from './views.ts';
import { startHeartbeat } from '../keep-alive.ts';

const open = new Set<() => void>();

/** Ends every open stream (server shutdown), so closing does not wait on idle clients. */
export function closeAllStreams(): void {
  for (const end of [...open]) end();
}

export const HEARTBEAT_MS = 15_000;

export async function streamJob(kiln: KilnServices, job: Job, req: FastifyRequest, reply: FastifyReply, response?: ResponseKind): Promise<void> {
  reply.hijack();
  const res = reply.raw;
  res.writeHead(200, {
    'content-type': 'text/event-stream; charset=utf-8',
    'cache-control': 'no-cache, no-transform',
    connection: 'keep-alive',
    'x-accel-buffering': 'no',
  });
  const base = baseUrl(kiln, req);
  let ended = false;
  const write = (event: string, data: unknown) => {
    if (!ended) res.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
  };
  const stopHeartbeat = startHeartbeat(() => !ended && res.write(': keep-alive\n\n'), HEARTBEAT_MS);
  let off = () => {};
  const end = () => {
    if (ended) return;
    ended = true;
    stopHeartbeat();
    off();
    open.delete(end);
    res.end();
  };
  open.add(end);
  res.on('close', end);

  // Frames go out in event order; summaries and views are async (position, ETA, images), so they are chained.
  let frames: Promise<void> = Promise.resolve();
  const send = (frame: () => Promise<[string, unknown]> | [string, unknown]) => {
    frames = frames
      .then(async () => {
        const [event, data] = await frame();
        write(event, data);
      })
      .catch(() => undefined);
  };
  let finished = false;
  const finish = (final: Job) => {
    if (finished) return;
    finished = true;
    off();
    send(async () => [final.state, await jobView(kiln, final, base, response).catch(() => jobSummary(kiln, final))]);
    frames = frames.then(end, end);
  };

  off = kiln.queue.events(job.id, (e: JobEvent) => {
    if (e.type === 'progress') {
      const frame = { id: e.job.id, progress: Number(e.progress.toFixed(4)), phase: e.phase, step: e.step, total_steps: e.totalSteps };
      // A step that brought a new live preview says where to fetch it.
      send(() => ['progress', e.preview ? { ...frame, preview_url: previewPath(e.job.id) } : frame]);
    } else if (e.type === 'started' || e.type === 'queued') {
      send(async () => ['state', await jobSummary(kiln, e.job)]);
    } else {
      finish(e.job);
    }
  });
  send(async () => ['state', await jobSummary(kiln, job)]);
  if (FINAL_STATES.has(job.state)) return finish(job);
  // The job may have finished between reading it and subscribing.
  const now = await kiln.queue.get(job.id);
  if (now && FINAL_STATES.has(now.state)) finish(now);
}
