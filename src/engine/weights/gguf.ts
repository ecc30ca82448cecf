// Lazy GGUF reader (ggml's single-file format, as llama.cpp, stable-diffusion.cpp and city96's ComfyUI-GGUF write
// it; Flux GGUFs carry the BFL key names). Layout, all little-endian: magic "GGUF", u32 version (2 or 3), u64
// tensor count, u64 metadata count; metadata as (string key, u32 value type, value); tensor infos as (string name,
// u32 n_dims, u64 ne[n_dims] innermost first, u32 ggml type, u64 offset); padding to `general.alignment` (default
// 32); then the data, each tensor at its offset from there. Strings are u64 length + UTF-8 bytes.
//
// Tensors read as float32 like every TensorFile (F32/F16/BF16 exactly; quantised types dequantised), and 2-D
// quantised ones are also offered as MatMulNBits weights without a float detour (`nbits`): Q8_0 and Q4_0 map
// exactly onto blocks of 32 with the default zero point; Q4_K's 256-element super-blocks become 8 blocks of 32
// with float zero points (scale d·sc, zero point dmin·m / (d·sc)), also exact.
import { closeSync, fstatSync, readSync } from 'node:fs';
import { ModelFileError } from '../api.ts';
import { allocNBits, type NBitsWeight, setCode, setZeroPoint } from '../onnx/matmul-nbits.ts';
import type { Tensor } from '../tensor.ts';
import type { IntArray } from './decode.ts';
import { bf16ToF32, f16ToF32 } from './float.ts';
import { openWeightsFile } from './open-file.ts';
import type { TensorInfo } from './tensor-file.ts';

export const GGUF_MAGIC = 'GGUF';

/** ggml tensor types Kiln reads, by their numeric id in the file. */
export const GGML_TYPE = { F32: 0, F16: 1, Q4_0: 2, Q8_0: 8, Q4_K: 12, BF16: 30 } as const;
export type GgmlTypeName = keyof typeof GGML_TYPE;

/** Elements per block and bytes per block of each type. */
const BLOCK: Record<GgmlTypeName, { elems: number; bytes: number }> = {
  F32: { elems: 1, bytes: 4 },
  F16: { elems: 1, bytes: 2 },
  BF16: { elems: 1, bytes: 2 },
  Q8_0: { elems: 32, bytes: 34 }, // f16 d, 32 x int8
  Q4_0: { elems: 32, bytes: 18 }, // f16 d, 16 bytes of nibbles
  Q4_K: { elems: 256, bytes: 144 }, // f16 d, f16 dmin, 12 bytes of 6-bit scales/mins, 128 bytes of nibbles
};

/** Names of the ggml types that exist but Kiln does not read, for the error message. */
const OTHER_TYPES: Record<number, string> = {
  3: 'Q4_1',
  6: 'Q5_0',
  7: 'Q5_1',
  9: 'Q8_1',
  10: 'Q2_K',
  11: 'Q3_K',
  13: 'Q5_K',
  14: 'Q6_K',
  15: 'Q8_K',
};

const TYPE_BY_ID = new Map<number, GgmlTypeName>(Object.entries(GGML_TYPE).map(([k, v]) => [v, k as GgmlTypeName]));

/** Metadata value types (gguf_type). */
const VT = { U8: 0, I8: 1, U16: 2, I16: 3, U32: 4, I32: 5, F32: 6, BOOL: 7, STRING: 8, ARRAY: 9, U64: 10, I64: 11, F64: 12 } as const;

/** Bounds against garbage headers. */
const MAX_TENSORS = 1_000_000;
const MAX_KV = 1_000_000;
const MAX_DIMS = 8;
const MAX_STRING = 64 * 1024 * 1024;
const MAX_HEADER_BYTES = 512 * 1024 * 1024;
/** Arrays longer than this (LLM vocabularies) are skipped rather than kept in `metadata`. */
const MAX_KEPT_ARRAY = 1024;

export type GgufValue = number | bigint | boolean | string | GgufValue[];

export interface GgufTensorEntry extends TensorInfo {
  ggmlType: GgmlTypeName;
  /** Absolute byte offset in the file and byte length. */
  begin: number;
  bytes: number;
}

export class GgufFile {
  readonly file: string;
  readonly size: number;
  readonly mtimeMs: number;
  readonly version: number;
  /** Every kept key/value (large arrays omitted), as read. */
  readonly kv: Map<string, GgufValue>;
  /** Scalars and short arrays as strings: the TensorFile view of the metadata. */
  readonly metadata: Record<string, string>;
  readonly alignment: number;
  private readonly entries: Map<string, GgufTensorEntry>;

