// On-disk cache of built graphs. The key is the weights' identity plus every build option, so a
// second start with the same checkpoint and settings loads model.onnx directly and skips the build.
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, rmSync, renameSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { GraphBuilder, type Precision } from './graph.ts';

/** Bump when graph-building code changes in a way that alters built models. */
export const GRAPH_FORMAT_VERSION = 1;

export function defaultCacheDir(): string {
  return process.env.KILN_CACHE_DIR ?? join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'kiln', 'graphs');
}

export interface GraphKey {
  /** Which network: "unet", "vae-decoder", "text-encoder-0", ... */
  network: string;
  /** Identity of the weights (file paths, sizes, mtimes or content hash). */
  weightsIdentity: string;
  precision: Precision;
  /** Any other option that changes the graph (clip skip layer, attention kind, ...). */
  options?: Record<string, unknown>;
}

export function graphKeyHash(key: GraphKey): string {
  const canonical = JSON.stringify({ v: GRAPH_FORMAT_VERSION, ...key, options: sortKeys(key.options ?? {}) });
  return createHash('sha256').update(canonical).digest('hex').slice(0, 24);
}

function sortKeys(o: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(Object.keys(o).sort().map((k) => [k, o[k]]));
}

export interface CachedGraph {
  modelPath: string;
  /** True when this call built the graph, false when it came from the cache. */
  built: boolean;
}

/**
 * Returns the path of the cached model for `key`, building it with `build` when absent. Builds go to a
 * temporary folder that is renamed into place, so a crash mid-build never leaves a half-written entry.
 */
export function getOrBuildGraph(cacheDir: string, key: GraphKey, build: (b: GraphBuilder) => void): CachedGraph {
  const dir = join(cacheDir, `${key.network}-${graphKeyHash(key)}`);
  const modelPath = join(dir, 'model.onnx');
  if (existsSync(join(dir, 'complete'))) return { modelPath, built: false };
  const tmp = `${dir}.tmp-${process.pid}-${Date.now()}`;
  mkdirSync(tmp, { recursive: true });
  try {
    const b = new GraphBuilder(key.network, tmp, key.precision);
    build(b);
    b.finish();
    writeFileSync(join(tmp, 'key.json'), JSON.stringify(key, null, 1));
    writeFileSync(join(tmp, 'complete'), '');
    rmSync(dir, { recursive: true, force: true });
    renameSync(tmp, dir);
  } catch (e) {
    rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
  return { modelPath, built: true };
}
