// Uploaded input images (img2img) as the server receives them: base64 / data: URI fields decoded with a size
// check before decoding, then validated with a pixel limit (no decompression bombs) and re-encoded as PNG into
// the image store. The executor loads them back when the job runs (src/queue/inputs.ts).
import { randomUUID } from 'node:crypto';
import sharp, { type Metadata } from 'sharp';
import type { Limits } from '../queue/config.ts';
import { SpecError } from '../queue/job-spec.ts';
import type { ImageStore } from '../storage/image-store.ts';

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
export async function storeInputImage(bytes: Buffer, store: ImageStore, limits: Limits, field = 'init_image'): Promise<string> {
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
  await store.write(name, png);
  return name;
}