  private constructor(
    file: string,
    size: number,
    mtimeMs: number,
    version: number,
    kv: Map<string, GgufValue>,
    alignment: number,
    entries: Map<string, GgufTensorEntry>,
  ) {
    this.file = file;
    this.size = size;
    this.mtimeMs = mtimeMs;
    this.version = version;
    this.kv = kv;
    this.alignment = alignment;
    this.entries = entries;
    this.metadata = {};
    for (const [k, v] of kv) this.metadata[k] = Array.isArray(v) ? JSON.stringify(v, (_, x) => (typeof x === 'bigint' ? x.toString() : x)) : String(v);
  }

  /** Reads and validates the header (metadata and tensor infos); tensor data is read on demand. */
  static open(file: string): GgufFile {
    const fd = openWeightsFile(file, '.gguf file');
    try {
      const st = fstatSync(fd);
      const r = new HeaderReader(fd, file, st.size);
      const magic = new TextDecoder().decode(r.bytes(4));
      if (magic !== GGUF_MAGIC) throw new ModelFileError(file, `not a GGUF file (magic ${JSON.stringify(magic)}, expected "GGUF")`);
      const version = r.u32();
      if (version !== 2 && version !== 3) throw new ModelFileError(file, `GGUF version ${version} is not supported (2 and 3 are)`);
      const tensorCount = r.count(MAX_TENSORS, 'tensor count');
      const kvCount = r.count(MAX_KV, 'metadata count');
      const kv = new Map<string, GgufValue>();
      for (let i = 0; i < kvCount; i++) {
        const key = r.string();
        const value = r.value(r.u32(), key);
        if (value !== undefined) kv.set(key, value);
      }
      const alignment = Number(kv.get('general.alignment') ?? 32);
      if (!Number.isInteger(alignment) || alignment <= 0 || (alignment & (alignment - 1)) !== 0) {
        throw new ModelFileError(file, `general.alignment ${alignment} is not a power of two`);
      }
      const infos: { name: string; ne: number[]; type: number; offset: number }[] = [];
      for (let i = 0; i < tensorCount; i++) {
        const name = r.string();
        const nDims = r.u32();
        if (nDims < 1 || nDims > MAX_DIMS) throw new ModelFileError(file, `tensor "${name}" has ${nDims} dimensions`);
        const ne: number[] = [];
        for (let d = 0; d < nDims; d++) ne.push(r.count(Number.MAX_SAFE_INTEGER, `tensor "${name}" dimension`));
        infos.push({ name, ne, type: r.u32(), offset: r.count(Number.MAX_SAFE_INTEGER, `tensor "${name}" offset`) });
      }
      const dataStart = Math.ceil(r.position / alignment) * alignment;
      const entries = new Map<string, GgufTensorEntry>();
      for (const info of infos) {
        const bad = (why: string) => new ModelFileError(file, `tensor "${info.name}": ${why}`);
        const ggmlType = TYPE_BY_ID.get(info.type);
        if (!ggmlType) {
          const known = OTHER_TYPES[info.type];
          throw bad(
            `ggml type ${known ?? `#${info.type}`} is not supported (Kiln reads ${Object.keys(GGML_TYPE).join(', ')}); convert with a supported type, e.g. Q8_0 or Q4_0`,
          );
        }
        const block = BLOCK[ggmlType];
        if (info.ne[0]! % block.elems !== 0) throw bad(`row length ${info.ne[0]} is not a multiple of the ${ggmlType} block (${block.elems})`);
        const elems = info.ne.reduce((a, d) => a * d, 1);
        const bytes = (elems / block.elems) * block.bytes;
        if (info.offset % alignment !== 0) throw bad(`offset ${info.offset} is not aligned to ${alignment}`);
        const begin = dataStart + info.offset;
        if (begin + bytes > st.size) throw new ModelFileError(file, `truncated file: tensor "${info.name}" ends at byte ${begin + bytes} of ${st.size}`);
        if (entries.has(info.name)) throw bad('appears twice');
        // torch order is outermost first; ComfyUI-GGUF records a reshaped tensor's original shape in the metadata.
        const orig = kv.get(`comfy.gguf.orig_shape.${info.name}`);
        let shape = [...info.ne].reverse();
        if (Array.isArray(orig) && orig.every((d) => typeof d === 'number' || typeof d === 'bigint')) {
          const o = orig.map(Number);
          if (o.reduce((a, d) => a * d, 1) === elems) shape = o;
        }
        entries.set(info.name, { dtype: 'F32', shape, ggmlType, begin, bytes });
      }
      return new GgufFile(file, st.size, st.mtimeMs, version, kv, alignment, entries);
    } finally {
      closeSync(fd);
    }
  }

