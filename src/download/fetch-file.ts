// The one file downloader: streams an HTTP(S) body to `<dest>.part` (or a given temp path), resumes a partial file
// with a Range request, follows a bounded number of redirects (dropping the Authorization header when the host
// changes, as signed CDN links must not see the hub token), bounds the size, checks the expected size and sha256
// when the source gives them, and reports progress (bytes, rate, ETA). The finished file is renamed into place,
// so `dest` is either absent or complete.
import { createHash, type Hash } from 'node:crypto';
import { createReadStream, createWriteStream, existsSync, mkdirSync, renameSync, rmSync, statSync } from 'node:fs';
import { dirname } from 'node:path';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';

export interface DownloadProgress {
  /** What is downloading, for display. */
  label: string;
  received: number;
  /** Total bytes when known. */
  total?: number;
  /** Average over this transfer (bytes/s). */
  bytesPerSecond: number;
  /** Seconds left at the current rate, when the total is known. */
  etaSeconds?: number;
}

export type DownloadErrorCode = 'http' | 'network' | 'redirects' | 'too-large' | 'size' | 'checksum';

export class DownloadError extends Error {
  constructor(
    readonly code: DownloadErrorCode,
    message: string,
    readonly status?: number,
  ) {
    super(message);
    this.name = 'DownloadError';
  }
}

export interface DownloadFileOptions {
  url: string;
  dest: string;
  /** Where the partial file lives (kept on failure so a retry resumes); default `<dest>.part`. */
  tempPath?: string;
  /** Sent on the first request and on redirects to the same host only. */
  headers?: Record<string, string>;
  expectedSize?: number;
  /** Hex sha256 (any case). */
  expectedSha256?: string;
  /** Refuse bodies larger than this; default 64 GiB. */
  maxBytes?: number;
  /** Default 10. */
  maxRedirects?: number;
  label?: string;
  onProgress?: (p: DownloadProgress) => void;
  signal?: AbortSignal;
  fetchImpl?: typeof fetch;
}

export interface DownloadedFile {
  path: string;
  size: number;
  sha256: string;
  /** Bytes that were already on disk from an earlier, interrupted transfer. */
  resumedFrom: number;
}

export const DEFAULT_MAX_DOWNLOAD_BYTES = 64 * 1024 ** 3;
const DEFAULT_MAX_REDIRECTS = 10;
const PROGRESS_INTERVAL_MS = 200;

/** The bytes of `file` fed into a new sha256. */
async function hashExisting(file: string): Promise<Hash> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(file)) hash.update(chunk as Buffer);
  return hash;
}

/** GET with manual, bounded redirects; the Authorization header stays with its origin. */
export async function fetchFollowing(
  url: string,
  init: { headers?: Record<string, string>; method?: string; signal?: AbortSignal },
  opts: { maxRedirects?: number; fetchImpl?: typeof fetch } = {},
): Promise<{ res: Response; url: string }> {
  const doFetch = opts.fetchImpl ?? fetch;
  const origin = new URL(url).origin;
  let current = url;
  for (let hop = 0; hop <= (opts.maxRedirects ?? DEFAULT_MAX_REDIRECTS); hop++) {
    const headers = { ...init.headers };
    if (new URL(current).origin !== origin) {
      for (const k of Object.keys(headers)) if (k.toLowerCase() === 'authorization') delete headers[k];
    }
    let res: Response;
    try {
      res = await doFetch(current, { method: init.method ?? 'GET', headers, redirect: 'manual', signal: init.signal });
    } catch (e) {
      const cause = (e as Error).cause ? ` (${String((e as Error).cause)})` : '';
      throw new DownloadError('network', `${init.method ?? 'GET'} ${current}: ${(e as Error).message}${cause}`);
    }
    const location = res.headers.get('location');
    if (res.status >= 300 && res.status < 400 && location) {
      await res.body?.cancel();
      current = new URL(location, current).toString();
      if (!/^https?:$/.test(new URL(current).protocol)) throw new DownloadError('redirects', `${url}: redirected to a non-HTTP address`);
      continue;
    }
    return { res, url: current };
  }
  throw new DownloadError('redirects', `${url}: more than ${opts.maxRedirects ?? DEFAULT_MAX_REDIRECTS} redirects`);
}

/** The total size a response announces for the whole file (Content-Range's total, else Content-Length + offset). */
function announcedTotal(res: Response, offset: number): number | undefined {
  const range = res.headers.get('content-range');
  const m = range && /\/(\d+)\s*$/.exec(range);
  if (m) return Number(m[1]);
  const len = res.headers.get('content-length');
  return len !== null && /^\d+$/.test(len) ? Number(len) + offset : undefined;
}

