// multipart/form-data requests: the file field `init_image` is kept as bytes, a `request` field may hold the
// whole JSON body, and every other field is parsed as JSON when it can be (so steps=20 is a number) and kept
// as a string otherwise. The assembled object then goes through the same schema as a JSON body.
import type { FastifyRequest } from 'fastify';
import { HttpError } from '../errors.ts';

declare module 'fastify' {
  interface FastifyRequest {
    upload?: { field: string; bytes: Buffer };
  }
}

const FILE_FIELDS = new Set(['init_image', 'image']);

function parseValue(raw: string): unknown {
  try {
    const v = JSON.parse(raw);
    return typeof v === 'object' && v !== null && !Array.isArray(v) ? raw : v;
  } catch {
    return raw;
  }
}

export async function assembleMultipart(req: FastifyRequest): Promise<void> {
  if (!req.isMultipart()) return;
  let body: Record<string, unknown> = {};
  for await (const part of req.parts()) {
    if (part.type === 'file') {
      if (!FILE_FIELDS.has(part.fieldname)) {
        await part.toBuffer().catch(() => undefined);
        throw new HttpError(400, 'invalid_request', `${part.fieldname}: is not a known file field (use init_image)`, part.fieldname);
      }
      const bytes = await part.toBuffer();
      req.upload = { field: 'init_image', bytes };
    } else if (part.fieldname === 'request') {
      let parsed: unknown;
      try {
        parsed = JSON.parse(String(part.value));
      } catch {
        throw new HttpError(400, 'invalid_request', 'request: is not valid JSON', 'request');
      }
      if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new HttpError(400, 'invalid_request', 'request: must be a JSON object', 'request');
      body = { ...(parsed as Record<string, unknown>), ...body };
    } else if (part.fieldname === 'output') {
      try {
        body.output = JSON.parse(String(part.value));
      } catch {
        throw new HttpError(400, 'invalid_request', 'output: must be a JSON object', 'output');
      }
    } else {
      const value = parseValue(String(part.value));
      const prev = body[part.fieldname];
      body[part.fieldname] = prev === undefined ? value : ([] as unknown[]).concat(prev, value);
    }
  }
  if (req.upload && body.type === undefined) body.type = 'img2img';
  req.body = body;
}