  names(): string[] {
    return [...this.entries.keys()];
  }

  has(name: string): boolean {
    return this.entries.has(name);
  }

  /** dtype is what readBytes returns: the stored F16/BF16/F32, and F32 for quantised types (dequantised). */
  entry(name: string): GgufTensorEntry {
    const e = this.entries.get(name);
    if (!e) throw new ModelFileError(this.file, `has no tensor named "${name}"`);
    const dtype = e.ggmlType === 'F16' || e.ggmlType === 'BF16' ? e.ggmlType : 'F32';
    return { ...e, dtype };
  }

  ggmlType(name: string): GgmlTypeName {
    return this.entry(name).ggmlType;
  }

  /** The stored bytes of a whole tensor (quantised blocks as they are). */
  rawBytes(name: string): Uint8Array {
    const e = this.entry(name);
    const out = new Uint8Array(new ArrayBuffer(e.bytes));
    const fd = openWeightsFile(this.file, '.gguf file');
    try {
      let done = 0;
      while (done < e.bytes) {
        const got = readSync(fd, out, done, Math.min(e.bytes - done, 1 << 30), e.begin + done);
        if (got === 0) throw new ModelFileError(this.file, `truncated file: tensor "${name}" is cut short`);
        done += got;
      }
    } finally {
      closeSync(fd);
    }
    return out;
  }

  readFloat32(name: string, start = 0, count?: number): Float32Array {
    const e = this.entry(name);
    const total = e.shape.reduce((a, d) => a * d, 1);
    const n = count ?? total - start;
    if (start < 0 || n < 0 || start + n > total)
      throw new ModelFileError(this.file, `tensor "${name}": element range [${start}, ${start + n}) is outside its ${total} elements`);
    const all = dequantize(e.ggmlType, this.rawBytes(name), total);
    return start === 0 && n === total ? all : all.slice(start, start + n);
  }

  /** Raw little-endian bytes in entry(name).dtype: stored F16/BF16/F32 as is, quantised types as float32. */
  readBytes(name: string, start = 0, count?: number): Uint8Array {
    const e = this.entry(name);
    if (e.ggmlType === 'F16' || e.ggmlType === 'BF16') {
      const raw = this.rawBytes(name);
      const total = raw.byteLength / 2;
      const n = count ?? total - start;
      return raw.slice(start * 2, (start + n) * 2);
    }
    const f = this.readFloat32(name, start, count);
    return new Uint8Array(f.buffer, f.byteOffset, f.byteLength);
  }

  readInt(name: string): IntArray {
    throw new ModelFileError(this.file, `tensor "${name}": GGUF files hold no integer tensors Kiln reads`);
  }

  tensor(name: string): Tensor {
    return { shape: [...this.entry(name).shape], data: this.readFloat32(name) };
  }

  /**
   * A 2-D quantised tensor [N, K] as a MatMulNBits weight, read straight from its blocks (no float copy of the
   * whole tensor); undefined for float tensors and other ranks.
   */
  nbits(name: string): NBitsWeight | undefined {
    const e = this.entries.get(name);
    if (e?.shape.length !== 2 || e.ggmlType === 'F32' || e.ggmlType === 'F16' || e.ggmlType === 'BF16') return undefined;
    const [n, k] = e.shape as [number, number];
    return blocksToNBits(e.ggmlType, this.rawBytes(name), n, k);
  }
}

/** Header reads over a file, in chunks (headers of LLM files with big vocabularies run to megabytes). */
class HeaderReader {
  private buf = new Uint8Array(0);
  private bufStart = 0;
  position = 0;

  constructor(
    private readonly fd: number,
    private readonly file: string,
    private readonly size: number,
  ) {}

