// Small file builders for the weights tests.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after } from 'node:test';
import { type SafetensorsFile, writeSafetensors as write } from '../../../src/engine/weights/safetensors.ts';
import { f32ToBf16Bits, f32ToF16Bits } from '../../../src/engine/weights/float.ts';
import type { TensorToWrite } from '../../../src/engine/weights/safetensors.ts';
import type { WeightSource } from '../../../src/engine/weights/types.ts';
import assert from 'node:assert/strict';

export const FIXTURES = join(import.meta.dirname, '..', '..', 'fixtures');

/** A fresh temp folder removed after the test file finishes. */
export function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'kiln-weights-'));
  after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

export function f32(shape: number[], values: ArrayLike<number>): TensorToWrite {
  const data = Float32Array.from(values);
  return { dtype: 'F32', shape, bytes: new Uint8Array(data.buffer) };
}

export function bytesOf(view: ArrayBufferView): Uint8Array {
  return new Uint8Array(view.buffer, view.byteOffset, view.byteLength);
}

/** Builds a raw safetensors file from a header object and a data section, for malformed-file tests. */
export function rawSafetensors(header: unknown, data: Uint8Array = new Uint8Array(0), lengthOverride?: bigint): Uint8Array {
  const json = new TextEncoder().encode(typeof header === 'string' ? header : JSON.stringify(header));
  const out = new Uint8Array(8 + json.length + data.length);
  new DataView(out.buffer).setBigUint64(0, lengthOverride ?? BigInt(json.length), true);
  out.set(json, 8);
  out.set(data, 8 + json.length);
  return out;
}

/**
 * Copies tensors of `files` into a new .safetensors file. `rename` returns the new name (or undefined to drop);
 * float tensors can be narrowed to F16/BF16.
 */
export function copyTensors(
  out: string,
  sources: { file: SafetensorsFile; rename: (key: string) => string | undefined }[],
  floatDtype: 'F32' | 'F16' | 'BF16' = 'F32',
): void {
  const tensors: Record<string, TensorToWrite> = {};
  for (const { file, rename } of sources) {
    for (const key of file.names()) {
      const name = rename(key);
      if (name === undefined) continue;
      const e = file.entry(key);
      if (e.dtype !== 'F32' || floatDtype === 'F32') {
        tensors[name] = { dtype: e.dtype, shape: e.shape, bytes: file.readBytes(key) };
        continue;
      }
      const narrow = floatDtype === 'F16' ? f32ToF16Bits : f32ToBf16Bits;
      tensors[name] = { dtype: floatDtype, shape: e.shape, bytes: bytesOf(Uint16Array.from(file.readFloat32(key), narrow)) };
    }
  }
  write(out, tensors);
}

/** Same names, shapes, dtypes and bit-identical float32 values. */
export function assertSameWeights(actual: WeightSource, expected: WeightSource, label: string): void {
  assert.deepEqual(actual.names().sort(), expected.names().sort(), `${label}: name sets differ`);
  for (const name of expected.names()) {
    assert.deepEqual(actual.shape(name), expected.shape(name), `${label}: shape of ${name}`);
    assert.equal(actual.dtype(name), expected.dtype(name), `${label}: dtype of ${name}`);
    const a = actual.get(name);
    const e = expected.get(name);
    assert.deepEqual(a.shape, e.shape, `${label}: tensor shape of ${name}`);
    const ab = new Uint32Array(a.data.buffer, a.data.byteOffset, a.data.length);
    const eb = new Uint32Array(e.data.buffer, e.data.byteOffset, e.data.length);
    assert.ok(ab.length === eb.length && ab.every((v, i) => v === eb[i]), `${label}: values of ${name} differ`);
  }
}
