// Stored result images by name. Names are checked by storage (no path escapes); uploads (input-*) are
// never served, and a non-admin can only fetch images of their own jobs.
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { extname } from 'node:path';
import { HttpError } from '../errors.ts';
import { maySeeJob } from '../auth.ts';
import { checkName } from '../../storage/image-store.ts';
import { S3ImageStore } from '../../storage/s3.ts';

const TYPES: Record<string, string> = { '.png': 'image/png', '.jpg': 'image/jpeg', '.webp': 'image/webp' };

export async function imageRoutes(app: FastifyInstance): Promise<void> {
  app.get(
    '/v1/images/:name',
    {
      schema: {
        tags: ['images'],
        summary: 'A stored result image (PNG / JPEG / WebP with the generation parameters embedded).',
        params: { type: 'object', required: ['name'], properties: { name: { type: 'string', minLength: 1, maxLength: 255 } } },
      },
    },
    async (req, reply) => sendStoredImage(req, reply, (req.params as { name: string }).name),
  );
}

/** Sends a stored result image by name, to the job's owner or an admin (404 otherwise). Also seed 004's /outputs/{name}. */
export async function sendStoredImage(req: FastifyRequest, reply: FastifyReply, name: string): Promise<FastifyReply> {
  const kiln = req.server.kiln;
  checkName(name); // throws StorageNameError (400) for anything unsafe
  const notFound = new HttpError(404, 'not_found', `name: no image ${name}`, 'name');
  const type = TYPES[extname(name)];
  if (!type || name.startsWith('input-')) throw notFound;
  const jobId = name.replace(/-\d+(-preview)?\.[a-z]+$/, '');
  const job = await kiln.queue.get(jobId);
  const p = req.principal;
  if (!maySeeJob(p, job?.owner)) throw notFound;
  // S3 with --presign: the client fetches the bytes from the store itself, with a short-lived signed URL.
  if (kiln.config.presignMs > 0 && kiln.storage instanceof S3ImageStore) {
    if (!(await kiln.storage.exists(name))) throw notFound;
    const url = await kiln.storage.presignedUrl(name, Math.max(1, Math.round(kiln.config.presignMs / 1000)));
    return reply.header('cache-control', 'private, no-store').redirect(url, 302);
  }
  const bytes = await kiln.storage.read(name);
  if (!bytes) throw notFound;
  return reply.type(type).header('cache-control', 'private, max-age=3600').send(bytes);
}