  bytes(n: number): Uint8Array {
    if (this.position + n > this.size)
      throw new ModelFileError(this.file, `truncated GGUF header: wanted ${n} bytes at offset ${this.position}, the file has ${this.size}`);
    if (this.position + n > MAX_HEADER_BYTES) throw new ModelFileError(this.file, `GGUF header runs past ${MAX_HEADER_BYTES} bytes; not plausible`);
    if (this.position < this.bufStart || this.position + n > this.bufStart + this.buf.byteLength) {
      const len = Math.min(Math.max(n, 1 << 20), this.size - this.position);
      this.buf = new Uint8Array(len);
      readSync(this.fd, this.buf, 0, len, this.position);
      this.bufStart = this.position;
    }
    const off = this.position - this.bufStart;
    this.position += n;
    return this.buf.subarray(off, off + n);
  }

  private view(n: number): DataView {
    const b = this.bytes(n);
    return new DataView(b.buffer, b.byteOffset, n);
  }
  u32(): number {
    return this.view(4).getUint32(0, true);
  }
  u64(): bigint {
    return this.view(8).getBigUint64(0, true);
  }
  /** A u64 that must be a safe integer no larger than `max`. */
  count(max: number, what: string): number {
    const v = this.u64();
    if (v > BigInt(max)) throw new ModelFileError(this.file, `GGUF ${what} ${v} is not plausible`);
    return Number(v);
  }
  string(): string {
    const len = this.count(MAX_STRING, 'string length');
    return new TextDecoder('utf-8', { fatal: false }).decode(this.bytes(len));
  }

  /** One metadata value of type `t`; undefined when skipped (a long array). */
  value(t: number, key: string): GgufValue | undefined {
    switch (t) {
      case VT.U8:
        return this.view(1).getUint8(0);
      case VT.I8:
        return this.view(1).getInt8(0);
      case VT.U16:
        return this.view(2).getUint16(0, true);
      case VT.I16:
        return this.view(2).getInt16(0, true);
      case VT.U32:
        return this.u32();
      case VT.I32:
        return this.view(4).getInt32(0, true);
      case VT.F32:
        return this.view(4).getFloat32(0, true);
      case VT.BOOL:
        return this.view(1).getUint8(0) !== 0;
      case VT.STRING:
        return this.string();
      case VT.U64: {
        const v = this.u64();
        return v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
      }
      case VT.I64: {
        const v = this.view(8).getBigInt64(0, true);
        return v <= BigInt(Number.MAX_SAFE_INTEGER) && v >= BigInt(Number.MIN_SAFE_INTEGER) ? Number(v) : v;
      }
      case VT.F64:
        return this.view(8).getFloat64(0, true);
      case VT.ARRAY: {
        const et = this.u32();
        if (et === VT.ARRAY) throw new ModelFileError(this.file, `metadata "${key}": nested arrays are not supported`);
        const n = this.count(MAX_HEADER_BYTES, `metadata "${key}" array length`);
        const out: GgufValue[] = [];
        for (let i = 0; i < n; i++) {
          const v = this.value(et, key);
          if (n <= MAX_KEPT_ARRAY && v !== undefined) out.push(v);
        }
        return n <= MAX_KEPT_ARRAY ? out : undefined;
      }
      default:
        throw new ModelFileError(this.file, `metadata "${key}" has unknown value type ${t}`);
    }
  }
}

function f16At(bytes: Uint8Array, offset: number): number {
  return f16ToF32(Uint16Array.of(bytes[offset]! | (bytes[offset + 1]! << 8)))[0]!;
}

/** Q4_K's 6-bit scale and min of sub-block j (0..7) from its 12 packed bytes at `s` (ggml get_scale_min_k4). */
export function q4kScaleMin(bytes: Uint8Array, s: number, j: number): [number, number] {
  if (j < 4) return [bytes[s + j]! & 63, bytes[s + j + 4]! & 63];
  const sc = (bytes[s + j + 4]! & 0x0f) | ((bytes[s + j - 4]! >> 6) << 4);
  const m = (bytes[s + j + 4]! >> 4) | ((bytes[s + j]! >> 6) << 4);
  return [sc, m];
}

