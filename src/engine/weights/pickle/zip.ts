// Minimal read-only zip reader for torch.save archives: reads the central directory (zip64 included) and
// gives each entry's data as a byte range (STORED, the torch default) or inflated bytes (DEFLATED, node:zlib).
// Nothing but the directory is read up front; every count, size and offset is checked against the file.
import { readSync } from 'node:fs';
import { inflateRawSync } from 'node:zlib';
import { ModelFileError } from '../../api.ts';

export interface ZipEntry {
  name: string;
  method: 0 | 8;
  compressedSize: number;
  size: number;
  localHeaderOffset: number;
}

/** A torch archive has 3 entries per storage plus a few; a million is far beyond any real checkpoint. */
export const MAX_ZIP_ENTRIES = 1_000_000;
/** Inflating a DEFLATED entry holds it in memory: refuse implausibly large ones. */
export const MAX_INFLATED_BYTES = 4 * 1024 ** 3;

const EOCD_SIG = 0x06054b50;
const ZIP64_LOCATOR_SIG = 0x07064b50;
const ZIP64_EOCD_SIG = 0x06064b50;
const CENTRAL_SIG = 0x02014b50;
const LOCAL_SIG = 0x04034b50;

export function readAt(fd: number, file: string, position: number, length: number): Uint8Array {
  const out = new Uint8Array(new ArrayBuffer(length));
  let done = 0;
  while (done < length) {
    const got = readSync(fd, out, done, Math.min(length - done, 1 << 30), position + done);
    if (got === 0) throw new ModelFileError(file, `truncated file: wanted ${length} bytes at offset ${position}, got ${done}`);
    done += got;
  }
  return out;
}

function u64(view: DataView, at: number, file: string, what: string): number {
  const v = view.getBigUint64(at, true);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new ModelFileError(file, `corrupt zip: ${what} ${v} is not plausible`);
  return Number(v);
}

