// A client that hangs up before its answer is written no longer wants the result: cancel the job it was
// waiting for, so the device is free for others. Every route that holds a request open on a job uses this.
import type { FastifyReply } from 'fastify';

/**
 * Calls `cancel` if the connection closes before the reply is fully written. Returns the function that stops
 * watching (call it once the job is final, before answering).
 */
export function cancelOnHangUp(reply: FastifyReply, cancel: () => unknown): () => void {
  const onClose = () => {
    if (reply.raw.writableFinished) return;
    // Nobody is left to tell; a cancel that fails leaves the job to finish on its own.
    Promise.resolve()
      .then(cancel)
      .catch((err: unknown) => reply.log.warn({ err }, 'cancelling the job of a closed connection failed'));
  };
  // The client may have gone while the job was being queued (Redis: a few round trips), before this watch began.
  if (reply.raw.closed) {
    onClose();
    return () => {};
  }
  reply.raw.on('close', onClose);
  return () => reply.raw.off('close', onClose);
}
