// Lazy .safetensors reader: parses and validates the header once, then reads each tensor by file offset on
// demand (multi-GB checkpoints are never loaded whole). Format: u64 LE header length N, N bytes of JSON
// {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__"?: {...}}, then the raw LE data; offsets are
// relative to the first byte after the header.
import { closeSync, fstatSync, openSync, readSync, writeSync } from 'node:fs';
import { ModelFileError } from '../api.ts';
import type { Tensor } from '../tensor.ts';
import { decodeFloat32, decodeInt, dtypeBytes, type IntArray, isKnownDType, KNOWN_DTYPES } from './decode.ts';
import { openWeightsFile } from './open-file.ts';
import { pickleMagic, pickledFileError, refusePickledName } from './pickle-guard.ts';
import type { WeightDType } from './types.ts';

export interface TensorEntry {
  dtype: WeightDType;
  shape: number[];
  /** Absolute byte offsets in the file. */
  begin: number;
  end: number;
}

/** Headers above this are not plausible (a 7 GB SDXL checkpoint has ~200 KB); guards against garbage lengths. */
const MAX_HEADER_BYTES = 100 * 1024 * 1024;

export type { IntArray } from './decode.ts';

export class SafetensorsFile {
  readonly file: string;
  readonly size: number;
  readonly mtimeMs: number;
  readonly metadata: Record<string, string>;
  /** The raw JSON header text (cheap identity material: offsets, shapes and dtypes, no data). */
  readonly headerText: string;
  private readonly entries: Map<string, TensorEntry>;

  private constructor(file: string, size: number, mtimeMs: number, headerText: string, entries: Map<string, TensorEntry>, metadata: Record<string, string>) {
    this.file = file;
    this.size = size;
    this.mtimeMs = mtimeMs;
    this.headerText = headerText;
    this.entries = entries;
    this.metadata = metadata;
  }

