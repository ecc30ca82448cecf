// multipart/form-data requests: the file field `init_image` is kept as bytes, a `request` field may hold the
// whole JSON body, and every other field is parsed as JSON when it can be (so steps=20 is a number) and kept
// as a string otherwise. The assembled object then goes through the same schema as a JSON body.
import { recordSentFields } from '../model-presets.ts';
import type { FastifyRequest } from 'fastify';
import { HttpError } from '../errors.ts';
import { lastFile, readMultipart } from '../multipart.ts';
import { jsonDepth, tooDeepMessage } from '../json-depth.ts';

declare module 'fastify' {
  interface FastifyRequest {
    upload?: { field: string; bytes: Buffer };
    /** A multipart `mask` file (inpainting), used as mask.image. */
    maskUpload?: Buffer;
  }
}

const FILE_FIELDS = ['init_image', 'image'];
const MASK_FIELD = 'mask';

/** Form fields that hold JSON are bounded like a JSON body (see json-depth.ts). */
function checkDepth(name: string, raw: string, maxDepth: number): void {
  if (jsonDepth(raw, maxDepth) > maxDepth) throw new HttpError(400, 'invalid_request', tooDeepMessage(name, maxDepth), name);
}

function parseValue(raw: string): unknown {
  try {
    const v = JSON.parse(raw);
    return typeof v === 'object' && v !== null && !Array.isArray(v) ? raw : v;
  } catch {
    return raw;
  }
}

/** One text field into the native body: `request` holds the whole body (explicit fields win), `output` is JSON. */
function addField(body: Record<string, unknown>, name: string, raw: string, maxDepth: number): Record<string, unknown> {
  checkDepth(name, raw, maxDepth);
  if (name === 'request') {
    let parsed: unknown;
    try {
      parsed = JSON.parse(raw);
    } catch {
      throw new HttpError(400, 'invalid_request', 'request: is not valid JSON', 'request');
    }
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed))
      throw new HttpError(400, 'invalid_request', 'request: must be a JSON object', 'request');
    return { ...(parsed as Record<string, unknown>), ...body };
  }
  if (name === 'output') {
    try {
      body.output = JSON.parse(raw);
    } catch {
      throw new HttpError(400, 'invalid_request', 'output: must be a JSON object', 'output');
    }
    return body;
  }
  const value = parseValue(raw);
  const prev = body[name];
  body[name] = prev === undefined ? value : ([] as unknown[]).concat(prev, value);
  return body;
}

export async function assembleMultipart(req: FastifyRequest): Promise<void> {
  const form = await readMultipart(req, {
    fileFields: [...FILE_FIELDS, MASK_FIELD],
    unknownFile: (field) => new HttpError(400, 'invalid_request', `${field}: is not a known file field (use init_image or mask)`, field),
    addField: (body, name, raw) => addField(body, name, raw, req.server.kiln.config.http.maxJsonDepth),
  });
  if (!form) return;
  const bytes = lastFile(form, ...FILE_FIELDS);
  if (bytes) req.upload = { field: 'init_image', bytes };
  const mask = lastFile(form, MASK_FIELD);
  if (mask) {
    // Mask settings may come in `request`'s or a JSON `mask` field's object; the file is its image.
    let settings = form.body.mask;
    if (typeof settings === 'string') {
      try {
        settings = JSON.parse(settings);
      } catch {
        throw new HttpError(
          400,
          'invalid_request',
          'mask: the text field must be a JSON object of mask settings (the image goes in the mask file field)',
          'mask',
        );
      }
    }
    form.body.mask = { ...(typeof settings === 'object' && settings !== null && !Array.isArray(settings) ? settings : {}), image: 'multipart' };
    req.maskUpload = mask;
  }
  if (req.upload && form.body.type === undefined) form.body.type = 'img2img';
  req.body = form.body;
  recordSentFields(req); // the fields are known only now (model presets fill what was left out)
}
