// A1111's "Extras" upscale (scripts/postprocessing_upscale.py): upscaler 1 by a factor or to a size (optionally
// centre-cropped to it), and an optional upscaler 2 blended over it with Image.blend at a visibility.
import { KilnInputError, type RawImage } from '../api.ts';
import { PIL_UPSCALERS, upscalerUpscale, type UpscaleStep } from './a1111-resize.ts';
import { pilPaste, pilResize } from './pil-resize.ts';
import { A1111_TILE, A1111_TILE_OVERLAP, upscaleWithModel } from './upscale-image.ts';
import { openUpscaler, type UpscalerSettings } from './upscaler-model.ts';

export interface UpscalerChoice {
  /** "None", "Lanczos", "Nearest" or a model upscaler's name. */
  name: string;
  /** The weights file of a model upscaler. */
  path?: string;
}

export interface UpscaleRequest {
  image: RawImage;
  /** 0 = by `scale` (upscaling_resize), 1 = to width x height (upscaling_resize_w/h). */
  mode: 0 | 1;
  scale?: number;
  width?: number;
  height?: number;
  /** Mode 1: centre-crop the result to exactly width x height (upscaling_crop). */
  crop?: boolean;
  upscaler1: UpscalerChoice;
  upscaler2?: UpscalerChoice;
  /** extras_upscaler_2_visibility, 0..1. */
  upscaler2Visibility?: number;
  /** A1111's ESRGAN_tile / ESRGAN_tile_overlap (0 = untiled). */
  tile?: number;
  tileOverlap?: number;
}

export interface UpscaleResult {
  image: RawImage;
  /** A1111's "Postprocess ..." parameters, in its order. */
  info: Record<string, string>;
}

/** Largest output side, so a request cannot ask for unbounded memory. */
export const MAX_UPSCALE_SIDE = 16384;

function toRgb(img: RawImage): RawImage {
  return img.channels === 3 ? img : pilResize(img, img.width, img.height, 'lanczos');
}

export async function extrasUpscale(req: UpscaleRequest, settings: UpscalerSettings, onProgress?: (fraction: number) => void): Promise<UpscaleResult> {
  const image = toRgb(req.image);
  const info: Record<string, string> = {};
  const by = req.mode === 1 ? Math.max((req.width ?? 0) / image.width, (req.height ?? 0) / image.height) : (req.scale ?? 2);
  if (!(by > 0) || !Number.isFinite(by))
    throw new KilnInputError(`the upscale factor must be above 0, got ${by}`, req.mode === 1 ? 'upscaling_resize_w' : 'upscaling_resize');
  if (image.width * by > MAX_UPSCALE_SIDE || image.height * by > MAX_UPSCALE_SIDE) {
    throw new KilnInputError(
      `the upscaled image would exceed ${MAX_UPSCALE_SIDE} pixels on a side`,
      req.mode === 1 ? 'upscaling_resize_w' : 'upscaling_resize',
    );
  }
  if (req.mode === 1) info['Postprocess upscale to'] = `${req.width}x${req.height}`;
  else info['Postprocess upscale by'] = String(by);
  if (req.upscaler1.name === 'None') return { image, info: {} };
  const run = async (choice: UpscalerChoice, part: number, parts: number) => {
    const step = await upscaleStep(choice, settings, req, (f) => onProgress?.((part + f) / parts));
    let out = await upscalerUpscale(image, by, step);
    if (req.mode === 1 && req.crop) {
      const w = req.width ?? out.width;
      const h = req.height ?? out.height;
      const cropped: RawImage = { data: new Uint8Array(w * h * 3), width: w, height: h, channels: 3 };
      pilPaste(cropped, out, Math.floor(w / 2) - Math.floor(out.width / 2), Math.floor(h / 2) - Math.floor(out.height / 2));
      out = cropped;
    }
    return out;
  };
  const second = req.upscaler2 && req.upscaler2.name !== 'None' && (req.upscaler2Visibility ?? 0) > 0 ? req.upscaler2 : undefined;
  const parts = second ? 2 : 1;
  let result = await run(req.upscaler1, 0, parts);
  if (req.mode === 1 && req.crop) info['Postprocess crop to'] = `${result.width}x${result.height}`;
  info['Postprocess upscaler'] = req.upscaler1.name;
  if (second) {
    result = blend(result, await run(second, 1, parts), req.upscaler2Visibility!);
    info['Postprocess upscaler 2'] = second.name;
  }
  onProgress?.(1);
  return { image: result, info };
}

/** Do_upscale of one upscaler: Lanczos/Nearest resizes, or the model with A1111's tiling. */
async function upscaleStep(choice: UpscalerChoice, settings: UpscalerSettings, req: UpscaleRequest, onTile: (f: number) => void): Promise<UpscaleStep> {
  if (choice.name === 'Lanczos' || choice.name === 'Nearest') return PIL_UPSCALERS[choice.name];
  if (!choice.path) throw new KilnInputError(`unknown upscaler "${choice.name}"`, 'upscaler_1');
  const model = await openUpscaler(choice.path, settings);
  return (img) => upscaleWithModel(model.run, img, req.tile ?? A1111_TILE, req.tileOverlap ?? A1111_TILE_OVERLAP, (done, total) => onTile(done / total));
}

/** Pillow's Image.blend: out = (uint8)(a + alpha * (b - a)), truncated, per channel (sizes as A1111 ensures). */
function blend(a: RawImage, b: RawImage, alpha: number): RawImage {
  const bb = b.width === a.width && b.height === a.height ? b : pilResize(b, a.width, a.height, 'lanczos');
  const f = Math.fround(alpha);
  const data = new Uint8Array(a.data.length);
  for (let i = 0; i < data.length; i++) data[i] = Math.trunc(Math.fround(a.data[i]! + Math.fround(f * (bb.data[i]! - a.data[i]!))));
  return { ...a, data };
}
