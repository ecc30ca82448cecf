// buildApp(config) -> a Fastify instance with every native route, auth, limits, docs and the queue wired.
// Tests use app.inject(); `kiln serve` calls listen(). Compat adapters register onto the same instance and
// reach the services through app.kiln.
import Fastify from 'fastify';
import type { FastifyInstance, FastifyServerOptions } from 'fastify';
import { readFileSync } from 'node:fs';
import { Ajv } from 'ajv';
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import multipart from '@fastify/multipart';
import rateLimit from '@fastify/rate-limit';
import type { HttpBounds, KilnConfig } from './config.ts';
import { isLoopback } from './config.ts';
import { KilnServices } from './services.ts';
import type { ServiceOptions } from './services.ts';
import { errorHandler, HttpError } from './errors.ts';
import { AuthFailureLimiter, clientBucket, KeyRing, presentedKey } from './auth.ts';
import type { AuthLevel, Principal } from './auth.ts';
import { healthRoutes } from './health.ts';
import { registerCors } from './cors.ts';
import { requestSurface, surfaceOf } from './metrics.ts';
import { recordSentFields } from './model-presets.ts';
import { nativeRoutes } from './native/routes.ts';
import { registerCompat } from './compat/index.ts';
import { playgroundRoutes } from './playground/routes.ts';
import { closeAllStreams } from './native/sse.ts';
import { jsonDepth, tooDeepMessage } from './json-depth.ts';

declare module 'fastify' {
  interface FastifyInstance {
    kiln: KilnServices;
  }
  interface FastifyRequest {
    principal: Principal;
  }
  interface FastifyContextConfig {
    /** Who may call the route: 'public' (anyone), 'user' (any key, the default) or 'admin'. */
    auth?: AuthLevel;
  }
}

import { VERSION } from '../version.ts';

export { VERSION };

export interface BuildOptions extends ServiceOptions {
  /** Where logs go (tests capture them); defaults to stdout. */
  logStream?: NodeJS.WritableStream;
  /**
   * Start the queue when the app is ready (default, for app.inject). `kiln serve` passes false and calls
   * app.kiln.start() once the port is bound, so a server that cannot listen never runs a job.
   */
  startQueueOnReady?: boolean;
}

/** Refuses configurations that would expose an unauthenticated server to the network. */
export function assertSafeBinding(config: KilnConfig): void {
  if (!isLoopback(config.host) && config.keys.length === 0 && !config.insecure) {
    throw new Error(
      `refusing to listen on ${config.host} without API keys: anyone on the network could use this server. ` +
        'Set keys (--api-key / KILN_API_KEYS / "keys" in kiln.config.json), bind 127.0.0.1, or pass --insecure.',
    );
  }
}

function makeValidatorCompiler() {
  // Bodies are validated strictly (no type coercion, unknown fields rejected) so a wrong type is an error
  // that names the field; query strings and params are strings on the wire, so those are coerced.
  const strict = new Ajv({ allErrors: false, useDefaults: true, coerceTypes: false, removeAdditional: false, strict: false });
  const coercing = new Ajv({ allErrors: false, useDefaults: true, coerceTypes: true, removeAdditional: false, strict: false });
  return ({ schema, httpPart }: { schema: object; httpPart?: string }) => (httpPart === 'body' ? strict : coercing).compile(schema);
}

/**
 * Timeouts against clients that stall: node enforces headers/request timeouts on a timer of
 * `connectionsCheckingInterval` (30 s by default), so it is tied to the shortest timeout to cut stalls promptly.
 */
function serverTimeouts(http: HttpBounds) {
  const shortest = Math.min(...[http.headersTimeoutMs, http.requestTimeoutMs].filter((ms) => ms > 0));
  const connectionsCheckingInterval = Number.isFinite(shortest) ? Math.max(50, Math.min(5000, Math.floor(shortest / 4))) : 30_000;
  return {
    node: { headersTimeout: http.headersTimeoutMs, requestTimeout: http.requestTimeoutMs, connectionsCheckingInterval },
    fastify: { requestTimeout: http.requestTimeoutMs, keepAliveTimeout: http.keepAliveTimeoutMs, connectionTimeout: http.idleTimeoutMs },
  };
}

