// transformers' CLIPImageProcessor (4.26) step by step: shortest edge to `shortestEdge` with a Pillow BICUBIC
// resize of the uint8 image (long side = int(edge * long / short)), a centre crop (top = (H - crop) // 2), then
// float32(u8 * (1/255)) and (x - mean) / std in float32, channels first.
import type { RawImage } from '../api.ts';
import type { Tensor } from '../tensor.ts';
import { pilResize, type PilFilter } from './pil-resize.ts';

export interface ClipImageProcessing {
  shortestEdge: number;
  cropHeight: number;
  cropWidth: number;
  mean: [number, number, number];
  std: [number, number, number];
  /** PIL resample id from preprocessor_config.json: 3 = BICUBIC (CLIP's), 2 = BILINEAR, 1 = LANCZOS, 0 = NEAREST. */
  resample: number;
  rescaleFactor: number;
}

/** OpenAI CLIP's normalisation (and OpenCLIP's for its OpenAI-style trainings). */
export const OPENAI_CLIP_MEAN: [number, number, number] = [0.48145466, 0.4578275, 0.40821073];
export const OPENAI_CLIP_STD: [number, number, number] = [0.26862954, 0.26130258, 0.27577711];

/** The processor of every released CLIP at a given input size, when a model ships no preprocessor_config.json. */
export function defaultClipProcessing(imageSize: number): ClipImageProcessing {
  return {
    shortestEdge: imageSize,
    cropHeight: imageSize,
    cropWidth: imageSize,
    mean: OPENAI_CLIP_MEAN,
    std: OPENAI_CLIP_STD,
    resample: 3,
    rescaleFactor: 1 / 255,
  };
}

/** Reads a CLIPImageProcessor preprocessor_config.json (older files give size/crop_size as plain numbers). */
export function clipProcessingFromConfig(json: Record<string, unknown>, imageSize: number): ClipImageProcessing {
  const d = defaultClipProcessing(imageSize);
  const size = json.size;
  const crop = json.crop_size;
  const num = (v: unknown, fallback: number) => (typeof v === 'number' && Number.isFinite(v) && v > 0 ? v : fallback);
  const triple = (v: unknown, fallback: [number, number, number]): [number, number, number] =>
    Array.isArray(v) && v.length === 3 && v.every((x) => typeof x === 'number') ? (v as [number, number, number]) : fallback;
  const edge = typeof size === 'object' && size !== null ? num((size as Record<string, unknown>).shortest_edge, d.shortestEdge) : num(size, d.shortestEdge);
  const cropObj = typeof crop === 'object' && crop !== null ? (crop as Record<string, unknown>) : undefined;
  return {
    shortestEdge: edge,
    cropHeight: cropObj ? num(cropObj.height, d.cropHeight) : num(crop, d.cropHeight),
    cropWidth: cropObj ? num(cropObj.width, d.cropWidth) : num(crop, d.cropWidth),
    mean: triple(json.image_mean, d.mean),
    std: triple(json.image_std, d.std),
    resample: typeof json.resample === 'number' ? json.resample : d.resample,
    rescaleFactor: num(json.rescale_factor, d.rescaleFactor),
  };
}

const PIL_FILTERS: Record<number, PilFilter> = { 0: 'nearest', 1: 'lanczos', 2: 'bilinear', 3: 'bicubic' };

/** The resized, centre-cropped uint8 image (the processor's steps before rescaling). */
export function clipResizeAndCrop(image: RawImage, p: ClipImageProcessing): RawImage {
  const { width: w, height: h } = image;
  const short = Math.min(w, h);
  const long = Math.max(w, h);
  // get_resize_output_image_size(default_to_square=False): int() truncation of the long side.
  const newLong = Math.trunc((p.shortestEdge * long) / short);
  const [rw, rh] = w <= h ? [p.shortestEdge, newLong] : [newLong, p.shortestEdge];
  const filter = PIL_FILTERS[p.resample];
  if (!filter) throw new RangeError(`CLIP preprocessing: resample ${p.resample} is not supported (0-3)`);
  const resized = pilResize(image, rw, rh, filter);
  const top = Math.floor((rh - p.cropHeight) / 2);
  const left = Math.floor((rw - p.cropWidth) / 2);
  const out = new Uint8Array(p.cropWidth * p.cropHeight * 3);
  // A crop larger than the image pads with zeros, as transformers' center_crop does.
  for (let y = 0; y < p.cropHeight; y++) {
    const sy = y + top;
    if (sy < 0 || sy >= rh) continue;
    for (let x = 0; x < p.cropWidth; x++) {
      const sx = x + left;
      if (sx < 0 || sx >= rw) continue;
      out.set(resized.data.subarray((sy * rw + sx) * 3, (sy * rw + sx) * 3 + 3), (y * p.cropWidth + x) * 3);
    }
  }
  return { data: out, width: p.cropWidth, height: p.cropHeight, channels: 3 };
}

/** CLIPImageProcessor.preprocess on one image: [1, 3, cropHeight, cropWidth] float32. */
export function clipPreprocess(image: RawImage, p: ClipImageProcessing): Tensor {
  const crop = clipResizeAndCrop(image, p);
  const plane = crop.width * crop.height;
  const data = new Float32Array(3 * plane);
  const factor = p.rescaleFactor;
  for (let c = 0; c < 3; c++) {
    const mean = Math.fround(p.mean[c]!);
    const std = Math.fround(p.std[c]!);
    for (let i = 0; i < plane; i++) {
      // The product in float64, then cast (numpy's uint8 * float64 scalar), then float32 arithmetic.
      const x = Math.fround(crop.data[i * 3 + c]! * factor);
      data[c * plane + i] = Math.fround(Math.fround(x - mean) / std);
    }
  }
  return { shape: [1, 3, crop.height, crop.width], data };
}
