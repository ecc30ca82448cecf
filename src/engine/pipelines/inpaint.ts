// Inpainting around the five stages: the mask stage's pixels (mask.ts) turned into what the denoiser needs (the
// latent-size repaint mask, the 9-channel UNet's extra channels) and the paste-back after decoding.
import { KilnInputError, type GenerateRequest, type MaskSettings, type RawImage } from '../api.ts';
import { resizeImage } from '../image.ts';
import { encodeInitImage } from './initial-latent.ts';
import type { ModelSessions } from './model-sessions.ts';
import type { NoiseOverrides } from './overrides.ts';
import {
  a1111Round,
  assertSomethingToRepaint,
  binarize,
  cropPlane,
  cropRegion,
  cropResize,
  diffusersBinary,
  expandCropRegion,
  fillMasked,
  gaussianBlur,
  invertPlane,
  MASKED_CONTENT,
  maskPlane,
  nearestToLatent,
  pasteBack,
  resizePlane,
  type Plane,
} from './mask.ts';

/** The largest mask blur in pixels (A1111's slider goes to 64). */
export const MAX_MASK_BLUR = 64;

export interface PreparedInpaint {
  mode: 'a1111' | 'diffusers';
  fill: 0 | 1 | 2 | 3;
  /** The image to VAE-encode, at width x height (cropped, filled as asked). */
  image: RawImage;
  /** 1 = regenerate, at latent size (h*w). */
  repaint: Float32Array;
  /** 9-channel UNets: the pixel mask (0/255) at width x height that blanks the conditioning image. */
  condMask: Plane;
  /** A1111: the original canvas, the overlay mask and where the processed crop goes back. */
  overlay?: { original: RawImage; mask: Plane; pasteTo?: [number, number, number, number] };
  /** Infotext entries. */
  extra: [string, string | number][];
}

export async function prepareInpaint(req: GenerateRequest, latentFactor: number): Promise<PreparedInpaint> {
  const settings = req.mask!;
  const init = req.init;
  if (!init) throw new KilnInputError('mask: a mask needs an init image to repaint (img2img)', 'mask');
  const { width, height } = req;
  const mode = settings.mode ?? 'a1111';
  const fill = settings.fill ?? 0;
  const lw = width / latentFactor;
  const lh = height / latentFactor;
  const extra: [string, string | number][] = [];
  let plane = maskPlane(settings.image);
  const resized = plane.width !== init.image.width || plane.height !== init.image.height;
  if (resized) extra.push(['Mask resized from', `${plane.width}x${plane.height}`]);

  if (mode === 'diffusers') {
    plane = binarize(await resizePlane(plane, width, height), diffusersBinary);
    if (settings.invert) plane = invertPlane(plane);
    assertSomethingToRepaint(plane);
    extra.push(['Mask mode', 'diffusers']);
    return { mode, fill: 1, image: await resizeImage(init.image, width, height), repaint: nearestToLatent(plane, lw, lh), condMask: plane, extra };
  }

  const round = settings.round ?? true;
  const blurX = settings.blurX ?? 4;
  const blurY = settings.blurY ?? 4;
  if (round) plane = binarize(plane, a1111Round);
  if (settings.invert) plane = invertPlane(plane);
  assertSomethingToRepaint(plane);
  if (blurX > 0 || blurY > 0) plane = gaussianBlur(plane, blurX, blurY);
  extra.push(blurX === blurY ? ['Mask blur', blurX] : ['Mask blur x', blurX], ...(blurX === blurY ? [] : [['Mask blur y', blurY] as [string, number]]));
  extra.push(['Masked content', MASKED_CONTENT[fill]]);

  let image: RawImage;
  let mask: Plane;
  let overlay: PreparedInpaint['overlay'];
  if (settings.fullResolution) plane = await resizePlane(plane, init.image.width, init.image.height);
  const crop = settings.fullResolution ? cropRegion(plane, settings.padding ?? 0) : undefined;
  if (crop) {
    // "Only masked": work on a crop around the mask at width x height, paste it back onto the full-size original.
    const box = expandCropRegion(crop, width, height, init.image.width, init.image.height);
    const original = await resizeImage(init.image, init.image.width, init.image.height);
    image = await cropResize(original, box, width, height);
    mask = await resizePlane(cropPlane(plane, box), width, height);
    overlay = { original, mask: plane, pasteTo: box };
    extra.push(['Inpaint area', 'Only masked'], ['Only masked padding, pixels', settings.padding ?? 0]);
  } else {
    image = await resizeImage(init.image, width, height);
    mask = await resizePlane(plane, width, height);
    // The overlay edge is doubled and hardened (A1111 without "Only masked").
    overlay = { original: image, mask: { ...mask, data: mask.data.map((v) => Math.min(255, v * 2)) } };
  }
  if (fill === 0) image = fillMasked(image, mask);
  const latent = await resizePlane(mask, lw, lh, 'cubic');
  const repaint = latent.data.map((v) => (round ? Math.round(v / 255) : v / 255));
  const condMask = round ? binarize(mask, (v) => v / 255 >= 0.5) : mask;
  return { mode, fill, image, repaint, condMask, overlay, extra };
}

