// Test helpers for the UNet: fixture configs, weights and reference tensors (tiny diffusers folders).
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Tensor } from '../../../src/engine/tensor.ts';
import { loadModel, type UnetConfig, type WeightSource } from '../../../src/engine/weights/index.ts';

export const FIXTURES = join(import.meta.dirname, '..', '..', 'fixtures');

interface Entry {
  dtype: string;
  shape: number[];
  data_offsets: [number, number];
}

/** Whole-file reader for the small reference tensors in refs/ (F32 and I64 only). */
export function readSafetensors(file: string): Map<string, Tensor & { dtype: string }> {
  const buf = readFileSync(file);
  const headerLen = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + headerLen).toString('utf8')) as Record<string, Entry>;
  const base = 8 + headerLen;
  const out = new Map<string, Tensor & { dtype: string }>();
  for (const [name, e] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    const bytes = buf.subarray(base + e.data_offsets[0], base + e.data_offsets[1]);
    let data: Float32Array;
    if (e.dtype === 'F32') data = new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
    else if (e.dtype === 'I64') data = Float32Array.from(new BigInt64Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength)), Number);
    else throw new Error(`${file}: ${name} has dtype ${e.dtype}, the test reader handles F32/I64`);
    out.set(name, { shape: e.shape, data, dtype: e.dtype });
  }
  return out;
}

/** A fixture model's UNet weights and config through the real loader (diffusers folder or single file). */
export async function loadUnetFixture(
  model: 'tiny-sd1' | 'tiny-sd2' | 'tiny-sdxl' | 'tiny-sd1.safetensors' | 'tiny-sdxl.safetensors',
): Promise<{ weights: WeightSource; config: UnetConfig }> {
  const tokenizerDir = model.endsWith('.safetensors') ? join(FIXTURES, model.replace('.safetensors', '')) : undefined;
  const m = await loadModel({ path: join(FIXTURES, model), tokenizerDir }, {});
  return { weights: m.unet, config: m.unetConfig! };
}

/** Asserts |a-b| <= atol + rtol*|b| everywhere; returns the worst excess for the message. */
export function maxViolation(actual: Float32Array, expected: Float32Array, atol: number, rtol: number): { worst: number; index: number; maxAbs: number } {
  let worst = -Infinity,
    index = -1,
    maxAbs = 0;
  for (let i = 0; i < expected.length; i++) {
    const d = Math.abs(actual[i]! - expected[i]!);
    maxAbs = Math.max(maxAbs, d);
    const excess = d - (atol + rtol * Math.abs(expected[i]!));
    if (excess > worst || Number.isNaN(d)) {
      worst = Number.isNaN(d) ? Infinity : excess;
      index = i;
    }
  }
  return { worst, index, maxAbs };
}
