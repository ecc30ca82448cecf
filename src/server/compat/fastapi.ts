// FastAPI's error shapes, which the seed APIs (001, 002, 003) and A1111 were built on: {"detail": "..."} for raised
// errors and 422 {"detail": [{loc, msg, type}]} for request validation. The seeds run pydantic 2; A1111 v1.10
// runs pydantic 1, whose messages and type names differ ("field required" / "value_error.missing").
import type { ErrorObject } from 'ajv';
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { Classified } from './common.ts';
import { sendClassified } from './common.ts';
import type { SchemaValidationError } from '../validation-errors.ts';

export interface FastApiIssue {
  loc: (string | number)[];
  msg: string;
  type: string;
}

export type PydanticVersion = 1 | 2;

function pydantic2Issue(e: ErrorObject, loc: (string | number)[]): FastApiIssue {
  if (e.keyword === 'required') return { loc: [...loc, String(e.params?.missingProperty)], msg: 'Field required', type: 'missing' };
  if (e.keyword === 'type')
    return { loc, msg: `Input should be a valid ${String(e.params?.type ?? '').split(',')[0]}`, type: `${String(e.params?.type ?? '').split(',')[0]}_type` };
  if (e.keyword === 'maximum' || e.keyword === 'maxItems')
    return { loc, msg: `Input should be less than or equal to ${String(e.params?.limit)}`, type: 'less_than_equal' };
  if (e.keyword === 'minimum' || e.keyword === 'minItems')
    return { loc, msg: `Input should be greater than or equal to ${String(e.params?.limit)}`, type: 'greater_than_equal' };
  if (e.keyword === 'enum')
    return { loc, msg: `Input should be ${((e.params?.allowedValues ?? []) as unknown[]).map((v) => `'${String(v)}'`).join(' or ')}`, type: 'enum' };
  return { loc, msg: e.message ?? 'Invalid value', type: 'value_error' };
}

function pydantic1Issue(e: ErrorObject, loc: (string | number)[]): FastApiIssue {
  if (e.keyword === 'required') return { loc: [...loc, String(e.params?.missingProperty)], msg: 'field required', type: 'value_error.missing' };
  if (e.keyword === 'type') {
    const t = String(e.params?.type ?? '').split(',')[0];
    return { loc, msg: `value is not a valid ${t === 'number' ? 'float' : t}`, type: `type_error.${t === 'number' ? 'float' : t}` };
  }
  return { loc, msg: e.message ?? 'invalid value', type: `value_error.${e.keyword}` };
}

/** ajv errors -> FastAPI's 422 detail list, in the wording of the given pydantic version. */
export function fastApiIssues(errors: ErrorObject[], context: string, pydantic: PydanticVersion = 2): FastApiIssue[] {
  return errors.map((e) => {
    const loc: (string | number)[] = [
      context,
      ...(e.instancePath ?? '')
        .split('/')
        .filter(Boolean)
        .map((p) => (/^\d+$/.test(p) ? Number(p) : p)),
    ];
    return pydantic === 1 ? pydantic1Issue(e, loc) : pydantic2Issue(e, loc);
  });
}

export interface FastApiErrorOptions {
  pydantic?: PydanticVersion;
  /** The body of a raised (non-validation) error; FastAPI's HTTPException gives {detail}. */
  body?: (c: Classified) => unknown;
  /** Names the surface in the log line of a server error. */
  logPrefix?: string;
}

/** An error handler answering in FastAPI's shapes: 422 {detail: [...]} for schema errors, the classified status otherwise. */
export function fastApiErrorHandlerWith(options: FastApiErrorOptions = {}) {
  const { pydantic = 2, body = (c: Classified) => ({ detail: c.message }), logPrefix = '' } = options;
  return (err: SchemaValidationError, req: FastifyRequest, reply: FastifyReply): void => {
    if (err.validation) {
      void reply.status(422).send({ detail: fastApiIssues(err.validation, err.validationContext ?? 'body', pydantic) });
      return;
    }
    sendClassified(err, req, reply, `${logPrefix}request failed`, body);
  };
}

/** The seed APIs' handler (pydantic 2, {detail: message}). */
export const fastApiErrorHandler = fastApiErrorHandlerWith();
