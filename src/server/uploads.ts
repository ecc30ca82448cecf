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
  const png = await validatedPng(bytes, limits, field);
  const name = `input-${randomUUID()}.png`;
  await store.write(name, png);
  return name;
}

export interface MaskUploadOptions {
  /** OpenAI's convention: fully transparent pixels are the ones to repaint (stored as white on black). */
  transparentRepaints?: boolean;
  /** The request inverts the mask, so an all-white mask is the empty one. */
  invert?: boolean;
}

/**
 * Validates an uploaded inpainting mask and stores it as PNG: white (or, for RGBA with real alpha, opaque) =
 * repaint, as A1111 reads masks. A mask with nothing to repaint is refused here, naming the field, rather than
 * failing the job later.
 */
export async function storeMaskImage(bytes: Buffer, store: ImageStore, limits: Limits, field: string, opts: MaskUploadOptions = {}): Promise<string> {
  let png = await validatedPng(bytes, limits, field);
  const { data, info } = await sharp(png).ensureAlpha().raw().toBuffer({ resolveWithObject: true });
  const n = info.width * info.height;
  const grey = new Uint8Array(n);
  let hasAlpha = false;
  for (let p = 0; p < n && !hasAlpha; p++) hasAlpha = data[p * 4 + 3]! !== 255;
  for (let p = 0; p < n; p++) {
    const i = p * 4;
    if (opts.transparentRepaints) grey[p] = data[i + 3]! < 128 ? 255 : 0;
    else grey[p] = hasAlpha ? data[i + 3]! : Math.round(data[i]! * 0.299 + data[i + 1]! * 0.587 + data[i + 2]! * 0.114);
  }
  // A1111 rounds masks at 128: nothing above it (below it, when inverted) means nothing to repaint.
  const repaints = opts.invert ? grey.some((v) => v <= 128) : grey.some((v) => v > 128);
  if (!repaints) {
    const what = opts.transparentRepaints ? 'has no transparent pixels' : opts.invert ? 'is all white and inverted' : 'is all black';
    throw new SpecError(field, `${what}, so nothing would be repainted; mark the area to regenerate ${opts.transparentRepaints ? 'transparent' : 'white'}`);
  }
  if (opts.transparentRepaints)
    png = await sharp(grey, { raw: { width: info.width, height: info.height, channels: 1 } })
      .png()
      .toBuffer();
  const name = `input-${randomUUID()}.png`;
  await store.write(name, png);
  return name;
}

async function validatedPng(bytes: Buffer, limits: Limits, field: string): Promise<Buffer> {
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
  try {
    return await sharp(bytes, { limitInputPixels: limits.maxDecodedPixels, failOn: 'error' }).rotate().png().toBuffer();
  } catch (e) {
    throw new SpecError(field, `could not be decoded: ${(e as Error).message}`);
  }
}
