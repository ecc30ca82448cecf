// A local HTTP server speaking the shapes of the Hugging Face Hub and Civitai, for the download tests (nothing
// outside this machine is reachable). Hub: GET /api/models/<repo>[/revision/<rev>] (siblings), HEAD/GET
// /<repo>/resolve/<rev>/<file> with X-Repo-Commit, ETag/X-Linked-Etag, X-Linked-Size, LFS files redirected to
// /cdn/<sha256>. Civitai: /api/v1/models/:id, /api/v1/model-versions/:id, /api/v1/models?query=,
// /api/download/models/:versionId (307 to /storage/...). /cdn and /storage honour Range; `cutAfter` makes the
// next body transfer break off after N bytes (an interrupted download).
import { createHash } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface HubRepo {
  commit: string;
  files: Record<string, Buffer>;
  /** Published sha256 overrides (a lying hub: the checksum test). */
  badSha?: Record<string, string>;
}

export interface CivitaiFixtureModel {
  id: number;
  name: string;
  type: string;
  allowNoCredit?: boolean;
  allowCommercialUse?: string[];
  versions: Array<{ id: number; name: string; baseModel: string; trainedWords: string[]; fileName: string; bytes: Buffer; sha256?: string }>;
}

export interface RequestRecord {
  method: string;
  url: string;
  range?: string;
  authorization?: string;
}

export interface HubServer {
  url: string;
  /** Civitai's download redirects here (another origin, like its signed storage links). */
  storageUrl: string;
  requests: RequestRecord[];
  /** The next body (CDN or storage) stops after this many bytes, once. */
  cutAfter?: number;
  /** Civitai routes need this Bearer key when set. */
  civitaiKey?: string;
  close(): Promise<void>;
}

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const gitSha = (b: Buffer) => createHash('sha1').update(`blob ${b.length}\0`).update(b).digest('hex');
const isLfs = (file: string) => /\.(safetensors|bin|ckpt|pth|onnx)$/.test(file);

/**
 * `releases`: plain files by URL path (GitHub release assets and raw files: /owner/repo/releases/download/...),
 * served under /github/ so a test's fetch can map https://github.com/ onto this server.
 */
