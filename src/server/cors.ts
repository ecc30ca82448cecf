// CORS for browser clients on other origins (seed 001's browser example): `--cors-origins` lists the origins
// allowed (`*` for any). Preflights (OPTIONS with Access-Control-Request-Method) are answered here, before
// authentication, since browsers send them without credentials; real requests still need their API key.
import type { FastifyInstance } from 'fastify';

const PREFLIGHT_MAX_AGE_S = 600;
const ALLOWED_METHODS = 'GET, POST, PUT, PATCH, DELETE, OPTIONS';
const MAX_REQUESTED_HEADERS = 1000;

export function registerCors(app: FastifyInstance, origins: string[]): void {
  if (origins.length === 0) return;
  const any = origins.includes('*');
  const allowed = new Set(origins.map((o) => o.replace(/\/+$/, '').toLowerCase()));
  app.addHook('onRequest', async (req, reply) => {
    const origin = req.headers.origin;
    if (!origin || !(any || allowed.has(origin.toLowerCase()))) return;
    reply.header('access-control-allow-origin', any ? '*' : origin);
    if (!any) reply.header('vary', 'Origin');
    reply.header('access-control-expose-headers', 'content-type, content-disposition, retry-after, x-request-id');
    if (req.method === 'OPTIONS' && req.headers['access-control-request-method']) {
      const requested = String(req.headers['access-control-request-headers'] ?? '').slice(0, MAX_REQUESTED_HEADERS);
      reply
        .header('access-control-allow-methods', ALLOWED_METHODS)
        .header('access-control-allow-headers', requested || 'content-type, authorization, x-api-key')
        .header('access-control-max-age', String(PREFLIGHT_MAX_AGE_S))
        .code(204)
        .send();
      return reply;
    }
  });
}
