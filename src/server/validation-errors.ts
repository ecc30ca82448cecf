// What a route schema's validation failure carries, in ajv's own types, for every surface's error mapper
// (native {error}, FastAPI's 422 detail, OpenAI, RunPod) to read the same way.
import type { ErrorObject } from 'ajv';
import type { FastifyError } from 'fastify';

/** A Fastify error from schema validation: ajv's errors and the request part (body, querystring, ...) at fault. */
export type SchemaValidationError = FastifyError & { validation?: ErrorObject[]; validationContext?: string };

/**
 * The path of the value an ajv error is about: "/output/quality" -> ["output", "quality"], plus the property a
 * `required` or `additionalProperties` error names (the missing or unknown field itself).
 */
export function ajvPath(e: ErrorObject): string[] {
  const parts = e.instancePath.split('/').filter(Boolean);
  if (e.keyword === 'required') parts.push(String(e.params.missingProperty));
  if (e.keyword === 'additionalProperties') parts.push(String(e.params.additionalProperty));
  return parts;
}
