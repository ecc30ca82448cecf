// Shared by the pipeline reference tests: a reference file (JSON call + tensors) and an atol/rtol comparison
// that names the first index beyond tolerance.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import type { Tensor } from '../../../src/engine/tensor.ts';
import { SafetensorsFile } from '../../../src/engine/weights/safetensors.ts';

/** test/fixtures/refs/<folder>/<name>.{json,safetensors}. */
export function pipelineRef(folder: string, name: string): { json: Record<string, any>; t: (k: string) => Tensor } {
  const base = `test/fixtures/refs/${folder}/${name}`;
  const json = JSON.parse(readFileSync(`${base}.json`, 'utf8'));
  const file = SafetensorsFile.open(`${base}.safetensors`);
  return { json, t: (k) => file.tensor(k) };
}

/** How far the worst element is beyond |a - e| <= atol + rtol * |e| (<= 0: all within), and where. */
export function maxExcess(actual: Float32Array, expected: Float32Array, atol: number, rtol: number): { worst: number; at: number } {
  assert.equal(actual.length, expected.length, 'length');
  let worst = 0;
  let at = -1;
  for (let i = 0; i < actual.length; i++) {
    const excess = Math.abs(actual[i]! - expected[i]!) - (atol + rtol * Math.abs(expected[i]!));
    if (excess > worst) {
      worst = excess;
      at = i;
    }
  }
  return { worst, at };
}

export function assertClose(actual: Float32Array, expected: Float32Array, atol: number, rtol: number, what: string): void {
  const { worst, at } = maxExcess(actual, expected, atol, rtol);
  assert.ok(worst <= 0, `${what}: index ${at} got ${actual[at]} expected ${expected[at]} (beyond tolerance by ${worst})`);
}
