// The web playground: a static single-page app (plain ES modules in ./static, no build step) served at `/` to
// browsers and its assets under /ui/. Seed 001's `/` keeps answering JSON to API clients: the page goes only to
// requests whose Accept header prefers text/html (see wantsHtml). Every URL in the page is relative, so it works
// behind a reverse proxy at a sub-path.
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { readdirSync, readFileSync } from 'node:fs';
import { extname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { HttpError } from '../errors.ts';

const STATIC_DIR = fileURLToPath(new URL('./static/', import.meta.url));
const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
};
// The page may load only its own scripts, styles and images (blob: and data: for results and previews).
const CSP = "default-src 'self'; img-src 'self' blob: data:; connect-src 'self'; style-src 'self'; script-src 'self'; object-src 'none'; base-uri 'none'";

interface Asset {
  type: string;
  body: Buffer;
}

/** Read once at start: a handful of small files. */
function loadAssets(): Map<string, Asset> {
  const assets = new Map<string, Asset>();
  for (const name of readdirSync(STATIC_DIR)) {
    const type = TYPES[extname(name)];
    if (type) assets.set(name, { type, body: readFileSync(join(STATIC_DIR, name)) });
  }
  return assets;
}

let cached: Map<string, Asset> | undefined;
const assets = () => (cached ??= loadAssets());

/** The q-value a media range gets in an Accept header (0 when absent). */
function quality(accept: string, type: string): number {
  let best = 0;
  for (const part of accept.split(',')) {
    const [range = '', ...params] = part.trim().split(';');
    if (range.trim().toLowerCase() !== type) continue;
    const q = params.map((p) => /^\s*q=([\d.]+)\s*$/.exec(p)?.[1]).find((v) => v !== undefined);
    best = Math.max(best, q === undefined ? 1 : Number(q) || 0);
  }
  return best;
}

/**
 * Whether `/` should answer the page: the client names text/html explicitly and prefers it to application/json.
 * Browsers do; curl (`*\/*`), fetch() defaults and any Accept naming JSON as high get the JSON.
 */
export function wantsHtml(req: FastifyRequest): boolean {
  const accept = req.headers.accept ?? '';
  const html = quality(accept, 'text/html');
  return html > 0 && html > quality(accept, 'application/json');
}

function send(reply: FastifyReply, asset: Asset): FastifyReply {
  // no-cache: revalidate on every load, so an upgraded server never runs a stale script.
  return reply.type(asset.type).header('cache-control', 'no-cache').header('x-content-type-options', 'nosniff').send(asset.body);
}

/** Answers the playground page (seed 001's `/` calls this for browsers). */
export function sendPlayground(reply: FastifyReply): FastifyReply {
  return send(reply.header('content-security-policy', CSP).header('vary', 'Accept'), assets().get('index.html')!);
}

export async function playgroundRoutes(app: FastifyInstance): Promise<void> {
  app.get(
    '/ui/:file',
    {
      config: { auth: 'public', rateLimit: false },
      schema: {
        hide: true,
        params: { type: 'object', required: ['file'], properties: { file: { type: 'string', minLength: 1, maxLength: 100 } } },
      },
    },
    async (req, reply) => {
      const { file } = req.params as { file: string };
      const asset = file === 'index.html' ? undefined : assets().get(file);
      if (!asset) throw new HttpError(404, 'not_found', `file: no playground asset ${file}`, 'file');
      return send(reply, asset);
    },
  );
}
