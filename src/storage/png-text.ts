// PNG text chunks (tEXt / iTXt), written and read directly in the PNG byte stream.
// sharp cannot write arbitrary text chunks, and A1111-compatible tools look for a `parameters` chunk, so we
// splice one in right after IHDR. Layout per the PNG spec: length(4, BE) | type(4) | data | CRC32(type+data).

const PNG_SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

const CRC_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

/** CRC-32 as used by PNG (ISO 3309 polynomial, reflected, init and final xor 0xffffffff). */
export function crc32(bytes: Uint8Array): number {
  let c = 0xffffffff;
  for (let i = 0; i < bytes.length; i++) c = CRC_TABLE[(c ^ bytes[i]!) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function isPng(png: Uint8Array): boolean {
  return png.length >= 8 && Buffer.from(png.subarray(0, 8)).equals(PNG_SIGNATURE);
}

function makeChunk(type: string, data: Buffer): Buffer {
  const head = Buffer.alloc(8);
  head.writeUInt32BE(data.length, 0);
  head.write(type, 4, 'latin1');
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(Buffer.concat([head.subarray(4), data])), 0);
  return Buffer.concat([head, data, crc]);
}

function isLatin1(text: string): boolean {
  // eslint-disable-next-line no-control-regex
  // biome-ignore lint/suspicious/noControlCharactersInRegex: the check is exactly "every code point fits Latin-1", control characters included
  return /^[\u0000-\u00ff]*$/.test(text);
}

/**
 * Returns a copy of `png` with a text chunk inserted after IHDR: tEXt when the text is Latin-1 (what PIL and
 * A1111 write), otherwise an uncompressed iTXt holding UTF-8.
 */
export function addPngText(png: Uint8Array, keyword: string, text: string): Buffer {
  if (!isPng(png)) throw new Error('addPngText: input is not a PNG file');
  if (!/^[\x20-\x7e]{1,79}$/.test(keyword)) throw new Error(`addPngText: invalid keyword ${JSON.stringify(keyword)}`);
  const buf = Buffer.from(png.buffer, png.byteOffset, png.byteLength);
  const ihdrLength = buf.readUInt32BE(8);
  const afterIhdr = 8 + 12 + ihdrLength;
  const chunk = isLatin1(text)
    ? makeChunk('tEXt', Buffer.concat([Buffer.from(keyword, 'latin1'), Buffer.from([0]), Buffer.from(text, 'latin1')]))
    : makeChunk(
        'iTXt',
        // keyword \0 compression-flag(0) compression-method(0) language-tag \0 translated-keyword \0 text
        Buffer.concat([Buffer.from(keyword, 'latin1'), Buffer.from([0, 0, 0, 0, 0]), Buffer.from(text, 'utf8')]),
      );
  return Buffer.concat([buf.subarray(0, afterIhdr), chunk, buf.subarray(afterIhdr)]);
}

/** Reads every uncompressed tEXt / iTXt chunk (keyword -> text). Chunks with a bad CRC are rejected. */
export function readPngText(png: Uint8Array): Record<string, string> {
  if (!isPng(png)) throw new Error('readPngText: input is not a PNG file');
  const buf = Buffer.from(png.buffer, png.byteOffset, png.byteLength);
  const out: Record<string, string> = {};
  let pos = 8;
  while (pos + 12 <= buf.length) {
    const length = buf.readUInt32BE(pos);
    const type = buf.toString('latin1', pos + 4, pos + 8);
    const dataEnd = pos + 8 + length;
    if (dataEnd + 4 > buf.length) throw new Error(`readPngText: chunk ${type} runs past the end of the file`);
    const data = buf.subarray(pos + 8, dataEnd);
    if (type === 'tEXt' || type === 'iTXt') {
      const storedCrc = buf.readUInt32BE(dataEnd);
      if (crc32(buf.subarray(pos + 4, dataEnd)) !== storedCrc) throw new Error(`readPngText: bad CRC in ${type} chunk`);
      const nul = data.indexOf(0);
      const keyword = data.toString('latin1', 0, nul);
      if (type === 'tEXt') out[keyword] = data.toString('latin1', nul + 1);
      else if (data[nul + 1] === 0) {
        // Skip the compression flag and method, then the language tag and translated keyword (both NUL-terminated).
        const langEnd = data.indexOf(0, nul + 3);
        const transEnd = data.indexOf(0, langEnd + 1);
        out[keyword] = data.toString('utf8', transEnd + 1);
      }
    }
    if (type === 'IEND') break;
    pos = dataEnd + 4;
  }
  return out;
}
