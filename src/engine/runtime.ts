// onnxruntime sessions: execution-provider choice per device and float tensors in and out.
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { cpus } from 'node:os';
import type * as Ort from 'onnxruntime-node';
import type { Device } from './api.ts';
import {
  beginOptimized,
  crashedWhileLoading,
  discardOptimized,
  markLoading,
  optimizedEntry,
  OPTIMIZED_WEIGHTS,
  type OptimizedEnvironment,
} from './onnx/cache.ts';
import type { Tensor } from './tensor.ts';

export type Session = Ort.InferenceSession;

let ortModule: Promise<typeof Ort> | undefined;
/** onnxruntime, loaded on first use: importing the engine's door (types, errors) must not load the native runtime. */
function onnxruntime(): Promise<typeof Ort> {
  // A CommonJS package: its exports arrive as the default export.
  ortModule ??= import('onnxruntime-node').then((m) => ((m as unknown as { default?: typeof Ort }).default ?? m) as typeof Ort);
  return ortModule;
}

/** Execution providers tried in order for each device; CPU is always the last resort for unsupported ops. */
export function executionProviders(device: Device): string[] {
  switch (device) {
    case 'cpu':
      return ['cpu'];
    case 'cuda':
      return ['cuda', 'cpu'];
    case 'tensorrt':
      return ['tensorrt', 'cuda', 'cpu'];
    case 'webgpu':
      return ['webgpu', 'cpu'];
  }
}

/** fp16 weights and activations on GPUs (where they are fast and halve memory); fp32 on the CPU. */
export function precisionFor(device: Device): 'fp32' | 'fp16' {
  return device === 'cpu' ? 'fp32' : 'fp16';
}

export interface SessionOptions {
  device: Device;
  /** Threads for one op; 0 lets onnxruntime use every core. */
  intraOpThreads?: number;
  /**
   * Whether idle worker threads spin between ops (onnxruntime's default, true). false yields the cores, which
   * helps when other processes share them and makes CPU time equal the work done (benchmarks).
   */
  spinning?: boolean;
  /**
   * Keep onnxruntime's optimised model beside `modelPath` and load it on later starts, skipping the graph
   * optimisation that dominates session creation for large models (CPU only; costs a second copy of the
   * weights on disk). Default false.
   */
  cacheOptimized?: boolean;
}

/**
 * What happened with the optimised-model cache: 'loaded' from it, 'saved' to it by this session, or 'off'
 * (not asked for, not supported on this device, or the save failed).
 */
export type OptimizedModelUse = 'loaded' | 'saved' | 'off';

export interface OpenedSession {
  session: Session;
  optimized: OptimizedModelUse;
  /** Why a cached optimised model was refused and rebuilt (a corrupt or foreign entry), if one was. */
  rejected?: string;
}

/** Devices whose optimised models can be cached: compiled EPs (TensorRT) cannot be saved, GPUs are untested. */
function canCacheOptimized(device: Device): boolean {
  return device === 'cpu';
}

export async function createSession(modelPath: string, opts: SessionOptions): Promise<Session> {
  return (await openSession(modelPath, opts)).session;
}

/**
 * Creates a session for `modelPath`. With `cacheOptimized`, the first call saves onnxruntime's 'all'-level
 * result (weights in an external file, as UNets exceed protobuf's 2 GB) and later calls load it with graph
 * optimisation disabled; an entry onnxruntime cannot load is deleted and rebuilt from the plain model.
 */
export async function openSession(modelPath: string, opts: SessionOptions): Promise<OpenedSession> {
  if (!opts.cacheOptimized || !canCacheOptimized(opts.device)) {
    return { session: await create(modelPath, opts, 'all'), optimized: 'off' };
  }
  const env = optimizedEnvironment(await onnxruntime(), executionProviders(opts.device));
  const entry = optimizedEntry(modelPath, env);
  let rejected: string | undefined;
  if (entry.ready && crashedWhileLoading(entry)) {
    rejected = 'a previous start crashed while loading it';
    discardOptimized(entry);
  } else if (entry.ready) {
    const loaded = markLoading(entry);
    try {
      // Every optimisation already ran when the entry was saved; running them again is the cost we skip.
      return { session: await create(entry.modelPath, opts, 'disabled'), optimized: 'loaded' };
    } catch (e) {
      rejected = (e as Error).message;
      discardOptimized(entry);
    } finally {
      loaded();
    }
  }
  let pending: ReturnType<typeof beginOptimized>;
  try {
    pending = beginOptimized(entry, env, { supersedes: (other) => sameMachine(other, env) });
  } catch {
    return { session: await create(modelPath, opts, 'all'), optimized: 'off', rejected }; // read-only cache
  }
  let session: Session;
  try {
    session = await create(modelPath, opts, 'all', {
      optimizedModelFilePath: pending.modelPath,
      // onnxruntime warns that 'all'-level models are machine-specific; the entry's environment key handles that.
      logSeverityLevel: 3,
      extra: {
        session: {
          optimized_model_external_initializers_file_name: OPTIMIZED_WEIGHTS,
          optimized_model_external_initializers_min_size_in_bytes: '1024',
        },
      },
    });
  } catch {
    // Saving can fail on its own (disk full); a model that cannot load at all fails again here, with its own error.
    pending.abort();
    return { session: await create(modelPath, opts, 'all'), optimized: 'off', rejected };
  }
  return { session, optimized: pending.commit() ? 'saved' : 'off', rejected };
}

type Level = 'all' | 'disabled';

