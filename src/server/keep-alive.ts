// Keeping a long-held response alive: proxies and tunnels (ngrok, nginx) drop connections that stay silent, so
// a route that waits for a job writes something harmless at an interval. The timers live here, not in routes.
import type { FastifyReply, FastifyRequest } from 'fastify';

/** Calls `beat` every `intervalMs` until the returned function is called. */
export function startHeartbeat(beat: () => void, intervalMs: number): () => void {
  const timer = setInterval(beat, intervalMs);
  return () => clearInterval(timer);
}

/** How often a waiting JSON answer sends a heartbeat (KILN_HEARTBEAT_MS overrides, for tests). */
export function jsonHeartbeatMs(): number {
  const v = Number(process.env.KILN_HEARTBEAT_MS);
  return Number.isFinite(v) && v > 0 ? v : 10_000;
}

export interface JsonHeartbeatOptions {
  intervalMs?: number;
  /** The JSON body that reports an error raised after the 200 headers went out (the status can no longer say it). */
  lateErrorBody: (err: unknown) => unknown;
}

/**
 * Answers a JSON body after `work` resolves. If that takes longer than one heartbeat interval, the 200 headers
 * go out at once and a space is written every interval (JSON allows leading whitespace), then the body; an
 * error before that point is thrown to the route's error handler, one after it ends the body as `lateErrorBody`.
 */
export async function sendJsonWithHeartbeats(
  req: FastifyRequest,
  reply: FastifyReply,
  work: () => Promise<unknown>,
  options: JsonHeartbeatOptions,
): Promise<void> {
  let streaming = false;
  const stop = startHeartbeat(() => {
    if (!streaming) {
      streaming = true;
      reply.hijack();
      reply.raw.writeHead(200, { 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-cache' });
    }
    reply.raw.write(' ');
  }, options.intervalMs ?? jsonHeartbeatMs());
  try {
    const body = await work();
    stop();
    if (streaming) reply.raw.end(JSON.stringify(body));
    else await reply.status(200).send(body);
  } catch (e) {
    stop();
    if (!streaming) throw e;
    req.log.info({ err: e }, 'request failed after heartbeats started');
    reply.raw.end(JSON.stringify(options.lateErrorBody(e)));
  }
}
