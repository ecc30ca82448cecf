// FastAPI's error shapes, which the seed APIs (001, 002, 003) were built on: {"detail": "..."} for raised
// errors and 422 {"detail": [{loc, msg, type}]} for request validation.
import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import { classify } from './common.ts';

interface AjvError {
  instancePath?: string;
  keyword: string;
  message?: string;
  params?: Record<string, unknown>;
}

export interface FastApiIssue {
  loc: (string | number)[];
  msg: string;
  type: string;
}

export function fastApiIssues(errors: AjvError[], context: string): FastApiIssue[] {
  return errors.map((e) => {
    const loc: (string | number)[] = [context, ...(e.instancePath ?? '').split('/').filter(Boolean).map((p) => (/^\d+$/.test(p) ? Number(p) : p))];
    if (e.keyword === 'required') return { loc: [...loc, String(e.params?.missingProperty)], msg: 'Field required', type: 'missing' };
    if (e.keyword === 'type') return { loc, msg: `Input should be a valid ${String(e.params?.type ?? '').split(',')[0]}`, type: `${String(e.params?.type ?? '').split(',')[0]}_type` };
    if (e.keyword === 'maximum' || e.keyword === 'maxItems') return { loc, msg: `Input should be less than or equal to ${String(e.params?.limit)}`, type: 'less_than_equal' };
    if (e.keyword === 'minimum' || e.keyword === 'minItems') return { loc, msg: `Input should be greater than or equal to ${String(e.params?.limit)}`, type: 'greater_than_equal' };
    if (e.keyword === 'enum') return { loc, msg: `Input should be ${(e.params?.allowedValues as unknown[]).map((v) => `'${String(v)}'`).join(' or ')}`, type: 'enum' };
    return { loc, msg: e.message ?? 'Invalid value', type: 'value_error' };
  });
}

export function fastApiErrorHandler(err: FastifyError & { validation?: AjvError[]; validationContext?: string }, req: FastifyRequest, reply: FastifyReply): void {
  if (err.validation) {
    void reply.status(422).send({ detail: fastApiIssues(err.validation, err.validationContext ?? 'body') });
    return;
  }
  const c = classify(err);
  if (c.status >= 500 && c.status !== 501) req.log.error({ err }, 'request failed');
  for (const [k, v] of Object.entries(c.headers)) reply.header(k, v);
  void reply.status(c.status).send({ detail: c.message });
}
