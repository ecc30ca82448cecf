// Image encoding for results: PNG / JPEG / WebP with the A1111 `parameters` text embedded, so files made by
// Kiln open in any tool that reads A1111 infotext (PNG tEXt `parameters`, JPEG/WebP EXIF UserComment).
import sharp from 'sharp';
import type { RawImage } from '../engine/index.ts';
import { addPngText, readPngText } from './png-text.ts';
import { buildUserCommentExif, insertJpegExif, insertWebpExif, readUserComment } from './exif.ts';

export type ImageFormat = 'png' | 'jpeg' | 'webp';
export const IMAGE_FORMATS: readonly ImageFormat[] = ['png', 'jpeg', 'webp'];

export interface EncodeOptions {
  format: ImageFormat;
  /** 1-100, JPEG and WebP only (PNG is lossless). */
  quality?: number;
  /** The A1111 `parameters` text; omitted when empty. */
  infotext?: string;
}

export const CONTENT_TYPES: Record<ImageFormat, string> = { png: 'image/png', jpeg: 'image/jpeg', webp: 'image/webp' };
export const EXTENSIONS: Record<ImageFormat, string> = { png: 'png', jpeg: 'jpg', webp: 'webp' };

export async function encodeImage(img: RawImage, opts: EncodeOptions): Promise<Buffer> {
  const quality = opts.quality ?? 90;
  let pipeline = sharp(Buffer.from(img.data.buffer, img.data.byteOffset, img.data.byteLength), {
    raw: { width: img.width, height: img.height, channels: img.channels },
  });
  // JPEG has no alpha: drop it the way PIL's convert("RGB") does, as A1111 does before saving.
  if (opts.format === 'jpeg' && img.channels === 4) pipeline = pipeline.removeAlpha();
  const text = opts.infotext ?? '';
  switch (opts.format) {
    case 'png': {
      const png = await pipeline.png().toBuffer();
      return text ? addPngText(png, 'parameters', text) : png;
    }
    case 'jpeg': {
      const jpeg = await pipeline.jpeg({ quality }).toBuffer();
      return text ? insertJpegExif(jpeg, buildUserCommentExif(text)) : jpeg;
    }
    case 'webp': {
      const webp = await pipeline.webp({ quality }).toBuffer();
      return text ? insertWebpExif(webp, buildUserCommentExif(text), img.width, img.height, img.channels === 4) : webp;
    }
  }
}

/** Reads the A1111 `parameters` text back from a PNG, JPEG or WebP file (undefined when there is none). */
export async function readInfotext(file: Buffer): Promise<string | undefined> {
  if (file.subarray(1, 4).toString('latin1') === 'PNG') return readPngText(file).parameters;
  const meta = await sharp(file).metadata();
  return meta.exif ? readUserComment(meta.exif) : undefined;
}