async function create(modelPath: string, opts: SessionOptions, level: Level, more: Ort.InferenceSession.SessionOptions = {}): Promise<Session> {
  const ort = await onnxruntime();
  const providers = executionProviders(opts.device);
  const spin = opts.spinning === false ? { intra_op: { allow_spinning: '0' }, inter_op: { allow_spinning: '0' } } : {};
  const moreSession = (more.extra?.session ?? {}) as Record<string, unknown>;
  try {
    return await ort.InferenceSession.create(modelPath, {
      executionProviders: providers,
      graphOptimizationLevel: level,
      intraOpNumThreads: opts.intraOpThreads ?? 0,
      enableCpuMemArena: true,
      // A memory pattern is one block per input shape, allocated on the second run of each shape: fresh pages that
      // cost a second slow run (a 512px VAE decode faults in ~1 GB again). Without it the CPU arena reuses freed
      // chunks, so only the first run pays, and peak RSS is lower. GPUs keep onnxruntime's default.
      enableMemPattern: opts.device !== 'cpu',
      ...more,
      extra: { ...more.extra, session: { ...spin, ...moreSession } },
    });
  } catch (e) {
    const msg = (e as Error).message;
    if (opts.device !== 'cpu' && /provider|cuda|tensorrt|webgpu/i.test(msg)) {
      throw new Error(
        `could not start the ${opts.device} execution provider (${msg}). Install onnxruntime-node's GPU binaries (see README "GPU") or use --device cpu.`,
      );
    }
    throw e;
  }
}

/** The machine and runtime an optimised model was made for (see OptimizedEnvironment). */
function optimizedEnvironment(ort: typeof Ort, providers: string[]): OptimizedEnvironment {
  return {
    // Bumped when what we save changes: format 1 entries held prepacked weights, which crashed onnxruntime
    // 1.30 on load (SIGSEGV), so they must never be picked up again.
    format: '2',
    onnxruntime: ort.env.versions.node ?? ort.env.versions.common,
    providers: providers.join(','),
    platform: process.platform,
    arch: process.arch,
    cpu: cpus()[0]?.model ?? 'unknown',
    cpuFeatures: cpuFeatures(),
  };
}

/** Entries of the same machine and providers but another runtime or cache format are never loaded again. */
function sameMachine(a: OptimizedEnvironment, b: OptimizedEnvironment): boolean {
  return (['platform', 'arch', 'cpu', 'cpuFeatures', 'providers'] as const).every((k) => a[k] === b[k]);
}

let features: string | undefined;
/**
 * A hash of the CPU's feature flags. VMs often report a generic model name ("Intel Xeon Processor") while
 * exposing different vector extensions, and those decide the NCHWc block size baked into the model.
 */
function cpuFeatures(): string {
  if (features === undefined) {
    let line = '';
    try {
      line = /^(?:flags|Features)\s*:(.*)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1]?.trim() ?? '';
    } catch {
      // Not Linux: the model name and arch are all there is.
    }
    features = line ? createHash('sha256').update(line.split(/\s+/).sort().join(' ')).digest('hex').slice(0, 16) : 'unknown';
  }
  return features;
}

export type Feed = Tensor | { int64: BigInt64Array; shape: number[] } | { int32: Int32Array; shape: number[] };

/** Runs a session on float32/int tensors and returns every float output as a Tensor. */
export async function runSession(session: Session, feeds: Record<string, Feed>): Promise<Record<string, Tensor>> {
  const ort = await onnxruntime();
  const inputs: Record<string, Ort.Tensor> = {};
  for (const [name, f] of Object.entries(feeds)) {
    if ('int64' in f) inputs[name] = new ort.Tensor('int64', f.int64, f.shape);
    else if ('int32' in f) inputs[name] = new ort.Tensor('int32', f.int32, f.shape);
    else inputs[name] = new ort.Tensor('float32', f.data, f.shape);
  }
  const results = await session.run(inputs);
  const out: Record<string, Tensor> = {};
  for (const [name, t] of Object.entries(results)) {
    out[name] = { shape: t.dims.map(Number), data: t.data as Float32Array };
  }
  return out;
}

/**
 * `session` with extra inputs added to every run (inputs the caller feeds itself win): `make` computes them once,
 * on the first run, from the session's declared inputs (the LoRA-branch factors of a view). Everything else is the session itself, so the wrapped
 * and the plain session share one native session.
 */
export function withExtraInputs(
  session: Session,
  make: (inputs: ReadonlyArray<{ name: string; shape: ReadonlyArray<number | string> }>) => Record<string, Tensor>,
): Session {
  let extra: Promise<Record<string, Ort.Tensor>> | undefined;
  const tensors = async () => {
    const ort = await onnxruntime();
    const inputs = session.inputMetadata.map((m) => ({ name: m.name, shape: m.isTensor ? m.shape : [] }));
    const out: Record<string, Ort.Tensor> = {};
    for (const [name, t] of Object.entries(make(inputs))) out[name] = new ort.Tensor('float32', t.data, t.shape);
    return out;
  };
  const run = async (feeds: Ort.InferenceSession.FeedsType, ...rest: unknown[]) => {
    extra ??= tensors();
    const all = { ...(await extra), ...feeds }; // the caller's own feeds win
    return (session.run as (...a: unknown[]) => Promise<Ort.InferenceSession.ReturnType>)(all, ...rest);
  };
  return new Proxy(session, {
    get(target, prop) {
      if (prop === 'run') return run;
      const v = Reflect.get(target, prop, target);
      return typeof v === 'function' ? v.bind(target) : v;
    },
  });
}
