// Test helper: reads the reference .safetensors/.json pairs under test/fixtures/refs (F32/I64 only).
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

export const REFS_DIR = join(import.meta.dirname, '..', '..', 'fixtures', 'refs');

export interface RefTensor {
  shape: number[];
  data: Float64Array;
  f32?: Float32Array;
}

export function readSafetensors(path: string): Map<string, RefTensor> {
  const buf = readFileSync(path);
  const headerLen = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + headerLen).toString('utf8')) as Record<
    string,
    { dtype: string; shape: number[]; data_offsets: [number, number] }
  >;
  const base = 8 + headerLen;
  const out = new Map<string, RefTensor>();
  for (const [name, info] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    const [a, b] = info.data_offsets;
    const bytes = buf.subarray(base + a, base + b);
    const copy = new Uint8Array(bytes); // aligned copy
    if (info.dtype === 'F32') {
      const f32 = new Float32Array(copy.buffer, 0, copy.length / 4);
      out.set(name, { shape: info.shape, data: Float64Array.from(f32), f32 });
    } else if (info.dtype === 'I64') {
      const i64 = new BigInt64Array(copy.buffer, 0, copy.length / 8);
      out.set(name, { shape: info.shape, data: Float64Array.from(i64, (v) => Number(v)) });
    } else if (info.dtype === 'F64') {
      out.set(name, { shape: info.shape, data: new Float64Array(copy.buffer, 0, copy.length / 8) });
    } else {
      throw new Error(`${path}: ${name} has unsupported dtype ${info.dtype}`);
    }
  }
  return out;
}

export function readRef(relBase: string): { tensors: Map<string, RefTensor>; json: any } {
  return {
    tensors: readSafetensors(join(REFS_DIR, `${relBase}.safetensors`)),
    json: JSON.parse(readFileSync(join(REFS_DIR, `${relBase}.json`), 'utf8')),
  };
}