export async function buildApp(config: KilnConfig, opts: BuildOptions = {}): Promise<FastifyInstance> {
  let services: KilnServices | undefined;
  try {
    return await assemble(config, opts, (s) => {
      services = s;
    });
  } catch (e) {
    // A plugin that fails to register must not leave the engine, the database or the data-dir lock behind.
    await services?.close().catch(() => undefined);
    throw e;
  }
}

const PRETTY_LOGS = { colorize: true, translateTime: 'HH:MM:ss', ignore: 'pid,hostname,reqId' };

async function assemble(config: KilnConfig, opts: BuildOptions, created: (s: KilnServices) => void): Promise<FastifyInstance> {
  const logger: FastifyServerOptions['logger'] = {
    level: config.logLevel,
    redact: { paths: ['req.headers.authorization', 'req.headers["x-api-key"]', 'headers.authorization', 'headers["x-api-key"]'], censor: '[redacted]' },
    // Human-readable lines on a terminal, JSON (one object a line) otherwise, for log collectors.
    ...(opts.logStream ? { stream: opts.logStream } : process.stdout.isTTY ? { transport: { target: 'pino-pretty', options: PRETTY_LOGS } } : {}),
  };
  const timeouts = serverTimeouts(config.http);
  const https = config.tlsCert && config.tlsKey ? { cert: readFileSync(config.tlsCert), key: readFileSync(config.tlsKey), ...timeouts.node } : null;
  const app = (https
    ? Fastify({ logger, https, bodyLimit: config.limits.bodyBytes, ...timeouts.fastify })
    : Fastify({ logger, http: timeouts.node, bodyLimit: config.limits.bodyBytes, ...timeouts.fastify })) as unknown as FastifyInstance;

  app.setValidatorCompiler(makeValidatorCompiler());
  // An empty JSON body (POST .../cancel from clients that always send a JSON content type) is "no body";
  // anything else goes through Fastify's own parser (prototype-poisoning protection included).
  // JSON nested deeper than the limit is refused before parsing, for every route (see json-depth.ts).
  const jsonParser = app.getDefaultJsonParser('error', 'error');
  const maxDepth = config.http.maxJsonDepth;
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (req, body, done) => {
    if (body === '' || (typeof body === 'string' && body.trim() === '')) return done(null, undefined);
    if (jsonDepth(body as string, maxDepth) > maxDepth) return done(new HttpError(400, 'invalid_request', tooDeepMessage('body', maxDepth), 'body'), undefined);
    jsonParser(req, body as string, done);
  });
  app.setErrorHandler(errorHandler);
  app.setNotFoundHandler((req, reply) => {
    void reply.status(404).send({ error: { code: 'not_found', message: `no route ${req.method} ${req.url.split('?')[0]}` } });
  });

  const kiln = new KilnServices(config, { ...opts, log: app.log });
  created(kiln);
  app.decorate('kiln', kiln);
  if (opts.startQueueOnReady ?? true) app.addHook('onReady', async () => kiln.start());
  app.addHook('preClose', async () => closeAllStreams());
  // Before the server waits for open requests: the running job gets the shutdown grace, then clients still
  // waiting on a job (synchronous routes) are answered 503, so none holds the shutdown past the grace.
  app.addHook('preClose', async () => kiln.queue.stop());
  app.addHook('onClose', async () => kiln.close());

  registerCors(app, config.corsOrigins); // before authentication: preflights carry no key
  const keys = new KeyRing(config.keys);
  // Wrong and missing keys are counted per client address in their own, stricter bucket: the per-key limit
  // below cannot see them (each wrong key would get a fresh bucket), and valid keys are never held back.
  const authFailures = new AuthFailureLimiter(config.authFailuresPerMinute);
  app.decorateRequest('principal', null as unknown as Principal);
  // The API surface of the request, for the job counters of /metrics (read where the job is submitted).
  app.addHook('preHandler', (req, _reply, done) => requestSurface.run(surfaceOf(req.routeOptions.url ?? req.url), done));
  // What the client really sent, before schema defaults fill it in: model presets fill only what was left out.
  app.addHook('preValidation', async (req) => recordSentFields(req));
  app.addHook('onRequest', async (req) => {
    const level = req.routeOptions.config?.auth ?? 'user';
    if (level === 'public') {
      req.principal = keys.check(presentedKey(req.headers)) ?? { name: 'public', role: 'user', anonymous: true };
      return;
    }
    const principal = keys.check(presentedKey(req.headers));
    if (!principal) {
      const retryAfter = authFailures.fail(req.ip);
      if (retryAfter !== undefined) {
        throw new HttpError(
          429,
          'rate_limited',
          `too many requests without a valid API key from this address: the limit is ${authFailures.perMinute} per minute; retry in ${retryAfter} s`,
          undefined,
          { 'retry-after': String(retryAfter) },
        );
      }
      throw new HttpError(
        401,
        'unauthorized',
        presentedKey(req.headers) ? 'the API key is not valid' : 'an API key is required (X-API-Key header or Authorization: Bearer)',
        undefined,
        {
          'www-authenticate': 'Bearer',
        },
      );
    }
    if (level === 'admin' && principal.role !== 'admin') throw new HttpError(403, 'forbidden', 'this route needs an admin API key');
    req.principal = principal;
  });

  if (config.rateLimitPerMinute > 0) {
    await app.register(rateLimit, {
      global: true,
      max: config.rateLimitPerMinute,
      timeWindow: 60_000,
      keyGenerator: (req) => {
        // Per key for a valid key (the auth hook ran first), per address otherwise: a made-up key must not
        // open a fresh bucket of its own.
        const p = req.principal;
        return p && !p.anonymous ? `key:${p.name}` : `ip:${clientBucket(req.ip)}`;
      },
      errorResponseBuilder: (_req, ctx) => {
        const err = new HttpError(429, 'rate_limited', `too many requests: the limit is ${ctx.max} per minute; retry in ${Math.ceil(ctx.ttl / 1000)} s`);
        return err as unknown as object;
      },
    });
  }

  await app.register(multipart, {
    limits: { fileSize: config.limits.uploadBytes, files: 2, fields: 60, fieldSize: Math.max(1 << 20, config.limits.maxPromptChars * 4 + 1024), parts: 64 },
  });

  app.addHook('onRoute', (route) => {
    // The docs UI and its assets are public, like health probes.
    if (route.url.startsWith('/docs')) route.config = { ...(route.config ?? {}), auth: 'public', rateLimit: false } as typeof route.config;
  });
  await app.register(swagger, {
    openapi: {
      info: { title: 'Kiln', version: VERSION, description: 'Self-hosted Stable Diffusion image generation: native job API.' },
      components: {
        securitySchemes: {
          apiKey: { type: 'apiKey', in: 'header', name: 'X-API-Key' },
          bearer: { type: 'http', scheme: 'bearer' },
        },
      },
      security: config.keys.length ? [{ apiKey: [] }, { bearer: [] }] : [],
    },
  });
  await app.register(swaggerUi, { routePrefix: '/docs', uiConfig: { docExpansion: 'list' } });
  app.get('/openapi.json', { schema: { hide: true }, config: { auth: 'public' } }, async () => app.swagger());

  await app.register(healthRoutes);
  await app.register(nativeRoutes);
  await registerCompat(app);
  await app.register(playgroundRoutes);
  return app;
}
