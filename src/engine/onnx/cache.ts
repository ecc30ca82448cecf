// On-disk cache of built graphs. The key is the weights' identity plus every build option, so a
// second start with the same checkpoint and settings loads model.onnx directly and skips the build.
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, renameSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
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
  return Object.fromEntries(
    Object.keys(o)
      .sort()
      .map((k) => [k, o[k]]),
  );
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
export function getOrBuildGraph(
  cacheDir: string,
  key: GraphKey,
  build: (b: GraphBuilder) => void,
  /** A GraphBuilder subclass (int8 and calibration graphs, src/engine/precision/); its settings must be in `key`. */
  makeBuilder?: (network: string, dir: string) => GraphBuilder,
): CachedGraph {
  const dir = join(cacheDir, `${key.network}-${graphKeyHash(key)}`);
  const modelPath = join(dir, 'model.onnx');
  if (existsSync(join(dir, 'complete'))) return { modelPath, built: false };
  const tmp = `${dir}.tmp-${process.pid}-${Date.now()}`;
  mkdirSync(tmp, { recursive: true });
  try {
    const b = makeBuilder ? makeBuilder(key.network, tmp) : new GraphBuilder(key.network, tmp, key.precision);
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

// ---- onnxruntime's optimised model, cached beside the graph -------------------------------------------

/**
 * Everything an optimised model depends on besides the graph: onnxruntime's 'all' level bakes in layouts and
 * fusions chosen for this CPU (NCHWc blocking for its vector width) and execution providers, so an entry made
 * on one machine or runtime version must never be loaded on another.
 */
export type OptimizedEnvironment = Record<string, string>;

export interface OptimizedEntry {
  /** Folder of the finished entry: model.onnx + weights.bin + complete. */
  dir: string;
  modelPath: string;
  /** True when a finished entry is on disk. */
  ready: boolean;
}

/** The optimised-model entry for the graph at `graphModelPath` in `env`, one folder per environment. */
export function optimizedEntry(graphModelPath: string, env: OptimizedEnvironment): OptimizedEntry {
  const hash = createHash('sha256')
    .update(JSON.stringify(sortKeys(env)))
    .digest('hex')
    .slice(0, 16);
  const dir = join(dirname(graphModelPath), `optimized-${hash}`);
  return { dir, modelPath: join(dir, OPTIMIZED_MODEL), ready: existsSync(join(dir, 'complete')) };
}

/** File names inside an entry; weights.bin is named relative to model.onnx, as onnxruntime resolves it. */
export const OPTIMIZED_MODEL = 'model.onnx';
export const OPTIMIZED_WEIGHTS = 'weights.bin';

export interface PendingOptimized {
  /** Where onnxruntime should write the optimised model (a temporary folder). */
  modelPath: string;
  /** Moves the written model into place; false when nothing usable was written. */
  commit(): boolean;
  /** Removes whatever was written. */
  abort(): void;
}

/**
 * Starts writing an entry into a temporary folder that commit() renames into place, so a crash while
 * onnxruntime writes gigabytes never leaves a half-written entry that a later start would load.
 */
export function beginOptimized(
  entry: OptimizedEntry,
  env: OptimizedEnvironment,
  opts: { supersedes?: (other: OptimizedEnvironment) => boolean } = {},
): PendingOptimized {
  const tmp = `${entry.dir}.tmp-${process.pid}-${Date.now()}`;
  mkdirSync(tmp, { recursive: true });
  const abort = () => rmSync(tmp, { recursive: true, force: true });
  return {
    modelPath: join(tmp, OPTIMIZED_MODEL),
    abort,
    commit: () => {
      try {
        if (!existsSync(join(tmp, OPTIMIZED_MODEL))) {
          abort();
          return false;
        }
        writeFileSync(join(tmp, 'environment.json'), JSON.stringify(sortKeys(env), null, 1));
        writeFileSync(join(tmp, 'complete'), '');
        if (existsSync(join(entry.dir, 'complete'))) {
          // Another process finished the same entry meanwhile; keep theirs, which may be in use.
          abort();
          return true;
        }
        rmSync(entry.dir, { recursive: true, force: true });
        renameSync(tmp, entry.dir);
        if (opts.supersedes) pruneSuperseded(entry, opts.supersedes);
        return true;
      } catch {
        // Another process committed the same entry first, or the disk is full: the cache is an optimisation only.
        abort();
        return existsSync(join(entry.dir, 'complete'));
      }
    },
  };
}

/**
 * Deletes the sibling entries (other environments of the same graph) that `supersedes` says the new entry
 * replaces, e.g. ones saved by an older onnxruntime on this machine, which nothing will load again. An entry
 * someone is loading right now is left alone.
 */
function pruneSuperseded(entry: OptimizedEntry, supersedes: (other: OptimizedEnvironment) => boolean): void {
  const parent = dirname(entry.dir);
  for (const name of readdirSync(parent)) {
    const dir = join(parent, name);
    if (!/^optimized-[0-9a-f]+$/.test(name) || dir === entry.dir) continue;
    try {
      const other = JSON.parse(readFileSync(join(dir, 'environment.json'), 'utf8')) as OptimizedEnvironment;
      if (!supersedes(other) || readdirSync(dir).some((f) => f.startsWith('loading-'))) continue;
      rmSync(dir, { recursive: true, force: true });
    } catch {
      // Unreadable or vanished: leave it; loading it fails cleanly and rewrites it.
    }
  }
}

/**
 * Marks `entry` as being loaded by this process until the returned function runs. onnxruntime can crash the
 * whole process on a bad model rather than throw, so a marker left by a process that no longer exists means
 * the entry killed it: see crashedWhileLoading.
 */
export function markLoading(entry: OptimizedEntry): () => void {
  const marker = join(entry.dir, `loading-${process.pid}`);
  try {
    writeFileSync(marker, '');
  } catch {
    return () => {}; // read-only cache: nothing to protect later starts from
  }
  return () => rmSync(marker, { force: true });
}

/** True when a process died while loading `entry` (its loading marker outlived it). */
export function crashedWhileLoading(entry: OptimizedEntry): boolean {
  let names: string[];
  try {
    names = readdirSync(entry.dir);
  } catch {
    return false;
  }
  return names.some((name) => {
    const pid = /^loading-(\d+)$/.exec(name)?.[1];
    return pid !== undefined && Number(pid) !== process.pid && !processAlive(Number(pid));
  });
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM'; // exists, owned by someone else
  }
}

/** Deletes an entry that onnxruntime refused to load, so the next start rewrites it. */
export function discardOptimized(entry: OptimizedEntry): void {
  rmSync(entry.dir, { recursive: true, force: true });
}