/** Reads the central directory. Throws ModelFileError for anything that is not a well-formed zip. */
export function readZipDirectory(fd: number, file: string, fileSize: number): Map<string, ZipEntry> {
  const bad = (why: string) => new ModelFileError(file, `corrupt or unsupported zip archive: ${why}`);
  const tailLen = Math.min(fileSize, 22 + 65535);
  const tail = readAt(fd, file, fileSize - tailLen, tailLen);
  const tv = new DataView(tail.buffer);
  let eocd = -1;
  for (let i = tailLen - 22; i >= 0; i--) {
    if (tv.getUint32(i, true) === EOCD_SIG) {
      eocd = i;
      break;
    }
  }
  if (eocd < 0) throw bad('no end-of-central-directory record (truncated download?)');
  let count = tv.getUint16(eocd + 10, true);
  let cdSize = tv.getUint32(eocd + 12, true);
  let cdOffset = tv.getUint32(eocd + 16, true);
  if (count === 0xffff || cdSize === 0xffffffff || cdOffset === 0xffffffff) {
    const locAt = eocd - 20;
    if (locAt < 0 || tv.getUint32(locAt, true) !== ZIP64_LOCATOR_SIG) throw bad('zip64 sizes without a zip64 locator');
    const z64At = u64(tv, locAt + 8, file, 'zip64 record offset');
    if (z64At + 56 > fileSize) throw bad('zip64 record lies outside the file');
    const z = new DataView(readAt(fd, file, z64At, 56).buffer);
    if (z.getUint32(0, true) !== ZIP64_EOCD_SIG) throw bad('bad zip64 end record signature');
    count = u64(z, 32, file, 'entry count');
    cdSize = u64(z, 40, file, 'directory size');
    cdOffset = u64(z, 48, file, 'directory offset');
  }
  if (count > MAX_ZIP_ENTRIES) throw bad(`${count} entries (the limit is ${MAX_ZIP_ENTRIES})`);
  if (cdOffset + cdSize > fileSize) throw bad(`central directory [${cdOffset}, ${cdOffset + cdSize}) lies outside the ${fileSize}-byte file`);
  const cd = readAt(fd, file, cdOffset, cdSize);
  const cv = new DataView(cd.buffer);
  const entries = new Map<string, ZipEntry>();
  let p = 0;
  for (let i = 0; i < count; i++) {
    if (p + 46 > cdSize || cv.getUint32(p, true) !== CENTRAL_SIG) throw bad(`central directory entry ${i} is damaged`);
    const flags = cv.getUint16(p + 8, true);
    const method = cv.getUint16(p + 10, true);
    let compressedSize = cv.getUint32(p + 20, true);
    let size = cv.getUint32(p + 24, true);
    const nameLen = cv.getUint16(p + 28, true);
    const extraLen = cv.getUint16(p + 30, true);
    const commentLen = cv.getUint16(p + 32, true);
    let localHeaderOffset = cv.getUint32(p + 42, true);
    if (p + 46 + nameLen + extraLen + commentLen > cdSize) throw bad(`central directory entry ${i} overruns the directory`);
    const name = new TextDecoder().decode(cd.subarray(p + 46, p + 46 + nameLen));
    // Zip64 extra field: the 64-bit values appear, in this order, only for the fields that are 0xffffffff.
    let e = p + 46 + nameLen;
    const extraEnd = e + extraLen;
    while (e + 4 <= extraEnd) {
      const id = cv.getUint16(e, true);
      const len = cv.getUint16(e + 2, true);
      if (id === 0x0001) {
        let q = e + 4;
        const take = (what: string) => {
          if (q + 8 > e + 4 + len) throw bad(`entry "${name}": short zip64 field`);
          const v = u64(cv, q, file, what);
          q += 8;
          return v;
        };
        if (size === 0xffffffff) size = take('size');
        if (compressedSize === 0xffffffff) compressedSize = take('compressed size');
        if (localHeaderOffset === 0xffffffff) localHeaderOffset = take('offset');
      }
      e += 4 + len;
    }
    p = extraEnd + commentLen;
    if (flags & 1) throw bad(`entry "${name}" is encrypted`);
    if (method !== 0 && method !== 8) throw bad(`entry "${name}" uses compression method ${method} (only stored and deflated are read)`);
    if (method === 0 && compressedSize !== size) throw bad(`stored entry "${name}" has different sizes (${compressedSize} vs ${size})`);
    if (localHeaderOffset + 30 + compressedSize > fileSize) throw bad(`entry "${name}" lies outside the file`);
    if (entries.has(name)) throw bad(`entry "${name}" appears twice`);
    entries.set(name, { name, method: method as 0 | 8, compressedSize, size, localHeaderOffset });
  }
  return entries;
}

/** The absolute offset of an entry's data (after its local header, whose extra field can differ from the directory's). */
export function entryDataOffset(fd: number, file: string, fileSize: number, entry: ZipEntry): number {
  const h = new DataView(readAt(fd, file, entry.localHeaderOffset, 30).buffer);
  if (h.getUint32(0, true) !== LOCAL_SIG) throw new ModelFileError(file, `corrupt zip archive: entry "${entry.name}" has no local header`);
  const start = entry.localHeaderOffset + 30 + h.getUint16(26, true) + h.getUint16(28, true);
  if (start + entry.compressedSize > fileSize) throw new ModelFileError(file, `truncated file: entry "${entry.name}" ends past the end of the file`);
  return start;
}

/** An entry's whole content (inflated if DEFLATED). */
export function readEntry(fd: number, file: string, fileSize: number, entry: ZipEntry): Uint8Array {
  const start = entryDataOffset(fd, file, fileSize, entry);
  const raw = readAt(fd, file, start, entry.compressedSize);
  if (entry.method === 0) return raw;
  if (entry.size > MAX_INFLATED_BYTES) throw new ModelFileError(file, `entry "${entry.name}" inflates to ${entry.size} bytes (limit ${MAX_INFLATED_BYTES})`);
  let out: Buffer;
  try {
    out = inflateRawSync(raw, { maxOutputLength: Math.max(1, entry.size) });
  } catch (e) {
    throw new ModelFileError(file, `corrupt zip archive: entry "${entry.name}" does not inflate (${(e as Error).message})`);
  }
  if (out.byteLength !== entry.size)
    throw new ModelFileError(file, `corrupt zip archive: entry "${entry.name}" inflates to ${out.byteLength} bytes, the directory says ${entry.size}`);
  const copy = new Uint8Array(new ArrayBuffer(out.byteLength));
  copy.set(out);
  return copy;
}
