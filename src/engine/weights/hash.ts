// Model identity and A1111's short model hash. The full-file sha256 of a multi-GB checkpoint takes many
// seconds, so it is streamed, computed only when asked for, and cached (in memory and in a small JSON file
// keyed by path + size + mtime, like A1111's cache.json).
import { createHash } from 'node:crypto';
import { createReadStream, mkdirSync, readFileSync, realpathSync, statSync, writeFileSync, renameSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';

interface CacheEntry {
  size: number;
  mtimeMs: number;
  sha256: string;
}

const memory = new Map<string, Promise<string>>();

export function hashCacheFile(): string {
  const base = process.env.KILN_CACHE_DIR ?? join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'kiln');
  return join(base, 'model-hashes.json');
}

function readDiskCache(file: string): Record<string, CacheEntry> {
  try {
    return JSON.parse(readFileSync(file, 'utf8')) as Record<string, CacheEntry>;
  } catch {
    return {};
  }
}

function writeDiskCache(file: string, key: string, entry: CacheEntry): void {
  try {
    const all = readDiskCache(file);
    all[key] = entry;
    mkdirSync(dirname(file), { recursive: true });
    writeFileSync(`${file}.tmp`, JSON.stringify(all, null, 1));
    renameSync(`${file}.tmp`, file);
  } catch {
    // The cache is an optimisation; an unwritable home must not break generation.
  }
}

function streamSha256(file: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const h = createHash('sha256');
    createReadStream(file, { highWaterMark: 4 << 20 })
      .on('data', (chunk) => h.update(chunk))
      .on('error', reject)
      .on('end', () => resolve(h.digest('hex')));
  });
}

/** Full sha256 of a file (hex), cached by real path + size + mtime. */
export function fileSha256(file: string, cacheFile: string | null = hashCacheFile()): Promise<string> {
  const real = realpathSync(file);
  const st = statSync(real);
  const key = `${real}|${st.size}|${st.mtimeMs}`;
  let p = memory.get(key);
  if (!p) {
    const disk = cacheFile ? readDiskCache(cacheFile)[real] : undefined;
    if (disk && disk.size === st.size && disk.mtimeMs === st.mtimeMs) p = Promise.resolve(disk.sha256);
    else {
      p = streamSha256(real).then((sha256) => {
        if (cacheFile) writeDiskCache(cacheFile, real, { size: st.size, mtimeMs: st.mtimeMs, sha256 });
        return sha256;
      });
      p.catch(() => memory.delete(key));
    }
    memory.set(key, p);
  }
  return p;
}

/** A1111's "Model hash": the first 10 hex digits of the file's sha256. */
export async function a1111ShortHash(file: string, cacheFile?: string | null): Promise<string> {
  return (await fileSha256(file, cacheFile)).slice(0, 10);
}

/** Cheap identity of a set of files (real path, size, mtime) plus any extra text (configs): no data is read. */
export function filesIdentity(files: string[], extra = ''): string {
  const h = createHash('sha256');
  for (const f of [...files].sort()) {
    const real = realpathSync(f);
    const st = statSync(real);
    h.update(`${real}\0${st.size}\0${st.mtimeMs}\n`);
  }
  h.update(extra);
  return h.digest('hex').slice(0, 32);
}
