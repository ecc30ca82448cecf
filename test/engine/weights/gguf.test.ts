import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ModelFileError } from '../../../src/engine/api.ts';
import { dequantizeNBits, type NBitsWeight } from '../../../src/engine/onnx/matmul-nbits.ts';
import { F8_E4M3_VALUES, F8_E5M2_VALUES } from '../../../src/engine/weights/fp8.ts';
import { f32ToF16Bits } from '../../../src/engine/weights/float.ts';
import { GgufFile } from '../../../src/engine/weights/gguf.ts';
import { writeSafetensors } from '../../../src/engine/weights/safetensors.ts';
import { openTensorFile } from '../../../src/engine/weights/tensor-file.ts';
import { pseudoRandom } from '../onnx/pseudo-random.ts';
import { packQ4kScales, writeGguf } from './gguf-writer.ts';

const dir = mkdtempSync(join(tmpdir(), 'kiln-gguf-'));
test.after(() => rmSync(dir, { recursive: true, force: true }));

const half = (v: number) => [f32ToF16Bits(v) & 0xff, f32ToF16Bits(v) >> 8];

// Hand-built blocks with values worked out from the ggml block definitions, not from the reader's code.
function q8Block(): { bytes: Uint8Array; values: number[] } {
  const q = Array.from({ length: 32 }, (_, j) => ((j * 9) % 255) - 127); // int8 codes
  return { bytes: Uint8Array.from([...half(0.5), ...q.map((v) => v & 0xff)]), values: q.map((v) => v * 0.5) };
}
function q4Block(): { bytes: Uint8Array; values: number[] } {
  // byte j: element j in the low nibble, element j+16 in the high one; w = (q - 8) * d.
  const lo = Array.from({ length: 16 }, (_, j) => j);
  const hi = Array.from({ length: 16 }, (_, j) => 15 - j);
  const values = [...lo.map((q) => (q - 8) * 0.25), ...hi.map((q) => (q - 8) * 0.25)];
  return { bytes: Uint8Array.from([...half(0.25), ...lo.map((l, j) => l | (hi[j]! << 4))]), values };
}
function q4kBlock(): { bytes: Uint8Array; values: number[] } {
  const sc = Array.from({ length: 8 }, (_, j) => 3 + 7 * j); // 3..52: sub-blocks 4-7 need the high bits
  const m = Array.from({ length: 8 }, (_, j) => 60 - 5 * j);
  const qs = new Uint8Array(128);
  const values = new Array<number>(256);
  for (let c = 0; c < 4; c++) {
    for (let l = 0; l < 32; l++) {
      const lo = (l + c) % 16;
      const hi = (3 * l + c) % 16;
      qs[32 * c + l] = lo | (hi << 4);
      // 64 elements per chunk c: low nibbles are sub-block 2c, high nibbles sub-block 2c+1.
      values[64 * c + l] = 0.5 * sc[2 * c]! * lo - 0.25 * m[2 * c]!;
      values[64 * c + 32 + l] = 0.5 * sc[2 * c + 1]! * hi - 0.25 * m[2 * c + 1]!;
    }
  }
  return { bytes: Uint8Array.from([...half(0.5), ...half(0.25), ...packQ4kScales(sc, m), ...qs]), values };
}

function twoRows(block: { bytes: Uint8Array; values: number[] }, rows: number): { bytes: Uint8Array; values: number[] } {
  // Row r is the block with its scale doubled r times (fp16 d at bytes 0-1: exact for powers of two).
  const bytes: number[] = [];
  const values: number[] = [];
  for (let r = 0; r < rows; r++) {
    const b = [...block.bytes];
    const d = half(0.5 * 2 ** r);
    if (block.values.length === 256) [b[0], b[1]] = d as [number, number];
    bytes.push(...b);
    values.push(...block.values);
  }
  return { bytes: Uint8Array.from(bytes), values };
}

