// Every error a client sees is {error: {code, message, field?}} with a 4xx/5xx status; messages name the
// field at fault. Fastify schema errors are rewritten from ajv's shape into that form.
import { BackendUnavailableError } from '../queue/backend.ts';
import type { ErrorObject } from 'ajv';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { SpecError } from '../queue/job-spec.ts';
import { FeatureNotImplemented } from '../queue/capabilities.ts';
import { QueueClosedError, QueueFullError } from '../queue/queue.ts';
import { StorageNameError } from '../storage/image-store.ts';
import { diskFullMessage, isDiskFull } from '../storage/faults.ts';
import { KilnInputError, ModelFileError } from '../engine/index.ts';
import { ajvPath, type SchemaValidationError } from './validation-errors.ts';

export interface ErrorBody {
  error: { code: string; message: string; field?: string };
}

export class HttpError extends Error {
  constructor(
    readonly statusCode: number,
    readonly code: string,
    message: string,
    readonly field?: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
    this.name = 'HttpError';
  }
}

/** ajv instancePath "/output/quality" or "/prompts/3" -> "output.quality" / "prompts[3]". */
function fieldOf(e: ErrorObject, context?: string): string {
  let out = '';
  for (const p of ajvPath(e)) out += /^\d+$/.test(p) ? `[${p}]` : out ? `.${p}` : p;
  return out || (context === 'body' ? 'body' : (context ?? 'request'));
}

function describe(e: ErrorObject): string {
  switch (e.keyword) {
    case 'additionalProperties':
      return 'is not a known field';
    case 'required':
      return 'is required';
    case 'enum':
      return `must be one of ${((e.params?.allowedValues ?? []) as unknown[]).map((v) => JSON.stringify(v)).join(', ')}`;
    case 'anyOf':
      return 'has the wrong type';
    default:
      return e.message ?? 'is invalid';
  }
}

export function validationError(errors: ErrorObject[], context?: string): HttpError {
  // anyOf failures report each branch first; the branch errors are less useful than "wrong type" on the field.
  const anyOf = errors.find((e) => e.keyword === 'anyOf');
  const e = anyOf ?? errors[0]!;
  const field = fieldOf(e, context);
  return new HttpError(400, 'invalid_request', `${field}: ${describe(e)}`, field);
}

export function toHttpError(err: unknown): HttpError {
  if (err instanceof HttpError) return err;
  const fe = err as SchemaValidationError;
  if (fe?.validation) return validationError(fe.validation, fe.validationContext);
  if (err instanceof SpecError || err instanceof KilnInputError) {
    return new HttpError(400, 'invalid_request', err.message, (err as SpecError).field ?? undefined);
  }
  if (err instanceof ModelFileError) return new HttpError(422, 'model_error', err.message, 'model');
  if (err instanceof FeatureNotImplemented) return new HttpError(501, 'not_implemented', err.message, err.field);
  if (err instanceof StorageNameError) return new HttpError(400, 'invalid_request', `name: ${err.message}`, 'name');
  if (err instanceof QueueFullError) return new HttpError(429, 'queue_full', err.message, undefined, { 'retry-after': String(err.retryAfterS) });
  if (err instanceof QueueClosedError) return new HttpError(503, 'shutting_down', err.message, undefined, { 'retry-after': '5' });
  if (err instanceof BackendUnavailableError)
    return new HttpError(503, 'queue_unavailable', err.message, undefined, { 'retry-after': String(err.retryAfterS) });
  // A full disk is the operator's to fix, not a bug: 507 Insufficient Storage on every surface, and the server runs on.
  if (isDiskFull(err)) return new HttpError(507, 'storage_full', diskFullMessage(err, 'the request could not be stored'), undefined, { 'retry-after': '30' });
  switch (fe?.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return new HttpError(413, 'body_too_large', 'body: the request body is larger than the server limit', 'body');
    case 'FST_REQ_FILE_TOO_LARGE':
      return new HttpError(413, 'upload_too_large', 'init_image: the uploaded file is larger than the server limit', 'init_image');
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return new HttpError(415, 'unsupported_media_type', 'body: send application/json (or multipart/form-data for uploads)', 'body');
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
      return new HttpError(400, 'invalid_request', 'body: the JSON body is empty', 'body');
    case 'FST_ERR_CTP_INVALID_JSON_BODY':
      return new HttpError(400, 'invalid_request', 'body: the body is not valid JSON', 'body');
  }
  if (fe?.statusCode === 400 && fe instanceof SyntaxError) return new HttpError(400, 'invalid_request', 'body: the body is not valid JSON', 'body');
  if (fe?.statusCode === 429) return new HttpError(429, 'rate_limited', fe.message, undefined);
  if (fe?.statusCode && fe.statusCode >= 400 && fe.statusCode < 500) {
    return new HttpError(fe.statusCode, 'invalid_request', fe.message);
  }
  return new HttpError(500, 'internal', 'internal server error');
}

export function errorHandler(err: unknown, req: FastifyRequest, reply: FastifyReply): void {
  const http = toHttpError(err);
  if (http.statusCode >= 500) req.log.error({ err }, 'request failed');
  else req.log.info({ status: http.statusCode, code: http.code, field: http.field }, 'request rejected');
  for (const [k, v] of Object.entries(http.headers)) reply.header(k, v);
  const body: ErrorBody = { error: { code: http.code, message: http.message, ...(http.field ? { field: http.field } : {}) } };
  void reply.status(http.statusCode).send(body);
}