/** Stored bytes of `count` elements of `type` -> float32 (ggml's dequantize_row_* semantics). */
export function dequantize(type: GgmlTypeName, raw: Uint8Array, count: number): Float32Array {
  switch (type) {
    case 'F32':
      return new Float32Array(raw.buffer, raw.byteOffset, count).slice();
    case 'F16':
      return f16ToF32(new Uint16Array(raw.buffer, raw.byteOffset, count));
    case 'BF16':
      return bf16ToF32(new Uint16Array(raw.buffer, raw.byteOffset, count));
    default:
      break;
  }
  const out = new Float32Array(count);
  const { elems, bytes } = BLOCK[type];
  for (let blk = 0; blk < count / elems; blk++) {
    const o = blk * bytes;
    const y = blk * elems;
    if (type === 'Q8_0') {
      const d = f16At(raw, o);
      for (let j = 0; j < 32; j++) out[y + j] = ((raw[o + 2 + j]! << 24) >> 24) * d;
    } else if (type === 'Q4_0') {
      const d = f16At(raw, o);
      for (let j = 0; j < 16; j++) {
        const q = raw[o + 2 + j]!;
        out[y + j] = ((q & 0x0f) - 8) * d;
        out[y + j + 16] = ((q >> 4) - 8) * d;
      }
    } else {
      const d = f16At(raw, o);
      const dmin = f16At(raw, o + 2);
      for (let c = 0; c < 4; c++) {
        const [sc0, m0] = q4kScaleMin(raw, o + 4, 2 * c);
        const [sc1, m1] = q4kScaleMin(raw, o + 4, 2 * c + 1);
        const qs = o + 16 + 32 * c;
        for (let l = 0; l < 32; l++) {
          out[y + 64 * c + l] = d * sc0 * (raw[qs + l]! & 0x0f) - dmin * m0;
          out[y + 64 * c + 32 + l] = d * sc1 * (raw[qs + l]! >> 4) - dmin * m1;
        }
      }
    }
  }
  return out;
}

/** Quantised blocks of an [n, k] tensor as a MatMulNBits weight with blocks of 32, value for value. */
export function blocksToNBits(type: 'Q8_0' | 'Q4_0' | 'Q4_K', raw: Uint8Array, n: number, k: number): NBitsWeight {
  const { elems, bytes } = BLOCK[type];
  const perRow = k / elems;
  if (type === 'Q8_0') {
    const w = allocNBits(n, k, 8, 32);
    for (let row = 0; row < n; row++) {
      for (let blk = 0; blk < perRow; blk++) {
        const o = (row * perRow + blk) * bytes;
        w.scales[row * perRow + blk] = f16At(raw, o);
        // int8 q -> uint8 q + 128, the default zero point of 8-bit MatMulNBits: (q + 128 - 128) * d.
        for (let j = 0; j < 32; j++) w.packed[(row * perRow + blk) * 32 + j] = raw[o + 2 + j]! ^ 0x80;
      }
    }
    return w;
  }
  if (type === 'Q4_0') {
    const w = allocNBits(n, k, 4, 32);
    for (let row = 0; row < n; row++) {
      for (let blk = 0; blk < perRow; blk++) {
        const o = (row * perRow + blk) * bytes;
        w.scales[row * perRow + blk] = f16At(raw, o);
        // ggml: byte j holds element j (low nibble) and j+16 (high); MatMulNBits wants consecutive elements per byte.
        for (let j = 0; j < 16; j++) {
          const q = raw[o + 2 + j]!;
          setCode(w, row, blk, j, q & 0x0f);
          setCode(w, row, blk, j + 16, q >> 4);
        }
      }
    }
    return w;
  }
  const kb = k / 32;
  const w = allocNBits(n, k, 4, 32, 'float');
  for (let row = 0; row < n; row++) {
    for (let sb = 0; sb < perRow; sb++) {
      const o = (row * perRow + sb) * bytes;
      const d = f16At(raw, o);
      const dmin = f16At(raw, o + 2);
      for (let j = 0; j < 8; j++) {
        const [sc, m] = q4kScaleMin(raw, o + 4, j);
        const blk = sb * 8 + j;
        const scale = d * sc;
        const min = dmin * m;
        const qs = o + 16 + 32 * (j >> 1);
        if (scale !== 0) {
          // d·sc·q − dmin·m = (q − dmin·m/(d·sc)) · d·sc
          w.scales[row * kb + blk] = scale;
          setZeroPoint(w, row, blk, min / scale);
          for (let l = 0; l < 32; l++) setCode(w, row, blk, l, j & 1 ? raw[qs + l]! >> 4 : raw[qs + l]! & 0x0f);
        } else {
          // A zero scale leaves the constant −dmin·m: codes 0, zero point 1, scale dmin·m.
          w.scales[row * kb + blk] = min;
          setZeroPoint(w, row, blk, 1);
        }
      }
    }
  }
  return w;
}
