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
