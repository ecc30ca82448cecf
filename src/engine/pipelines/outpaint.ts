// Outpainting as inpainting on a bigger canvas (A1111's "Poor man's outpainting"): the init image, fitted to
// width x height, is padded by the margins with its edge pixels; the mask is white over the new area and reaches
// 2 x blur into the original on the grown sides, so the seam is repainted and blends.
import sharp from 'sharp';
import { KilnInputError, type GenerateRequest, type RawImage } from '../api.ts';
import { resizeImage } from '../image.ts';

/** The largest margin on one side, in pixels. */
export const MAX_OUTPAINT_MARGIN = 2048;

/** The request rewritten as an inpaint of the padded canvas. */
export async function outpaintRequest(req: GenerateRequest, latentFactor: number): Promise<GenerateRequest> {
  const o = req.outpaint!;
  if (!req.init) throw new KilnInputError('outpaint: outpainting needs an init image to extend (img2img)', 'outpaint');
  const margins = { left: o.left ?? 0, right: o.right ?? 0, top: o.top ?? 0, bottom: o.bottom ?? 0 };
  for (const [side, v] of Object.entries(margins))
    if (!Number.isInteger(v) || v < 0 || v > MAX_OUTPAINT_MARGIN)
      throw new KilnInputError(`outpaint.${side} must be an integer from 0 to ${MAX_OUTPAINT_MARGIN}`, `outpaint.${side}`);
  if (margins.left + margins.right + margins.top + margins.bottom === 0) throw new KilnInputError('outpaint: give at least one margin above 0', 'outpaint');
  const blur = o.blur ?? 4;
  if (!Number.isFinite(blur) || blur < 0 || blur > 64) throw new KilnInputError('outpaint.blur must be between 0 and 64', 'outpaint.blur');
  // Round the canvas up to the latent grid by growing the right and bottom margins.
  const roundUp = (v: number) => Math.ceil(v / latentFactor) * latentFactor;
  const width = roundUp(req.width + margins.left + margins.right);
  const height = roundUp(req.height + margins.top + margins.bottom);
  margins.right = width - req.width - margins.left;
  margins.bottom = height - req.height - margins.top;
  const fitted = await resizeImage(req.init.image, req.width, req.height);
  const { data } = await sharp(fitted.data, { raw: { width: fitted.width, height: fitted.height, channels: 3 } })
    .extend({ ...margins, extendWith: 'copy' })
    .raw()
    .toBuffer({ resolveWithObject: true });
  const canvas: RawImage = { data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength), width, height, channels: 3 };
  // Black (keep) over the original, shrunk by 2 x blur on each grown side.
  const reach = Math.round(2 * blur);
  const x1 = margins.left + (margins.left > 0 ? reach : 0);
  const x2 = margins.left + req.width - (margins.right > 0 ? reach : 0);
  const y1 = margins.top + (margins.top > 0 ? reach : 0);
  const y2 = margins.top + req.height - (margins.bottom > 0 ? reach : 0);
  const mask = new Uint8Array(width * height * 3).fill(255);
  for (let y = Math.max(0, y1); y < Math.min(height, y2); y++) mask.fill(0, (y * width + Math.max(0, x1)) * 3, (y * width + Math.min(width, x2)) * 3);
  return {
    ...req,
    width,
    height,
    outpaint: undefined,
    init: { ...req.init, image: canvas },
    mask: { image: { data: mask, width, height, channels: 3 }, blurX: blur, blurY: blur, fill: o.fill ?? 0, fullResolution: false },
  };
}
