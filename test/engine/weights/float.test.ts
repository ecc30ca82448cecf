import { test } from 'node:test';
import assert from 'node:assert/strict';
import { bf16ToF32, f16ToF32, f32ToBf16Bits, f32ToF16Bits } from '../../../src/engine/weights/float.ts';

test('F16 -> F32 is exact on known values', () => {
  const cases: [number, number][] = [
    [0x3c00, 1],
    [0xc000, -2],
    [0x7bff, 65504],
    [0x0001, 2 ** -24],
    [0x03ff, 1023 * 2 ** -24],
    [0x0400, 2 ** -14],
    [0x3555, 0.333251953125],
    [0x7c00, Infinity],
    [0xfc00, -Infinity],
  ];
  const out = f16ToF32(Uint16Array.from(cases.map((c) => c[0])));
  cases.forEach(([, v], i) => assert.equal(out[i], v, `case ${i}`));
  assert.ok(Number.isNaN(f16ToF32(Uint16Array.of(0x7e00))[0]));
  assert.ok(Object.is(f16ToF32(Uint16Array.of(0x8000))[0], -0));
});

test('every non-NaN F16 bit pattern survives F16 -> F32 -> F16', () => {
  const all = new Uint16Array(65536).map((_, i) => i);
  const wide = f16ToF32(all);
  for (let h = 0; h < 65536; h++) {
    if (Number.isNaN(wide[h])) {
      assert.equal(h & 0x7c00, 0x7c00);
      continue;
    }
    assert.equal(f32ToF16Bits(wide[h]!), h, `pattern 0x${h.toString(16)}`);
  }
});

test('every non-NaN BF16 bit pattern survives BF16 -> F32 -> BF16, and equals the top half of the float32', () => {
  const all = new Uint16Array(65536).map((_, i) => i);
  const wide = bf16ToF32(all);
  const bits = new Uint32Array(wide.buffer);
  for (let h = 0; h < 65536; h++) {
    assert.equal(bits[h], (h << 16) >>> 0);
    if (!Number.isNaN(wide[h])) assert.equal(f32ToBf16Bits(wide[h]!), h);
  }
  assert.equal(bf16ToF32(Uint16Array.of(0x3f80))[0], 1);
  assert.equal(bf16ToF32(Uint16Array.of(0xc0490000 >>> 16))[0], -3.140625);
});

test('narrowing rounds to nearest, ties to even', () => {
  assert.equal(f32ToF16Bits(1 + 2 ** -11), 0x3c00); // tie, even stays
  assert.equal(f32ToF16Bits(1 + 3 * 2 ** -11), 0x3c02); // tie, rounds up to even
  assert.equal(f32ToF16Bits(70000), 0x7c00); // overflow
  assert.equal(f32ToF16Bits(2 ** -25), 0x0000); // tie at half the smallest subnormal -> 0
  assert.equal(f32ToF16Bits(3 * 2 ** -26), 0x0001);
  assert.equal(f32ToBf16Bits(1 + 2 ** -8), 0x3f80); // tie -> even
  assert.equal(f32ToBf16Bits(1 + 3 * 2 ** -8), 0x3f82);
});
