// Uploaded input images (img2img): size-checked, decoded with a pixel limit (no decompression bombs),
// re-encoded as PNG into storage, and loaded back as RawImage when the job runs.
import { randomUUID } from 'node:crypto';
import sharp, { type Metadata } from 'sharp';
import type { RawImage } from '../engine/index.ts';
import type { Limits } from '../server/config.ts';
import type { LocalStorage } from '../storage/local.ts';
import { SpecError } from './job-spec.ts';

const ACCEPTED = new Set(['png', 'jpeg', 'webp']);

/** base64 or a data: URI -> bytes; throws SpecError naming `field` when it is not valid base64. */
export function decodeBase64Field(value: string, field: string, limits: Limits): Buffer {
  const comma = value.startsWith('data:') ? value.indexOf(',') : -1;
  if (value.startsWith('data:') && (comma < 0 || !value.slice(0, comma).endsWith(';base64'))) {
    throw new SpecError(field, 'data: URI must be base64-encoded (data:image/png;base64,...)');
  }
  const b64 = (comma >= 0 ? value.slice(comma + 1) : value).replace(/\s+/g, '');
  if (!/^[A-Za-z0-9+/_-]*={0,2}$/.test(b64) || b64.length === 0) throw new SpecError(field, 'is not valid base64');
  // Check the size before decoding so a huge string is refused without allocating its decoded copy.
  const approx = Math.floor((b64.length * 3) / 4);
  if (approx > limits.uploadBytes) throw new SpecError(field, `is about ${approx} bytes; the upload limit is ${limits.uploadBytes} bytes`);
  return Buffer.from(b64, 'base64');
}

/** Validates an uploaded image and stores it as PNG; returns the stored name. */
export async function storeInputImage(bytes: Buffer, storage: LocalStorage, limits: Limits, field = 'init_image'): Promise<string> {
  if (bytes.length > limits.uploadBytes) throw new SpecError(field, `is ${bytes.length} bytes; the upload limit is ${limits.uploadBytes} bytes`);
  let meta: Metadata;
  try {
    meta = await sharp(bytes, { limitInputPixels: limits.maxDecodedPixels }).metadata();
  } catch {
    throw new SpecError(field, 'is not a readable image; send a PNG, JPEG or WebP file');
  }
  if (!meta.format || !ACCEPTED.has(meta.format)) throw new SpecError(field, `has format ${meta.format ?? 'unknown'}; send a PNG, JPEG or WebP file`);
  const w = meta.width ?? 0;
  const h = meta.height ?? 0;
  if (w * h > limits.maxDecodedPixels || w === 0 || h === 0) {
    throw new SpecError(field, `is ${w}x${h} = ${w * h} pixels; the limit is ${limits.maxDecodedPixels}`);
  }
  let png: Buffer;
  try {
    png = await sharp(bytes, { limitInputPixels: limits.maxDecodedPixels, failOn: 'error' }).rotate().png().toBuffer();
  } catch (e) {
    throw new SpecError(field, `could not be decoded: ${(e as Error).message}`);
  }
  const name = `input-${randomUUID()}.png`;
  await storage.write(name, png);
  return name;
}

/** A stored input as an RGB RawImage (alpha dropped, as A1111 does for init images). */
export async function loadInputImage(name: string, storage: LocalStorage): Promise<RawImage> {
  const bytes = await storage.read(name);
  if (!bytes) throw new SpecError('init_image', `the stored input ${name} is gone (expired or deleted)`);
  const { data, info } = await sharp(bytes).removeAlpha().raw().toBuffer({ resolveWithObject: true });
  return { data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength), width: info.width, height: info.height, channels: 3 };
}