export async function downloadFile(opts: DownloadFileOptions): Promise<DownloadedFile> {
  const temp = opts.tempPath ?? `${opts.dest}.part`;
  const maxBytes = opts.maxBytes ?? DEFAULT_MAX_DOWNLOAD_BYTES;
  const label = opts.label ?? opts.url;
  mkdirSync(dirname(temp), { recursive: true });
  let offset = existsSync(temp) ? statSync(temp).size : 0;
  if (opts.expectedSize !== undefined && offset > opts.expectedSize) {
    rmSync(temp, { force: true });
    offset = 0;
  }
  const headers: Record<string, string> = { ...opts.headers };
  if (offset > 0) headers.range = `bytes=${offset}-`;
  const { res } = await fetchFollowing(opts.url, { headers, signal: opts.signal }, { maxRedirects: opts.maxRedirects, fetchImpl: opts.fetchImpl });

  if (res.status === 416 && offset > 0) {
    // The partial file may already be whole (a crash between the last byte and the rename).
    await res.body?.cancel();
    const total = announcedTotal(res, 0);
    if (total !== offset && opts.expectedSize !== offset) {
      rmSync(temp, { force: true });
      return downloadFile(opts);
    }
    return finish(opts, temp, await hashExisting(temp), offset, offset);
  }
  if (!res.ok || !res.body) {
    await res.body?.cancel();
    throw new DownloadError(
      'http',
      `GET ${opts.url}: HTTP ${res.status}${res.status === 401 || res.status === 403 ? ' (a token may be needed: HF_TOKEN / CIVIT_KEY)' : ''}`,
      res.status,
    );
  }
  // A server that ignores Range answers 200 with the whole body: start over.
  const resuming = offset > 0 && res.status === 206;
  if (!resuming) offset = 0;
  const total = announcedTotal(res, offset) ?? opts.expectedSize;
  if (total !== undefined && total > maxBytes) {
    await res.body.cancel();
    throw new DownloadError('too-large', `${label}: ${total} bytes is more than the limit of ${maxBytes}`);
  }
  if (total !== undefined && opts.expectedSize !== undefined && total !== opts.expectedSize) {
    await res.body.cancel();
    throw new DownloadError('size', `${label}: the server sends ${total} bytes but ${opts.expectedSize} were expected`);
  }
  const hash = resuming ? await hashExisting(temp) : createHash('sha256');
  let received = offset;
  const started = Date.now();
  let lastReport = 0;
  const report = (force: boolean) => {
    const now = Date.now();
    if (!opts.onProgress || (!force && now - lastReport < PROGRESS_INTERVAL_MS)) return;
    lastReport = now;
    const seconds = Math.max((now - started) / 1000, 1e-3);
    const bytesPerSecond = (received - offset) / seconds;
    const etaSeconds = total !== undefined && bytesPerSecond > 0 ? Math.max(0, total - received) / bytesPerSecond : undefined;
    opts.onProgress({ label, received, ...(total !== undefined ? { total } : {}), bytesPerSecond, ...(etaSeconds !== undefined ? { etaSeconds } : {}) });
  };
  const meter = new Transform({
    transform(chunk: Buffer, _enc, done) {
      received += chunk.length;
      if (received > maxBytes || (total !== undefined && received > total)) {
        done(new DownloadError('too-large', `${label}: the body is longer than ${total ?? maxBytes} bytes`));
        return;
      }
      hash.update(chunk);
      report(false);
      done(null, chunk);
    },
  });
  report(true);
  await pipeline(
    Readable.fromWeb(res.body as import('node:stream/web').ReadableStream),
    meter,
    createWriteStream(temp, { flags: resuming ? 'a' : 'w', flush: true }),
    { signal: opts.signal },
  ).catch((e: unknown) => {
    if (e instanceof DownloadError) {
      rmSync(temp, { force: true });
      throw e;
    }
    // An interrupted transfer keeps its partial file: the next call resumes it.
    throw new DownloadError('network', `${label}: the transfer broke off after ${received} bytes (${(e as Error).message}); run it again to resume`);
  });
  report(true);
  if (total !== undefined && received !== total) {
    throw new DownloadError('network', `${label}: the transfer ended after ${received} of ${total} bytes; run it again to resume`);
  }
  return finish(opts, temp, hash, received, offset);
}

function finish(opts: DownloadFileOptions, temp: string, hash: Hash, size: number, resumedFrom: number): DownloadedFile {
  const label = opts.label ?? opts.url;
  const sha256 = hash.digest('hex');
  if (opts.expectedSize !== undefined && size !== opts.expectedSize) {
    rmSync(temp, { force: true });
    throw new DownloadError('size', `${label}: got ${size} bytes, expected ${opts.expectedSize}; the partial file was removed`);
  }
  if (opts.expectedSha256 && sha256 !== opts.expectedSha256.toLowerCase()) {
    rmSync(temp, { force: true });
    throw new DownloadError('checksum', `${label}: sha256 ${sha256} does not match the published ${opts.expectedSha256.toLowerCase()}; the file was removed`);
  }
  mkdirSync(dirname(opts.dest), { recursive: true });
  renameSync(temp, opts.dest);
  return { path: opts.dest, size, sha256, resumedFrom };
}
