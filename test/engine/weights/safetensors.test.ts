import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ModelFileError } from '../../../src/engine/api.ts';
import { f32ToBf16Bits, f32ToF16Bits } from '../../../src/engine/weights/float.ts';
import { SafetensorsFile, writeSafetensors } from '../../../src/engine/weights/safetensors.ts';
import { bytesOf, f32, rawSafetensors, tempDir } from './helpers.ts';

const dir = tempDir();

function expectError(file: string, pattern: RegExp) {
  assert.throws(
    () => SafetensorsFile.open(file),
    (e: unknown) => {
      assert.ok(e instanceof ModelFileError, `expected ModelFileError, got ${String(e)}`);
      assert.equal(e.file, file);
      assert.match(e.message, pattern);
      return true;
    },
  );
}

test('writes and reads back every dtype, with metadata and partial reads', () => {
  const file = join(dir, 'all.safetensors');
  const values = [1.5, -2.25, 3.0e-5, 65504, -0.0, 7];
  writeSafetensors(
    file,
    {
      f32: f32([2, 3], values),
      f16: { dtype: 'F16', shape: [6], bytes: bytesOf(Uint16Array.from(values, f32ToF16Bits)) },
      bf16: { dtype: 'BF16', shape: [3, 2], bytes: bytesOf(Uint16Array.from(values, f32ToBf16Bits)) },
      f64: { dtype: 'F64', shape: [2], bytes: bytesOf(Float64Array.of(0.1, -1e300)) },
      i64: { dtype: 'I64', shape: [1, 3], bytes: bytesOf(BigInt64Array.of(0n, 76n, -5n)) },
      i32: { dtype: 'I32', shape: [2], bytes: bytesOf(Int32Array.of(-7, 1 << 30)) },
      u8: { dtype: 'U8', shape: [3], bytes: Uint8Array.of(0, 128, 255) },
      empty: f32([0, 4], []),
    },
    { format: 'pt' },
  );
  const st = SafetensorsFile.open(file);
  assert.deepEqual(st.metadata, { format: 'pt' });
  assert.deepEqual(st.names().sort(), ['bf16', 'empty', 'f16', 'f32', 'f64', 'i32', 'i64', 'u8']);
  assert.deepEqual(st.tensor('f32'), { shape: [2, 3], data: Float32Array.from(values) });
  // 3e-5 is not exact in F16/BF16; compare with the rounded values, everything else is exact
  const f16 = st.readFloat32('f16');
  assert.equal(f16[0], 1.5);
  assert.equal(f16[3], 65504);
  assert.equal(f16[2], 2.9981136322021484e-5);
  assert.ok(Object.is(f16[4], -0));
  const bf16 = st.readFloat32('bf16');
  assert.deepEqual([bf16[0], bf16[1], bf16[3], bf16[5]], [1.5, -2.25, 65536, 7]); // 65504 rounds to 65536 in bf16
  assert.deepEqual([...st.readFloat32('f64')], [Math.fround(0.1), -Infinity]);
  assert.deepEqual([...st.readInt('i64')], [0n, 76n, -5n]);
  assert.deepEqual([...st.readFloat32('i64')], [0, 76, -5]);
  assert.deepEqual([...st.readInt('i32')], [-7, 1 << 30]);
  assert.deepEqual([...st.readFloat32('u8')], [0, 128, 255]);
  assert.deepEqual(st.tensor('empty'), { shape: [0, 4], data: new Float32Array(0) });
  assert.deepEqual(st.readFloat32('f32', 2, 3), Float32Array.from(values.slice(2, 5)));
  assert.equal(st.entry('i64').dtype, 'I64');
  assert.throws(() => st.readFloat32('f32', 4, 3), /outside its 6 elements/);
  assert.throws(() => st.readInt('f32'), /not an integer type/);
  assert.throws(() => st.entry('nope'), ModelFileError);
});

test('reads only the header when opening (lazy)', () => {
  const file = join(dir, 'lazy.safetensors');
  writeSafetensors(file, { a: f32([4], [1, 2, 3, 4]), b: f32([2], [5, 6]) });
  const st = SafetensorsFile.open(file);
  // Overwrite the data section after opening: a lazy reader sees the new bytes on the next read.
  const raw = rawSafetensors(st.headerText, bytesOf(Float32Array.of(9, 9, 9, 9, 8, 8)));
  writeFileSync(file, raw);
  assert.deepEqual([...st.readFloat32('b')], [8, 8]);
});

