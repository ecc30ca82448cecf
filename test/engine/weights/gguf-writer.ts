// A small GGUF writer for tests (the reader is src/engine/weights/gguf.ts; this side is written from the format
// description, with ggml's reference quantisers for Q8_0 and Q4_0, so the two meet only in the file's bytes).
import { writeFileSync } from 'node:fs';
import { f32ToBf16Bits, f32ToF16Bits, f16ToF32 } from '../../../src/engine/weights/float.ts';

export type GgufWriteType = 'F32' | 'F16' | 'BF16' | 'Q8_0' | 'Q4_0' | 'Q4_K';
const TYPE_ID: Record<GgufWriteType, number> = { F32: 0, F16: 1, Q4_0: 2, Q8_0: 8, Q4_K: 12, BF16: 30 };

export interface GgufTensorToWrite {
  name: string;
  /** torch order (outermost first); written as ne[] innermost first. */
  shape: number[];
  type: GgufWriteType;
  /** Float values to encode, or already-encoded bytes of `type` (hand-built blocks). */
  data: Float32Array | Uint8Array;
}

class Bytes {
  private chunks: Uint8Array[] = [];
  length = 0;
  push(b: Uint8Array): void {
    this.chunks.push(b);
    this.length += b.byteLength;
  }
  u32(v: number): void {
    const b = new Uint8Array(4);
    new DataView(b.buffer).setUint32(0, v, true);
    this.push(b);
  }
  u64(v: number): void {
    const b = new Uint8Array(8);
    new DataView(b.buffer).setBigUint64(0, BigInt(v), true);
    this.push(b);
  }
  str(s: string): void {
    const b = new TextEncoder().encode(s);
    this.u64(b.byteLength);
    this.push(b);
  }
  pad(to: number): void {
    const n = (to - (this.length % to)) % to;
    if (n) this.push(new Uint8Array(n));
  }
  concat(): Uint8Array {
    const out = new Uint8Array(this.length);
    let o = 0;
    for (const c of this.chunks) {
      out.set(c, o);
      o += c.byteLength;
    }
    return out;
  }
}

function f16(v: number): [number, number] {
  const h = f32ToF16Bits(v);
  return [h & 0xff, h >> 8];
}

/** ggml quantize_row_q8_0_ref: d = amax/127 (stored fp16), q = round(x/d). */
export function quantizeQ8_0(x: Float32Array): Uint8Array {
  const out = new Uint8Array((x.length / 32) * 34);
  for (let blk = 0; blk < x.length / 32; blk++) {
    let amax = 0;
    for (let j = 0; j < 32; j++) amax = Math.max(amax, Math.abs(x[blk * 32 + j]!));
    const d = amax / 127;
    const id = d ? 1 / d : 0;
    out.set(f16(d), blk * 34);
    for (let j = 0; j < 32; j++) out[blk * 34 + 2 + j] = Math.round(x[blk * 32 + j]! * id) & 0xff;
  }
  return out;
}

/** ggml quantize_row_q4_0_ref: d = (signed value of largest magnitude)/-8, q = min(15, trunc(x/d + 8.5)). */
export function quantizeQ4_0(x: Float32Array): Uint8Array {
  const out = new Uint8Array((x.length / 32) * 18);
  for (let blk = 0; blk < x.length / 32; blk++) {
    let amax = 0;
    let max = 0;
    for (let j = 0; j < 32; j++) {
      const v = x[blk * 32 + j]!;
      if (Math.abs(v) > amax) {
        amax = Math.abs(v);
        max = v;
      }
    }
    const d = max / -8;
    const id = d ? 1 / d : 0;
    out.set(f16(d), blk * 18);
    const q = (v: number) => Math.min(15, Math.trunc(v * id + 8.5));
    for (let j = 0; j < 16; j++) out[blk * 18 + 2 + j] = q(x[blk * 32 + j]!) | (q(x[blk * 32 + 16 + j]!) << 4);
  }
  return out;
}

/**
 * The 12 scale bytes of a Q4_K super-block from eight 6-bit scales and mins, per the documented packing: bytes
 * 0-3 hold sc0..3 in their low 6 bits and the top 2 bits of sc4..7 above; bytes 4-7 the same for the mins;
 * bytes 8-11 hold the low 4 bits of sc4..7 (low nibble) and of m4..7 (high nibble).
 */
export function packQ4kScales(sc: number[], m: number[]): Uint8Array {
  const out = new Uint8Array(12);
  for (let j = 0; j < 4; j++) {
    out[j] = sc[j]! | ((sc[j + 4]! >> 4) << 6);
    out[j + 4] = m[j]! | ((m[j + 4]! >> 4) << 6);
    out[j + 8] = (sc[j + 4]! & 0x0f) | ((m[j + 4]! & 0x0f) << 4);
  }
  return out;
}

