// `kiln cache ls|clean`: the graph cache (<cache-dir>/graphs) that kiln serve and kiln generate share. Each entry
// is one built network (`<network>-<key hash>/`: model.onnx, its weights, key.json naming the model files).
import { existsSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { graphCacheDir, loadConfig } from '../server/config.ts';
import { sizeOf } from '../server/models/size.ts';
import type { Flags } from './options.ts';
import { formatBytes } from './progress-bar.ts';

interface CacheEntry {
  dir: string;
  network: string;
  weights: string;
  bytes: number;
  lastUsed: Date;
}

function entries(root: string): CacheEntry[] {
  if (!existsSync(root)) return [];
  return readdirSync(root)
    .filter((d) => statSync(join(root, d)).isDirectory())
    .map((d) => {
      const dir = join(root, d);
      let weights = '?';
      try {
        weights = String((JSON.parse(readFileSync(join(dir, 'key.json'), 'utf8')) as { weightsIdentity?: unknown }).weightsIdentity ?? '?');
      } catch {
        // an entry being built, or one from another version: still listed and cleanable
      }
      const st = statSync(dir);
      return { dir, network: d.replace(/-[0-9a-f]{24}.*$/, ''), weights, bytes: sizeOf(dir), lastUsed: new Date(Math.max(st.atimeMs, st.mtimeMs)) };
    })
    .sort((a, b) => a.weights.localeCompare(b.weights) || a.network.localeCompare(b.network));
}

export async function runCache(action: 'ls' | 'clean', flags: Flags, opts: { olderThan?: string }): Promise<number> {
  const root = graphCacheDir(loadConfig({ flags }));
  const all = entries(root);
  if (action === 'ls') {
    process.stdout.write(`graph cache: ${root}\n`);
    for (const e of all)
      process.stdout.write(
        `  ${e.network.padEnd(22)} ${formatBytes(e.bytes).padStart(10)}  ${e.lastUsed.toISOString().slice(0, 10)}  ${e.weights.slice(0, 100)}\n`,
      );
    process.stdout.write(`${all.length} graph(s), ${formatBytes(all.reduce((s, e) => s + e.bytes, 0))}\n`);
    return 0;
  }
  let cutoff = Number.POSITIVE_INFINITY;
  if (opts.olderThan !== undefined) {
    const days = Number(opts.olderThan);
    if (!Number.isFinite(days) || days < 0) throw new Error(`--older-than must be a number of days, got '${opts.olderThan}'`);
    cutoff = Date.now() - days * 86_400_000;
  }
  const gone = all.filter((e) => e.lastUsed.getTime() <= cutoff);
  for (const e of gone) rmSync(e.dir, { recursive: true, force: true });
  process.stdout.write(`removed ${gone.length} graph(s), ${formatBytes(gone.reduce((s, e) => s + e.bytes, 0))} from ${root}\n`);
  return 0;
}