export async function startHubServer(
  repos: Record<string, HubRepo>,
  civitai: CivitaiFixtureModel[] = [],
  releases: Record<string, Buffer> = {},
): Promise<HubServer> {
  const blobs = new Map<string, Buffer>();
  for (const r of Object.values(repos)) for (const b of Object.values(r.files)) blobs.set(sha256(b), b);
  const storage = new Map<string, Buffer>();
  for (const m of civitai) for (const v of m.versions) storage.set(String(v.id), v.bytes);
  const state: { cutAfter?: number } = {};

  const sendBody = (req: IncomingMessage, res: ServerResponse, body: Buffer, headers: Record<string, string> = {}) => {
    const m = /^bytes=(\d+)-$/.exec(req.headers.range ?? '');
    const start = m ? Number(m[1]) : 0;
    if (start >= body.length && m) {
      res.writeHead(416, { 'content-range': `bytes */${body.length}` }).end();
      return;
    }
    const part = body.subarray(start);
    res.writeHead(m ? 206 : 200, {
      ...headers,
      'content-length': String(part.length),
      'accept-ranges': 'bytes',
      ...(m ? { 'content-range': `bytes ${start}-${body.length - 1}/${body.length}` } : {}),
    });
    if (req.method === 'HEAD') return res.end();
    const cut = state.cutAfter;
    if (cut !== undefined && cut < part.length) {
      state.cutAfter = undefined;
      // A graceful close after the bytes (a reset could discard them unread): the client sees a short body.
      res.write(part.subarray(0, cut), () => setTimeout(() => res.socket?.end(), 50));
      return;
    }
    res.end(part);
  };

  const json = (res: ServerResponse, status: number, body: unknown) => {
    res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
  };

  const versionJson = (m: CivitaiFixtureModel, v: CivitaiFixtureModel['versions'][number], base: string) => ({
    id: v.id,
    modelId: m.id,
    name: v.name,
    baseModel: v.baseModel,
    trainedWords: v.trainedWords,
    model: { name: m.name, type: m.type, nsfw: false, poi: false },
    files: [
      {
        id: v.id * 10,
        name: v.fileName,
        sizeKB: v.bytes.length / 1024,
        type: 'Model',
        primary: true,
        metadata: { format: 'SafeTensor', fp: 'fp16', size: 'pruned' },
        hashes: { AutoV2: (v.sha256 ?? sha256(v.bytes)).slice(0, 10).toUpperCase(), SHA256: (v.sha256 ?? sha256(v.bytes)).toUpperCase() },
        downloadUrl: `${base}/api/download/models/${v.id}`,
      },
    ],
    downloadUrl: `${base}/api/download/models/${v.id}`,
  });
  const modelJson = (m: CivitaiFixtureModel, base: string) => ({
    id: m.id,
    name: m.name,
    type: m.type,
    nsfw: false,
    allowNoCredit: m.allowNoCredit ?? true,
    allowCommercialUse: m.allowCommercialUse ?? ['Image', 'Rent', 'Sell'],
    modelVersions: m.versions.map((v) => versionJson(m, v, base)),
  });

  const server: Server = createServer((req, res) => {
    const base = `http://${req.headers.host}`;
    const url = new URL(req.url ?? '/', base);
    handle.requests.push({
      method: req.method ?? 'GET',
      url: url.pathname + url.search,
      ...(req.headers.range ? { range: req.headers.range } : {}),
      ...(req.headers.authorization ? { authorization: req.headers.authorization } : {}),
    });
    state.cutAfter ??= handle.cutAfter;
    handle.cutAfter = undefined;
    const path = decodeURIComponent(url.pathname);

    // Civitai
    if (path.startsWith('/api/v1/') || path.startsWith('/api/download/')) {
      if (handle.civitaiKey && req.headers.authorization !== `Bearer ${handle.civitaiKey}`) return json(res, 401, { error: 'Unauthorized' });
      let m = /^\/api\/v1\/models\/(\d+)$/.exec(path);
      if (m) {
        const model = civitai.find((x) => x.id === Number(m![1]));
        return model ? json(res, 200, modelJson(model, base)) : json(res, 404, { error: 'No model with id' });
      }
      m = /^\/api\/v1\/model-versions\/(\d+)$/.exec(path);
      if (m) {
        for (const model of civitai) {
          const v = model.versions.find((x) => x.id === Number(m![1]));
          if (v) return json(res, 200, versionJson(model, v, base));
        }
        return json(res, 404, { error: 'Version not found' });
      }
      if (path === '/api/v1/models') {
        const q = (url.searchParams.get('query') ?? '').toLowerCase();
        const types = url.searchParams.getAll('types');
        const items = civitai.filter((x) => x.name.toLowerCase().includes(q) && (!types.length || types.includes(x.type))).map((x) => modelJson(x, base));
        return json(res, 200, { items, metadata: { totalItems: items.length } });
      }
      m = /^\/api\/download\/models\/(\d+)$/.exec(path);
      if (m && storage.has(m[1]!)) {
        // Signed storage lives on another host (another origin here: the second port).
        res.writeHead(307, { location: `${handle.storageUrl}/storage/${m[1]}?sig=abc` }).end();
        return;
      }
      return json(res, 404, { error: 'not found' });
    }
    const stored = /^\/storage\/(\d+)$/.exec(path);
    if (stored && storage.has(stored[1]!)) {
      const model = civitai.find((x) => x.versions.some((v) => String(v.id) === stored[1]));
      const v = model?.versions.find((x) => String(x.id) === stored[1]);
      return sendBody(req, res, storage.get(stored[1]!)!, { 'content-disposition': `attachment; filename="${v?.fileName ?? 'file'}"` });
    }
    const release = path.startsWith('/github/') ? releases[path.slice('/github'.length)] : undefined;
    if (release) return sendBody(req, res, release);
    const cdn = /^\/cdn\/([0-9a-f]{64})$/.exec(path);
    if (cdn && blobs.has(cdn[1]!)) return sendBody(req, res, blobs.get(cdn[1]!)!);

    // Hugging Face
    for (const [repo, r] of Object.entries(repos)) {
      if (path === `/api/models/${repo}` || path.startsWith(`/api/models/${repo}/revision/`)) {
        return json(res, 200, { id: repo, sha: r.commit, siblings: Object.keys(r.files).map((rfilename) => ({ rfilename })) });
      }
      const prefix = `/${repo}/resolve/`;
      if (path.startsWith(prefix)) {
        const rest = path.slice(prefix.length);
        const file = rest.slice(rest.indexOf('/') + 1);
        const body = r.files[file];
        if (!body) return json(res, 404, { error: 'Entry not found' });
        const common = { 'x-repo-commit': r.commit };
        if (isLfs(file)) {
          const oid = r.badSha?.[file] ?? sha256(body);
          res.writeHead(302, {
            ...common,
            location: `${base}/cdn/${sha256(body)}`,
            'x-linked-etag': `"${oid}"`,
            'x-linked-size': String(body.length),
            etag: `"${gitSha(body)}"`,
          });
          return res.end();
        }
        return sendBody(req, res, body, { ...common, etag: `"${gitSha(body)}"` });
      }
    }
    json(res, 404, { error: 'not found' });
  });
  const storageServer: Server = createServer((req, res) => server.emit('request', req, res));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  await new Promise<void>((r) => storageServer.listen(0, '127.0.0.1', r));
  const closeOne = (srv: Server) =>
    new Promise<void>((r) => {
      srv.closeAllConnections();
      srv.close(() => r());
    });
  const handle: HubServer = {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    storageUrl: `http://127.0.0.1:${(storageServer.address() as AddressInfo).port}`,
    requests: [],
    close: async () => {
      await closeOne(server);
      await closeOne(storageServer);
    },
  };
  return handle;
}
