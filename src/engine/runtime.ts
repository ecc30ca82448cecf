// onnxruntime sessions: execution-provider choice per device and float tensors in and out.
import ort from 'onnxruntime-node';
import type { Device } from './api.ts';
import type { Tensor } from './tensor.ts';

export type Session = ort.InferenceSession;

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
}

export async function createSession(modelPath: string, opts: SessionOptions): Promise<Session> {
  const providers = executionProviders(opts.device);
  try {
    return await ort.InferenceSession.create(modelPath, {
      executionProviders: providers,
      graphOptimizationLevel: 'all',
      intraOpNumThreads: opts.intraOpThreads ?? 0,
      enableCpuMemArena: true,
      enableMemPattern: true,
      ...(opts.spinning === false ? { extra: { session: { intra_op: { allow_spinning: '0' }, inter_op: { allow_spinning: '0' } } } } : {}),
    });
  } catch (e) {
    const msg = (e as Error).message;
    if (opts.device !== 'cpu' && /provider|cuda|tensorrt|webgpu/i.test(msg)) {
      throw new Error(
        `could not start the ${opts.device} execution provider (${msg}). ` +
          `Install onnxruntime-node's GPU binaries (see README "GPU") or use --device cpu.`,
      );
    }
    throw e;
  }
}

export type Feed = Tensor | { int64: BigInt64Array; shape: number[] } | { int32: Int32Array; shape: number[] };

/** Runs a session on float32/int tensors and returns every float output as a Tensor. */
export async function runSession(session: Session, feeds: Record<string, Feed>): Promise<Record<string, Tensor>> {
  const inputs: Record<string, ort.Tensor> = {};
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
