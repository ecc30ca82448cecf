// Conversions between the VAE's float tensors and 8-bit images.
import sharp from 'sharp';
import type { RawImage } from './api.ts';
import type { Tensor } from './tensor.ts';

/**
 * VAE output [B,3,H,W] in about [-1,1] -> one RGB image per batch item, as diffusers does:
 * clamp(x/2 + 0.5, 0, 1) * 255, rounded; or truncated, as A1111 does (`astype(np.uint8)`).
 */
export function decodedToImages(decoded: Tensor, toByte: 'round' | 'truncate' = 'round'): RawImage[] {
  const quantize = toByte === 'truncate' ? Math.trunc : Math.round;
  const [batch, channels, height, width] = decoded.shape as [number, number, number, number];
  const plane = height * width;
  const images: RawImage[] = [];
  for (let n = 0; n < batch; n++) {
    const data = new Uint8Array(plane * 3);
    const base = n * channels * plane;
    for (let c = 0; c < 3; c++) {
      const src = base + c * plane;
      for (let p = 0; p < plane; p++) {
        const v = decoded.data[src + p]! * 0.5 + 0.5;
        data[p * 3 + c] = quantize(Math.min(1, Math.max(0, v)) * 255);
      }
    }
    images.push({ data, width, height, channels: 3 });
  }
  return images;
}

/** The [0,1] NHWC float view diffusers returns with output_type="np" (used to compare with references). */
export function decodedToUnitNhwc(decoded: Tensor): Tensor {
  const [batch, channels, height, width] = decoded.shape as [number, number, number, number];
  const plane = height * width;
  const out = new Float32Array(batch * plane * 3);
  for (let n = 0; n < batch; n++)
    for (let c = 0; c < 3; c++)
      for (let p = 0; p < plane; p++) {
        const v = decoded.data[(n * channels + c) * plane + p]! / 2 + 0.5;
        out[(n * plane + p) * 3 + c] = Math.min(1, Math.max(0, v));
      }
  return { shape: [batch, height, width, 3], data: out };
}

/** An image as the VAE encoder wants it: [1,3,H,W] in [-1,1]. Alpha, if any, is dropped. */
export function imageToTensor(img: RawImage): Tensor {
  const { width, height, channels } = img;
  const plane = width * height;
  const data = new Float32Array(3 * plane);
  for (let p = 0; p < plane; p++) for (let c = 0; c < 3; c++) data[c * plane + p] = (img.data[p * channels + c]! / 255) * 2 - 1;
  return { shape: [1, 3, height, width], data };
}

/**
 * Fits an init image to the requested size the way A1111's default "Just resize" does (Lanczos scaling,
 * aspect ratio not kept), and drops alpha.
 */
export async function resizeImage(img: RawImage, width: number, height: number): Promise<RawImage> {
  if (img.width === width && img.height === height && img.channels === 3) return img;
  const { data, info } = await sharp(img.data, { raw: { width: img.width, height: img.height, channels: img.channels } })
    .removeAlpha()
    .resize(width, height, { fit: 'fill', kernel: 'lanczos3' })
    .raw()
    .toBuffer({ resolveWithObject: true });
  return { data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength), width: info.width, height: info.height, channels: 3 };
}