test('GGUF tensors of every supported type read back to the values their block layouts define', () => {
  const q4k = twoRows(q4kBlock(), 1);
  const file = join(dir, 'known.gguf');
  writeGguf(
    file,
    [
      { name: 'q8', shape: [2, 32], type: 'Q8_0', data: Uint8Array.from([...q8Block().bytes, ...q8Block().bytes]) },
      { name: 'q4', shape: [1, 32], type: 'Q4_0', data: q4Block().bytes },
      { name: 'q4k', shape: [1, 256], type: 'Q4_K', data: q4k.bytes },
      { name: 'f16', shape: [3], type: 'F16', data: Float32Array.of(1, -2.5, 0.125) },
      { name: 'bf16', shape: [3], type: 'BF16', data: Float32Array.of(1, -2.5, 0.125) },
      { name: 'f32', shape: [2, 2], type: 'F32', data: Float32Array.of(0.1, 0.2, 0.3, 0.4) },
    ],
    { 'general.architecture': 'flux', 'general.file_type': 7 },
    64,
  );
  const f = openTensorFile(file);
  assert.ok(f instanceof GgufFile);
  assert.equal(f.alignment, 64);
  assert.equal(f.metadata['general.architecture'], 'flux');
  assert.deepEqual(f.names(), ['q8', 'q4', 'q4k', 'f16', 'bf16', 'f32']);
  assert.deepEqual(f.entry('q8').shape, [2, 32]);
  assert.equal(f.entry('q8').dtype, 'F32');
  assert.equal(f.entry('f16').dtype, 'F16');
  assert.equal(f.ggmlType('q4k'), 'Q4_K');
  assert.deepEqual([...f.readFloat32('q8')], [...q8Block().values, ...q8Block().values]);
  assert.deepEqual([...f.readFloat32('q4')], q4Block().values);
  assert.deepEqual([...f.readFloat32('q4k')], q4k.values);
  assert.deepEqual([...f.readFloat32('f16')], [1, -2.5, 0.125]);
  assert.deepEqual([...f.readFloat32('bf16')], [1, -2.5, 0.125]);
  assert.deepEqual([...f.readFloat32('f32')], [...Float32Array.of(0.1, 0.2, 0.3, 0.4)]);
  assert.deepEqual([...f.readFloat32('q8', 30, 4)], [...q8Block().values.slice(30), ...q8Block().values.slice(0, 2)]);
  // As MatMulNBits weights: the same values (Q8_0/Q4_0 exactly; Q4_K through float zero points, to float rounding).
  for (const name of ['q8', 'q4', 'q4k']) {
    const w: NBitsWeight = f.nbits(name)!;
    assert.equal(w.blockSize, 32);
    const dq = dequantizeNBits(w);
    const want = f.readFloat32(name);
    for (let i = 0; i < want.length; i++) assert.ok(Math.abs(dq[i]! - want[i]!) <= 1e-6 * (1 + Math.abs(want[i]!)), `${name}[${i}]: ${dq[i]} vs ${want[i]}`);
  }
  assert.equal(f.nbits('f16'), undefined);
  assert.equal(f.nbits('f32'), undefined);
});

test('a Q4_K block whose sub-scale is zero still dequantises to its constant -dmin*m through MatMulNBits', () => {
  const sc = [0, 1, 2, 3, 4, 5, 6, 7];
  const m = [9, 0, 0, 0, 0, 0, 0, 0];
  const bytes = Uint8Array.from([...half(1), ...half(0.5), ...packQ4kScales(sc, m), ...new Uint8Array(128).fill(0x35)]);
  const file = join(dir, 'zero-scale.gguf');
  writeGguf(file, [{ name: 'w', shape: [1, 256], type: 'Q4_K', data: bytes }]);
  const f = GgufFile.open(file);
  const dq = dequantizeNBits(f.nbits('w')!);
  assert.deepEqual([...dq.subarray(0, 32)], new Array(32).fill(-4.5));
  assert.deepEqual([...dq], [...f.readFloat32('w')]);
});

