// Small file builders for the weights tests.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after } from 'node:test';
import type { TensorToWrite } from '../../../src/engine/weights/safetensors.ts';

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
