// Stored input images (img2img), loaded back as RawImage when the job runs. The server validated and stored
// them at submission (its uploads module).
import sharp from 'sharp';
import type { RawImage } from '../engine/index.ts';
import type { ImageStore } from '../storage/image-store.ts';
import { SpecError } from './job-spec.ts';

/** A stored input as an RGB RawImage (alpha dropped, as A1111 does for init images). */
export async function loadInputImage(name: string, store: ImageStore): Promise<RawImage> {
  const bytes = await store.read(name);
  if (!bytes) throw new SpecError('init_image', `the stored input ${name} is gone (expired or deleted)`);
  const { data, info } = await sharp(bytes).removeAlpha().raw().toBuffer({ resolveWithObject: true });
  return { data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength), width: info.width, height: info.height, channels: 3 };
}

/** A stored mask: RGBA when it has an alpha channel (the engine reads a non-opaque alpha as the mask), else RGB. */
export async function loadMaskImage(name: string, store: ImageStore): Promise<RawImage> {
  const bytes = await store.read(name);
  if (!bytes) throw new SpecError('mask', `the stored mask ${name} is gone (expired or deleted)`);
  const { data, info } = await sharp(bytes).raw().toBuffer({ resolveWithObject: true });
  const raw = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  if (info.channels === 3 || info.channels === 4) return { data: raw, width: info.width, height: info.height, channels: info.channels };
  // Greyscale: spread the grey value over RGB (as PIL's convert('RGB')), keeping an alpha channel if there is one.
  const out = info.channels === 2 ? 4 : 3;
  const rgb = new Uint8Array(info.width * info.height * out);
  for (let p = 0; p < info.width * info.height; p++) {
    rgb.fill(raw[p * info.channels]!, p * out, p * out + 3);
    if (out === 4) rgb[p * 4 + 3] = raw[p * 2 + 1]!;
  }
  return { data: rgb, width: info.width, height: info.height, channels: out };
}