test('damaged or unsupported GGUF files are refused by name with the reason', () => {
  const good = join(dir, 'good.gguf');
  writeGguf(good, [{ name: 'w', shape: [4, 32], type: 'Q8_0', data: pseudoRandom(128, 1) }]);
  const bytes = readFileSync(good);
  const truncated = join(dir, 'truncated.gguf');
  writeFileSync(truncated, bytes.subarray(0, bytes.byteLength - 10));
  assert.throws(
    () => openTensorFile(truncated),
    (e) => e instanceof ModelFileError && /truncated file: tensor "w"/.test(e.message),
  );
  const q6k = join(dir, 'q6k.gguf');
  writeGguf(q6k, [{ name: 'w', shape: [1, 256], type: 'F32', data: new Float32Array(256) }]);
  const q6kBytes = readFileSync(q6k);
  // The type field follows the name, n_dims and two u64 dims: patch F32 (0) to Q6_K (14).
  const typeAt = q6kBytes.indexOf(Buffer.from('w')) + 1 + 4 + 16;
  q6kBytes.writeUInt32LE(14, typeAt);
  writeFileSync(q6k, q6kBytes);
  assert.throws(() => openTensorFile(q6k), /tensor "w": ggml type Q6_K is not supported/);
  const badRow = join(dir, 'bad-row.gguf');
  writeGguf(badRow, [{ name: 'w', shape: [2, 16], type: 'F32', data: new Float32Array(32) }]);
  const badRowBytes = readFileSync(badRow);
  badRowBytes.writeUInt32LE(8, badRowBytes.indexOf(Buffer.from('w')) + 1 + 4 + 16); // Q8_0 with rows of 16
  writeFileSync(badRow, badRowBytes);
  assert.throws(() => openTensorFile(badRow), /row length 16 is not a multiple of the Q8_0 block \(32\)/);
  const v9 = Buffer.from(bytes);
  v9.writeUInt32LE(9, 4);
  const v9File = join(dir, 'v9.gguf');
  writeFileSync(v9File, v9);
  assert.throws(() => openTensorFile(v9File), /GGUF version 9 is not supported/);
});

test('fp8 codes widen to the values the e4m3fn and e5m2 formats define', () => {
  // e4m3fn: bias 7, no infinities, 0x7f/0xff NaN, max 448; e5m2: bias 15, IEEE specials.
  assert.equal(F8_E4M3_VALUES[0x38], 1);
  assert.equal(F8_E4M3_VALUES[0x7e], 448);
  assert.equal(F8_E4M3_VALUES[0xfe], -448);
  assert.equal(F8_E4M3_VALUES[0x01], 2 ** -9);
  assert.equal(F8_E4M3_VALUES[0x08], 2 ** -6);
  assert.equal(F8_E4M3_VALUES[0x78], 256);
  assert.ok(Number.isNaN(F8_E4M3_VALUES[0x7f]!) && Number.isNaN(F8_E4M3_VALUES[0xff]!));
  assert.equal(F8_E5M2_VALUES[0x3c], 1);
  assert.equal(F8_E5M2_VALUES[0x7b], 57344);
  assert.equal(F8_E5M2_VALUES[0x7c], Infinity);
  assert.equal(F8_E5M2_VALUES[0x01], 2 ** -16);
  assert.equal(F8_E5M2_VALUES[0xc0], -2);
  assert.ok(Number.isNaN(F8_E5M2_VALUES[0x7d]!));
  const file = join(dir, 'fp8.safetensors');
  writeSafetensors(file, {
    a: { dtype: 'F8_E4M3', shape: [3], bytes: Uint8Array.of(0x38, 0xc0, 0x7e) },
    b: { dtype: 'F8_E5M2', shape: [2], bytes: Uint8Array.of(0x3c, 0xc0) },
  });
  const f = openTensorFile(file);
  assert.deepEqual([...f.readFloat32('a')], [1, -2, 448]);
  assert.deepEqual([...f.readFloat32('b')], [1, -2]);
});
