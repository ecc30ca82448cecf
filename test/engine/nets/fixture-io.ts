// Test-only helpers: read the tiny diffusers folders and reference files. A minimal safetensors reader (F32/I64
// only) so these tests don't depend on the weights loader's internals.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Tensor } from '../../../src/engine/tensor.ts';
import type { WeightDType, WeightSource } from '../../../src/engine/weights/types.ts';

export const FIXTURES = join(import.meta.dirname, '..', '..', 'fixtures');

interface Entry {
  dtype: string;
  shape: number[];
  data_offsets: [number, number];
}

export class SafetensorsBlob {
  private readonly header: Record<string, Entry>;
  private readonly body: Buffer;
  constructor(readonly file: string) {
    const buf = readFileSync(file);
    const n = Number(buf.readBigUInt64LE(0));
    const header = JSON.parse(buf.subarray(8, 8 + n).toString('utf8')) as Record<string, Entry>;
    delete header.__metadata__;
    this.header = header;
    this.body = buf.subarray(8 + n);
  }
  names(): string[] {
    return Object.keys(this.header);
  }
  entry(name: string): Entry {
    const e = this.header[name];
    if (!e) throw new Error(`${this.file} has no tensor "${name}"`);
    return e;
  }
  private bytes(name: string): Buffer {
    const [a, z] = this.entry(name).data_offsets;
    return Buffer.from(this.body.subarray(a, z)); // copy: aligned, owned
  }
  float(name: string): Tensor {
    const e = this.entry(name);
    if (e.dtype !== 'F32') throw new Error(`${name} is ${e.dtype}, expected F32`);
    const b = this.bytes(name);
    return { shape: e.shape, data: new Float32Array(b.buffer, b.byteOffset, b.byteLength / 4) };
  }
  int64(name: string): { int64: BigInt64Array; shape: number[] } {
    const e = this.entry(name);
    if (e.dtype !== 'I64') throw new Error(`${name} is ${e.dtype}, expected I64`);
    const b = this.bytes(name);
    return { shape: e.shape, int64: new BigInt64Array(b.buffer, b.byteOffset, b.byteLength / 8) };
  }
}

export function blobWeights(blob: SafetensorsBlob): WeightSource {
  return {
    names: () => blob.names(),
    has: (n) => blob.names().includes(n),
    shape: (n) => blob.entry(n).shape,
    dtype: (n) => blob.entry(n).dtype as WeightDType,
    get: (n) => blob.float(n),
  };
}

/** A component of a tiny diffusers folder: its weights and parsed config.json. */
export function diffusersComponent(model: string, component: string, weightsFile: string): { weights: WeightSource; config: any } {
  const dir = join(FIXTURES, model, component);
  return {
    weights: blobWeights(new SafetensorsBlob(join(dir, weightsFile))),
    config: JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')),
  };
}

export function ref(path: string): SafetensorsBlob {
  return new SafetensorsBlob(join(FIXTURES, 'refs', `${path}.safetensors`));
}

/** Asserts |a-b| <= atol + rtol*|b| everywhere; the message names the worst element. */
export function assertClose(actual: Tensor, expected: Tensor, atol: number, rtol: number, what: string): number {
  if (actual.shape.join(',') !== expected.shape.join(',')) {
    throw new Error(`${what}: shape [${actual.shape}] vs expected [${expected.shape}]`);
  }
  let worst = -1, worstExcess = -Infinity, maxAbs = 0;
  for (let i = 0; i < expected.data.length; i++) {
    const a = actual.data[i]!, e = expected.data[i]!;
    const d = Math.abs(a - e);
    maxAbs = Math.max(maxAbs, d);
    const excess = d - (atol + rtol * Math.abs(e));
    if (!(excess <= 0) && (worst < 0 || !(excess <= worstExcess))) {
      worst = i;
      worstExcess = excess;
    }
  }
  if (worst >= 0) {
    throw new Error(`${what}: element ${worst} is ${actual.data[worst]}, expected ${expected.data[worst]} (atol ${atol}, rtol ${rtol}); max abs diff ${maxAbs}`);
  }
  return maxAbs;
}