/**
 * A simple Q4_K quantiser (not ggml's search, which only picks better scales): per sub-block of 32 the range
 * [min(0, lo), hi] in 15 steps; sub-scales and mins as 6-bit multiples of the super-block's d and dmin (fp16).
 */
export function quantizeQ4K(x: Float32Array): Uint8Array {
  const out = new Uint8Array((x.length / 256) * 144);
  for (let sb = 0; sb < x.length / 256; sb++) {
    const scales: number[] = [];
    const mins: number[] = [];
    for (let j = 0; j < 8; j++) {
      let lo = 0,
        hi = 0;
      for (let l = 0; l < 32; l++) {
        const v = x[sb * 256 + j * 32 + l]!;
        lo = Math.min(lo, v);
        hi = Math.max(hi, v);
      }
      scales.push((hi - lo) / 15);
      mins.push(-lo);
    }
    const d = f16ToF32(Uint16Array.of(f32ToF16Bits(Math.max(...scales) / 63)))[0]!;
    const dmin = f16ToF32(Uint16Array.of(f32ToF16Bits(Math.max(...mins) / 63)))[0]!;
    const sc = scales.map((s) => (d ? Math.min(63, Math.ceil(s / d)) : 0));
    const m = mins.map((v) => (dmin ? Math.min(63, Math.ceil(v / dmin)) : 0));
    const o = sb * 144;
    out.set(f16(d), o);
    out.set(f16(dmin), o + 2);
    out.set(packQ4kScales(sc, m), o + 4);
    for (let j = 0; j < 8; j++) {
      const step = d * sc[j]!;
      for (let l = 0; l < 32; l++) {
        const v = x[sb * 256 + j * 32 + l]!;
        const q = step ? Math.max(0, Math.min(15, Math.round((v + dmin * m[j]!) / step))) : 0;
        const at = o + 16 + 32 * (j >> 1) + l;
        out[at] = j & 1 ? out[at]! | (q << 4) : q;
      }
    }
  }
  return out;
}

/** The d of each block as the reader sees it (fp16-rounded), for error bounds. */
export function blockScales(bytes: Uint8Array, blockBytes: number): Float32Array {
  const n = bytes.byteLength / blockBytes;
  const u16 = new Uint16Array(n);
  for (let i = 0; i < n; i++) u16[i] = bytes[i * blockBytes]! | (bytes[i * blockBytes + 1]! << 8);
  return f16ToF32(u16);
}

function encode(t: GgufTensorToWrite): Uint8Array {
  if (t.data instanceof Uint8Array) return t.data;
  const x = t.data;
  switch (t.type) {
    case 'F32':
      return new Uint8Array(x.buffer.slice(x.byteOffset, x.byteOffset + x.byteLength));
    case 'F16':
      return new Uint8Array(Uint16Array.from(x, (v) => f32ToF16Bits(v)).buffer);
    case 'BF16':
      return new Uint8Array(Uint16Array.from(x, (v) => f32ToBf16Bits(v)).buffer);
    case 'Q8_0':
      return quantizeQ8_0(x);
    case 'Q4_0':
      return quantizeQ4_0(x);
    case 'Q4_K':
      return quantizeQ4K(x);
  }
}

/** Writes a GGUF v3 file: metadata strings/u32s, tensor infos, data aligned to `alignment`. */
export function writeGguf(file: string, tensors: GgufTensorToWrite[], metadata: Record<string, string | number> = {}, alignment = 32): void {
  const head = new Bytes();
  head.push(new TextEncoder().encode('GGUF'));
  head.u32(3);
  head.u64(tensors.length);
  const kv = { ...metadata, ...(alignment !== 32 ? { 'general.alignment': alignment } : {}) };
  head.u64(Object.keys(kv).length);
  for (const [k, v] of Object.entries(kv)) {
    head.str(k);
    if (typeof v === 'string') {
      head.u32(8);
      head.str(v);
    } else {
      head.u32(4);
      head.u32(v);
    }
  }
  const data = new Bytes();
  for (const t of tensors) {
    const bytes = encode(t);
    data.pad(alignment);
    head.str(t.name);
    head.u32(t.shape.length);
    for (const d of [...t.shape].reverse()) head.u64(d);
    head.u32(TYPE_ID[t.type]);
    head.u64(data.length);
    data.push(bytes);
  }
  head.pad(alignment);
  const out = new Bytes();
  out.push(head.concat());
  out.push(data.concat());
  writeFileSync(file, out.concat());
}