  /** Opens and validates a file; reads only the header. Throws ModelFileError with the precise reason. */
  /** `allowPickleName`: openTensorFile has already seen the first bytes, so a .ckpt name alone is no reason to refuse. */
  static open(file: string, opts: { allowPickleName?: boolean } = {}): SafetensorsFile {
    if (!opts.allowPickleName) refusePickledName(file);
    const fd = openWeightsFile(file, '.safetensors file');
    try {
      const st = fstatSync(fd);
      if (st.isDirectory()) throw new ModelFileError(file, 'is a folder, expected a .safetensors file');
      const size = st.size;
      if (size === 0) throw new ModelFileError(file, 'empty file (0 bytes)');
      const head = new Uint8Array(Math.min(8, size));
      readFully(fd, head, 0, file);
      const magic = pickleMagic(head);
      if (magic) throw pickledFileError(file, magic);
      if (size < 8) throw new ModelFileError(file, `truncated file: ${size} bytes, too short for the 8-byte safetensors header length`);
      const headerLen = Number(new DataView(head.buffer).getBigUint64(0, true));
      if (headerLen === 0 || headerLen > MAX_HEADER_BYTES) {
        throw new ModelFileError(file, `not a safetensors file: header length field is ${headerLen}, which is not plausible`);
      }
      if (8 + headerLen > size) {
        throw new ModelFileError(file, `truncated file: header says ${headerLen} header bytes but the file has only ${size - 8} after the length field`);
      }
      const headerBytes = new Uint8Array(headerLen);
      readFully(fd, headerBytes, 8, file);
      const headerText = new TextDecoder('utf-8', { fatal: false }).decode(headerBytes);
      if (!headerText.trimStart().startsWith('{')) throw new ModelFileError(file, 'not a safetensors file: header does not start with a JSON object');
      let header: unknown;
      try {
        header = JSON.parse(headerText);
      } catch (e) {
        throw new ModelFileError(file, `not a safetensors file: header is not valid JSON (${(e as Error).message})`);
      }
      if (typeof header !== 'object' || header === null || Array.isArray(header)) {
        throw new ModelFileError(file, 'not a safetensors file: header is not a JSON object');
      }
      const dataStart = 8 + headerLen;
      const { entries, metadata } = parseEntries(file, header as Record<string, unknown>, dataStart, size);
      return new SafetensorsFile(file, size, st.mtimeMs, headerText, entries, metadata);
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

  entry(name: string): TensorEntry {
    const e = this.entries.get(name);
    if (!e) throw new ModelFileError(this.file, `has no tensor named "${name}"`);
    return e;
  }

  /**
   * Raw little-endian bytes of one tensor (or of `count` elements from element `start`, in flat row-major
   * order), in a fresh, 8-byte-aligned buffer.
   */
  readBytes(name: string, start = 0, count?: number): Uint8Array {
    const e = this.entry(name);
    const width = dtypeBytes(e.dtype);
    const total = (e.end - e.begin) / width;
    const n = count ?? total - start;
    if (start < 0 || n < 0 || start + n > total) {
      throw new ModelFileError(this.file, `tensor "${name}": element range [${start}, ${start + n}) is outside its ${total} elements`);
    }
    const bytes = new Uint8Array(new ArrayBuffer(n * width));
    const fd = openSync(this.file, 'r');
    try {
      readFully(fd, bytes, e.begin + start * width, this.file);
    } finally {
      closeSync(fd);
    }
    return bytes;
  }

  /** The tensor widened/converted to float32 (F16/BF16 exactly; F64 rounds; integers by value). */
  readFloat32(name: string, start = 0, count?: number): Float32Array {
    return decodeFloat32(this.entry(name).dtype, this.readBytes(name, start, count));
  }

  /** Integer tensors in their own width (I64 as BigInt64Array; BOOL as Uint8Array of 0/1). */
  readInt(name: string, start = 0, count?: number): IntArray {
    const { dtype } = this.entry(name);
    const out = decodeInt(dtype, this.readBytes(name, start, count));
    if (!out) throw new ModelFileError(this.file, `tensor "${name}" is ${dtype}, not an integer type`);
    return out;
  }

  tensor(name: string): Tensor {
    return { shape: [...this.entry(name).shape], data: this.readFloat32(name) };
  }
}

function readFully(fd: number, into: Uint8Array, position: number, file: string): void {
  let done = 0;
  while (done < into.byteLength) {
    const chunk = Math.min(into.byteLength - done, 1 << 30);
    const got = readSync(fd, into, done, chunk, position + done);
    if (got === 0) throw new ModelFileError(file, `truncated file: wanted ${into.byteLength} bytes at offset ${position}, got ${done}`);
    done += got;
  }
}

function parseEntries(
  file: string,
  header: Record<string, unknown>,
  dataStart: number,
  fileSize: number,
): { entries: Map<string, TensorEntry>; metadata: Record<string, string> } {
  const entries = new Map<string, TensorEntry>();
  let metadata: Record<string, string> = {};
  const dataBytes = fileSize - dataStart;
  for (const [name, raw] of Object.entries(header)) {
    if (name === '__metadata__') {
      if (raw && typeof raw === 'object' && !Array.isArray(raw)) metadata = raw as Record<string, string>;
      continue;
    }
    const bad = (why: string) => new ModelFileError(file, `tensor "${name}": ${why}`);
    if (!raw || typeof raw !== 'object') throw bad('header entry is not an object');
    const { dtype, shape, data_offsets: offsets } = raw as Record<string, unknown>;
    if (typeof dtype !== 'string' || !isKnownDType(dtype)) {
      throw bad(`unknown or unsupported dtype ${JSON.stringify(dtype)} (supported: ${KNOWN_DTYPES.join(', ')})`);
    }
    if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
      throw bad(`shape ${JSON.stringify(shape)} is not a list of non-negative integers`);
    }
    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every((o) => Number.isSafeInteger(o) && o >= 0)) {
      throw bad(`data_offsets ${JSON.stringify(offsets)} is not a pair of non-negative integers`);
    }
    const [b, e] = offsets as [number, number];
    if (e < b) throw bad(`data_offsets [${b}, ${e}] end before they begin`);
    const want = (shape as number[]).reduce((a, d) => a * d, 1) * dtypeBytes(dtype as WeightDType);
    if (e - b !== want) throw bad(`data_offsets [${b}, ${e}] span ${e - b} bytes but ${dtype} ${JSON.stringify(shape)} needs ${want}`);
    if (e > dataBytes) {
      throw new ModelFileError(
        file,
        `truncated file or bad header: tensor "${name}" data_offsets end at ${e} but the data section has only ${dataBytes} bytes`,
      );
    }
    entries.set(name, { dtype: dtype as WeightDType, shape: shape as number[], begin: dataStart + b, end: dataStart + e });
  }
  const sorted = [...entries].filter(([, t]) => t.end > t.begin).sort((x, y) => x[1].begin - y[1].begin);
  for (let i = 1; i < sorted.length; i++) {
    const [pn, p] = sorted[i - 1]!;
    const [cn, c] = sorted[i]!;
    if (c.begin < p.end) throw new ModelFileError(file, `bad header: data of tensors "${pn}" and "${cn}" overlap`);
  }
  return { entries, metadata };
}

export interface TensorToWrite {
  dtype: WeightDType;
  shape: number[];
  /** Raw little-endian bytes of the data. */
  bytes: Uint8Array;
}

/** Writes a .safetensors file (sorted names, 8-byte padded header) — used for tests, caches and conversions. */
export function writeSafetensors(file: string, tensors: Record<string, TensorToWrite>, metadata?: Record<string, string>): void {
  const names = Object.keys(tensors).sort();
  const header: Record<string, unknown> = {};
  if (metadata) header.__metadata__ = metadata;
  let offset = 0;
  for (const n of names) {
    const t = tensors[n]!;
    const want = t.shape.reduce((a, d) => a * d, 1) * dtypeBytes(t.dtype);
    if (t.bytes.byteLength !== want) throw new Error(`writeSafetensors: "${n}" has ${t.bytes.byteLength} bytes, ${t.dtype} [${t.shape}] needs ${want}`);
    header[n] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + want] };
    offset += want;
  }
  const json = JSON.stringify(header);
  const byteLen = new TextEncoder().encode(json).byteLength;
  const jsonBytes = new TextEncoder().encode(json + ' '.repeat((8 - (byteLen % 8)) % 8));
  const len = new Uint8Array(8);
  new DataView(len.buffer).setBigUint64(0, BigInt(jsonBytes.byteLength), true);
  const fd = openSync(file, 'w');
  try {
    writeSync(fd, len);
    writeSync(fd, jsonBytes);
    for (const n of names) writeSync(fd, tensors[n]!.bytes);
  } finally {
    closeSync(fd);
  }
}

export { dtypeBytes } from './decode.ts';
