// Test helpers for the text encoder and VAE: the tiny models through the real weights loader (diffusers
// folders and single-file checkpoints alike), reference tensors, and a tolerance check.
import { join } from 'node:path';
import { loadModel, type LoadedModel } from '../../../src/engine/weights/model.ts';
import { SafetensorsFile } from '../../../src/engine/weights/safetensors.ts';
import type { Tensor } from '../../../src/engine/tensor.ts';
import type { WeightSource } from '../../../src/engine/weights/types.ts';

export const FIXTURES = join(import.meta.dirname, '..', '..', 'fixtures');

/** The fixture models: diffusers folders, and the single-file copies of the same weights. */
export type FixtureModel = 'tiny-sd1' | 'tiny-sd2' | 'tiny-sdxl' | 'tiny-sd1.safetensors' | 'tiny-sdxl.safetensors';

const loaded = new Map<FixtureModel, Promise<LoadedModel>>();

export function fixtureModel(name: FixtureModel): Promise<LoadedModel> {
  let m = loaded.get(name);
  if (!m) {
    const path = join(FIXTURES, name);
    // Single files carry no configs or tokenizers; their diffusers twin provides both.
    const tokenizerDir = name.endsWith('.safetensors') ? join(FIXTURES, name.replace('.safetensors', '')) : undefined;
    m = loadModel({ path, tokenizerDir }, { hashCacheFile: null });
    loaded.set(name, m);
  }
  return m;
}

export interface Ref {
  float(name: string): Tensor;
  int64(name: string): { int64: BigInt64Array; shape: number[] };
}

export function ref(path: string): Ref {
  const file = SafetensorsFile.open(join(FIXTURES, 'refs', `${path}.safetensors`));
  return {
    float: (name) => file.tensor(name),
    int64: (name) => {
      const e = file.entry(name);
      if (e.dtype !== 'I64') throw new Error(`${path}: ${name} is ${e.dtype}, expected I64`);
      return { int64: file.readInt(name) as BigInt64Array, shape: [...e.shape] };
    },
  };
}

/** Asserts |a-b| <= atol + rtol*|b| everywhere (NaN fails); the message names the worst element. */
export function assertClose(actual: Tensor, expected: Tensor, atol: number, rtol: number, what: string): number {
  if (actual.shape.join(',') !== expected.shape.join(',')) {
    throw new Error(`${what}: shape [${actual.shape}] vs expected [${expected.shape}]`);
  }
  let worst = -1,
    worstExcess = -Infinity,
    maxAbs = 0;
  for (let i = 0; i < expected.data.length; i++) {
    const a = actual.data[i]!,
      e = expected.data[i]!;
    const d = Math.abs(a - e);
    maxAbs = Math.max(maxAbs, d);
    const excess = d - (atol + rtol * Math.abs(e));
    if (!(excess <= 0) && (worst < 0 || !(excess <= worstExcess))) {
      worst = i;
      worstExcess = excess;
    }
  }
  if (worst >= 0) {
    throw new Error(
      `${what}: element ${worst} is ${actual.data[worst]}, expected ${expected.data[worst]} (atol ${atol}, rtol ${rtol}); max abs diff ${maxAbs}`,
    );
  }
  return maxAbs;
}

/**
 * A missing CPU fp16 kernel is a runtime limitation, not a graph error: report it and skip that variant.
 * Returns false for any other error (type errors in the graph must still fail the test).
 */
export function skipMissingFp16Kernel(t: { diagnostic: (msg: string) => void }, variant: string, e: unknown): boolean {
  const missing = /Could not find an implementation for (\w+)/.exec((e as Error).message);
  if (!missing) return false;
  t.diagnostic(`${variant}: onnxruntime CPU has no float16 kernel for ${missing[1]}`);
  return true;
}

/** Passes a weight source through, noting every tensor the builder reads, with its shape. */
export function recordingWeights(source: WeightSource): { source: WeightSource; read: Map<string, number[]> } {
  const read = new Map<string, number[]>();
  return {
    read,
    source: {
      names: () => source.names(),
      has: (n) => source.has(n),
      shape: (n) => source.shape(n),
      dtype: (n) => source.dtype(n),
      get: (n) => {
        const t = source.get(n);
        read.set(n, [...t.shape]);
        return t;
      },
    },
  };
}

/** Weights of the right shapes and no values, for full-size configs: the graph is walked, never written. */
export function shapesOnly(table: Map<string, number[]>): WeightSource {
  const empty = new Float32Array(0);
  return {
    names: () => [...table.keys()],
    has: (n) => table.has(n),
    shape: (n) => table.get(n)!,
    dtype: () => 'F32',
    get: (n): Tensor => {
      const shape = table.get(n);
      if (!shape) throw new Error(`the builder read ${n}, which the plan does not have`);
      return { shape, data: empty };
    },
  };
}