test('error: missing file, folder, empty file', () => {
  expectError(join(dir, 'missing.safetensors'), /file not found/);
  const folder = join(dir, 'a-folder.safetensors');
  mkdirSync(folder);
  expectError(folder, /is a folder/);
  const empty = join(dir, 'empty.safetensors');
  writeFileSync(empty, '');
  expectError(empty, /empty file/);
});

test('error: truncated files', () => {
  const short = join(dir, 'short.safetensors');
  writeFileSync(short, Uint8Array.of(1, 2, 3));
  expectError(short, /truncated file: 3 bytes/);
  const cutHeader = join(dir, 'cut-header.safetensors');
  writeFileSync(cutHeader, rawSafetensors({ a: { dtype: 'F32', shape: [1], data_offsets: [0, 4] } }).slice(0, 20));
  expectError(cutHeader, /truncated file: header says \d+ header bytes but the file has only 12/);
  const cutData = join(dir, 'cut-data.safetensors');
  writeFileSync(cutData, rawSafetensors({ a: { dtype: 'F32', shape: [4], data_offsets: [0, 16] } }, new Uint8Array(10)));
  expectError(cutData, /truncated file or bad header: tensor "a" data_offsets end at 16 but the data section has only 10 bytes/);
});

test('error: not a safetensors file', () => {
  const text = join(dir, 'text.safetensors');
  writeFileSync(text, 'hello world, this is not a model');
  expectError(text, /not a safetensors file: header length field is \d+, which is not plausible/);
  const garbage = join(dir, 'garbage.safetensors');
  writeFileSync(garbage, rawSafetensors('{"a": [1, 2'));
  expectError(garbage, /header is not valid JSON/);
  const notObject = join(dir, 'array.safetensors');
  writeFileSync(notObject, rawSafetensors('[1, 2, 3]'));
  expectError(notObject, /header does not start with a JSON object/);
  const zeroLen = join(dir, 'zero.safetensors');
  writeFileSync(zeroLen, new Uint8Array(16));
  expectError(zeroLen, /header length field is 0/);
});

test('error: bad entries (dtype, shape, offsets, overlap)', () => {
  const cases: [string, unknown, number, RegExp][] = [
    // F8_E4M3 was the example here until fp8 became a supported dtype (issue 16); C64 is still unsupported.
    ['dtype', { a: { dtype: 'C64', shape: [1], data_offsets: [0, 8] } }, 8, /tensor "a": unknown or unsupported dtype "C64"/],
    ['shape', { a: { dtype: 'F32', shape: [-1], data_offsets: [0, 4] } }, 4, /tensor "a": shape \[-1\] is not a list/],
    ['offsets-size', { a: { dtype: 'F32', shape: [2], data_offsets: [0, 4] } }, 8, /span 4 bytes but F32 \[2\] needs 8/],
    ['offsets-reversed', { a: { dtype: 'F32', shape: [1], data_offsets: [8, 4] } }, 8, /end before they begin/],
    ['offsets-missing', { a: { dtype: 'F32', shape: [1] } }, 4, /data_offsets undefined is not a pair/],
    ['past-end', { a: { dtype: 'F32', shape: [1], data_offsets: [100, 104] } }, 8, /end at 104 but the data section has only 8 bytes/],
    [
      'overlap',
      { a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] }, b: { dtype: 'F32', shape: [2], data_offsets: [4, 12] } },
      12,
      /data of tensors "a" and "b" overlap/,
    ],
  ];
  for (const [name, header, dataBytes, pattern] of cases) {
    const file = join(dir, `bad-${name}.safetensors`);
    writeFileSync(file, rawSafetensors(header, new Uint8Array(dataBytes)));
    expectError(file, pattern);
  }
});

test('refuses pickled checkpoints by extension and by magic bytes, explaining how to convert', () => {
  for (const ext of ['ckpt', 'pt', 'pth', 'bin', 'CKPT']) {
    // The file need not even exist: the name alone is refused before anything is read.
    expectError(join(dir, `model.${ext}`), /pickled PyTorch checkpoint format.*arbitrary code.*safetensors\.torch.*save_file/s);
  }
  const zip = join(dir, 'disguised-zip.safetensors');
  writeFileSync(zip, Uint8Array.of(0x50, 0x4b, 0x03, 0x04, 0, 0, 0, 0, 0, 0, 0, 0));
  expectError(zip, /zip archive \(the torch\.save format.*arbitrary code.*\.safetensors/s);
  const pickle = join(dir, 'disguised-pickle.safetensors');
  writeFileSync(pickle, Uint8Array.of(0x80, 0x02, 0x7d, 0x71, 0, 0, 0, 0, 0, 0));
  expectError(pickle, /Python pickle stream \(protocol 2\)/);
});
