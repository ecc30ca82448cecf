// A minimal EXIF writer/reader for one tag: UserComment, which is where A1111 stores the `parameters` text in
// JPEG and WebP files (as "UNICODE\0" + UTF-16). libvips only writes ASCII UserComments (it transliterates
// everything else), so we build the TIFF blob ourselves and splice it into the JPEG / WebP container.

const EXIF_IFD_POINTER = 0x8769;
const USER_COMMENT = 0x9286;
const TYPE_LONG = 4;
const TYPE_UNDEFINED = 7;
const EXIF_HEADER = Buffer.from('Exif\0\0', 'latin1');

function utf16be(text: string): Buffer {
  const le = Buffer.from(text, 'utf16le');
  for (let i = 0; i + 1 < le.length; i += 2) {
    const t = le[i];
    le[i] = le[i + 1]!;
    le[i + 1] = t!;
  }
  return le;
}

/** A big-endian TIFF blob: IFD0 -> Exif IFD -> UserComment("UNICODE\0" + UTF-16BE text). */
export function buildUserCommentExif(text: string): Buffer {
  const comment = Buffer.concat([Buffer.from('UNICODE\0', 'latin1'), utf16be(text)]);
  const ifd0 = 8;
  const exifIfd = ifd0 + 2 + 12 + 4;
  const dataAt = exifIfd + 2 + 12 + 4;
  const out = Buffer.alloc(dataAt + comment.length);
  out.write('MM', 0, 'latin1');
  out.writeUInt16BE(42, 2);
  out.writeUInt32BE(ifd0, 4);
  out.writeUInt16BE(1, ifd0);
  out.writeUInt16BE(EXIF_IFD_POINTER, ifd0 + 2);
  out.writeUInt16BE(TYPE_LONG, ifd0 + 4);
  out.writeUInt32BE(1, ifd0 + 6);
  out.writeUInt32BE(exifIfd, ifd0 + 10);
  out.writeUInt32BE(0, ifd0 + 14);
  out.writeUInt16BE(1, exifIfd);
  out.writeUInt16BE(USER_COMMENT, exifIfd + 2);
  out.writeUInt16BE(TYPE_UNDEFINED, exifIfd + 4);
  out.writeUInt32BE(comment.length, exifIfd + 6);
  out.writeUInt32BE(dataAt, exifIfd + 10);
  out.writeUInt32BE(0, exifIfd + 14);
  comment.copy(out, dataAt);
  return out;
}

/** Reads UserComment from a TIFF blob (optionally prefixed with "Exif\0\0", as sharp's metadata().exif is). */
export function readUserComment(exif: Uint8Array): string | undefined {
  let buf = Buffer.from(exif.buffer, exif.byteOffset, exif.byteLength);
  if (buf.subarray(0, 6).equals(EXIF_HEADER)) buf = buf.subarray(6);
  if (buf.length < 8) return undefined;
  const order = buf.toString('latin1', 0, 2);
  if (order !== 'MM' && order !== 'II') return undefined;
  const be = order === 'MM';
  const u16 = (o: number) => (be ? buf.readUInt16BE(o) : buf.readUInt16LE(o));
  const u32 = (o: number) => (be ? buf.readUInt32BE(o) : buf.readUInt32LE(o));
  const findEntry = (ifd: number, tag: number): number | undefined => {
    if (ifd + 2 > buf.length) return undefined;
    const n = u16(ifd);
    for (let i = 0; i < n; i++) {
      const e = ifd + 2 + 12 * i;
      if (e + 12 > buf.length) return undefined;
      if (u16(e) === tag) return e;
    }
    return undefined;
  };
  const pointer = findEntry(u32(4), EXIF_IFD_POINTER);
  if (pointer === undefined) return undefined;
  const entry = findEntry(u32(pointer + 8), USER_COMMENT);
  if (entry === undefined) return undefined;
  const count = u32(entry + 4);
  const at = count <= 4 ? entry + 8 : u32(entry + 8);
  if (at + count > buf.length || count < 8) return undefined;
  const prefix = buf.toString('latin1', at, at + 8);
  const body = Buffer.from(buf.subarray(at + 8, at + count));
  if (prefix === 'UNICODE\0') {
    if (be) for (let i = 0; i + 1 < body.length; i += 2) [body[i], body[i + 1]] = [body[i + 1]!, body[i]!];
    return body.toString('utf16le');
  }
  return body.toString(prefix.startsWith('ASCII') ? 'latin1' : 'utf8').replace(/\0+$/, '');
}

/** Inserts an APP1 Exif segment after SOI (and after a JFIF APP0 segment, which must stay first). */
export function insertJpegExif(jpeg: Uint8Array, tiff: Buffer): Buffer {
  const buf = Buffer.from(jpeg.buffer, jpeg.byteOffset, jpeg.byteLength);
  if (buf[0] !== 0xff || buf[1] !== 0xd8) throw new Error('insertJpegExif: input is not a JPEG file');
  const payload = Buffer.concat([EXIF_HEADER, tiff]);
  if (payload.length + 2 > 0xffff) throw new Error('insertJpegExif: metadata is too large for one JPEG APP1 segment');
  let at = 2;
  if (buf[2] === 0xff && buf[3] === 0xe0) at = 4 + buf.readUInt16BE(4);
  const head = Buffer.from([0xff, 0xe1, 0, 0]);
  head.writeUInt16BE(payload.length + 2, 2);
  return Buffer.concat([buf.subarray(0, at), head, payload, buf.subarray(at)]);
}

function riffChunk(fourcc: string, data: Buffer): Buffer {
  const head = Buffer.alloc(8);
  head.write(fourcc, 0, 'latin1');
  head.writeUInt32LE(data.length, 4);
  return Buffer.concat([head, data, data.length % 2 ? Buffer.alloc(1) : Buffer.alloc(0)]);
}

/**
 * Adds an EXIF chunk to a WebP file. A simple (VP8 / VP8L) file is first turned into the extended format,
 * whose VP8X header carries the "has EXIF" flag and the canvas size.
 */
export function insertWebpExif(webp: Uint8Array, tiff: Buffer, width: number, height: number, hasAlpha: boolean): Buffer {
  const buf = Buffer.from(webp.buffer, webp.byteOffset, webp.byteLength);
  if (buf.toString('latin1', 0, 4) !== 'RIFF' || buf.toString('latin1', 8, 12) !== 'WEBP') {
    throw new Error('insertWebpExif: input is not a WebP file');
  }
  let chunks = buf.subarray(12);
  if (chunks.toString('latin1', 0, 4) === 'VP8X') {
    const flags = Buffer.from(chunks);
    flags[8]! |= 0x08;
    chunks = flags;
  } else {
    const vp8x = Buffer.alloc(10);
    vp8x[0] = 0x08 | (hasAlpha && chunks.toString('latin1', 0, 4) === 'VP8L' ? 0x10 : 0);
    vp8x.writeUIntLE(width - 1, 4, 3);
    vp8x.writeUIntLE(height - 1, 7, 3);
    chunks = Buffer.concat([riffChunk('VP8X', vp8x), chunks]);
  }
  const body = Buffer.concat([Buffer.from('WEBP', 'latin1'), chunks, riffChunk('EXIF', tiff)]);
  const head = Buffer.alloc(8);
  head.write('RIFF', 0, 'latin1');
  head.writeUInt32LE(body.length, 4);
  return Buffer.concat([head, body]);
}