/** The pixels a 9-channel UNet is conditioned on: the image with the masked area set to 0 (mid-grey), as [1,3,H,W]. */
export function maskedImagePixels(image: RawImage, condMask: Plane): { shape: number[]; data: Float32Array } {
  const plane = image.width * image.height;
  const data = new Float32Array(3 * plane);
  for (let p = 0; p < plane; p++) {
    const keep = condMask.data[p]! / 255 < 0.5 ? 1 : 0;
    for (let c = 0; c < 3; c++) data[c * plane + p] = ((image.data[p * image.channels + c]! / 255) * 2 - 1) * keep;
  }
  return { shape: [1, 3, image.height, image.width], data };
}

/** 9-channel UNet extra channels per image: [mask (1), masked-image latent (4)], [count, 5, h, w]. */
export function inpaintChannels(maskLatent: Float32Array, maskedLatent: Float32Array, count: number): Float32Array {
  const plane = maskLatent.length;
  const perLatent = maskedLatent.length / count;
  const out = new Float32Array(count * (plane + perLatent));
  for (let i = 0; i < count; i++) {
    out.set(maskLatent, i * (plane + perLatent));
    out.set(maskedLatent.subarray(i * perLatent, (i + 1) * perLatent), i * (plane + perLatent) + plane);
  }
  return out;
}

/** After decoding: A1111 pastes each result back onto the original; diffusers returns it as it is. */
export async function finishInpaint(images: RawImage[], prep: PreparedInpaint): Promise<RawImage[]> {
  const overlay = prep.overlay;
  if (!overlay) return images;
  return Promise.all(images.map((img) => pasteBack(img, overlay.original, overlay.mask, overlay.pasteTo)));
}

export function validateMask(m: MaskSettings): void {
  const { width, height, channels, data } = m.image;
  if (!Number.isInteger(width) || !Number.isInteger(height) || width < 1 || height < 1 || data.length !== width * height * channels)
    throw new KilnInputError('mask: the mask image data does not match its size', 'mask');
  for (const [name, v] of [
    ['mask_blur_x', m.blurX],
    ['mask_blur_y', m.blurY],
  ] as const)
    if (v !== undefined && (!Number.isFinite(v) || v < 0 || v > MAX_MASK_BLUR))
      throw new KilnInputError(`${name} must be between 0 and ${MAX_MASK_BLUR}`, name);
  if (m.fill !== undefined && ![0, 1, 2, 3].includes(m.fill)) throw new KilnInputError('inpainting_fill must be 0, 1, 2 or 3', 'inpainting_fill');
  if (m.padding !== undefined && (!Number.isInteger(m.padding) || m.padding < 0 || m.padding > 4096))
    throw new KilnInputError('inpaint_full_res_padding must be an integer between 0 and 4096', 'inpaint_full_res_padding');
  if (m.mode !== undefined && m.mode !== 'a1111' && m.mode !== 'diffusers') throw new KilnInputError('mask_mode must be "a1111" or "diffusers"', 'mask_mode');
}

/**
 * A 9-channel UNet's extra channels: the mask at latent size and the latent of the image with the masked area
 * blanked. Without a mask (txt2img on an inpainting model) everything is masked: an all-ones mask and a blank image.
 */
export async function inpaintConcat(
  ms: ModelSessions,
  req: GenerateRequest,
  inpaint: PreparedInpaint | undefined,
  count: number,
  shape: [number, number, number],
  noise: { next(): Float32Array },
  overrides: NoiseOverrides,
): Promise<{ channels: number; data: Float32Array }> {
  const [c, h, w] = shape;
  const plane = inpaint ? inpaint.condMask : { data: new Float32Array(req.width * req.height).fill(255), width: req.width, height: req.height };
  const image = inpaint?.image ?? { data: new Uint8Array(req.width * req.height * 3), width: req.width, height: req.height, channels: 3 as const };
  const pixels = maskedImagePixels(image, plane);
  const latent = await encodeInitImage(ms, pixels, count, overrides.maskedImageSampleNoise ?? noise.next(), req.tiling);
  return { channels: 1 + c, data: inpaintChannels(nearestToLatent(plane, w, h), latent, count) };
}
