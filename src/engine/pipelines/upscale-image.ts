// A1111's image upscale with a model (modules/upscaler_utils.py upscale_with_model, images.split_grid /
// combine_grid), pixel for pixel: fixed-size tiles cut from the image, each fed to the network as BGR in [0,1]
// (A1111's long-standing channel order), clamped, x255, rounded half to even, and the tiles pasted back with
// Pillow's 8-bit masked blend over the first `overlap` columns/rows. Memory is bounded by the tile, not the image.
import type { RawImage } from '../api.ts';
import type { Tensor } from '../tensor.ts';

/** Runs the network on [1, 3, H, W] in [0,1] and returns [1, 3, H*s, W*s], clamped to [0,1] (spandrel's call). */
export type UpscaleNetRunner = (input: Tensor) => Promise<Tensor>;

/** A1111's defaults (opts.ESRGAN_tile, opts.ESRGAN_tile_overlap). */
export const A1111_TILE = 192;
export const A1111_TILE_OVERLAP = 8;

/** spandrel's descriptor call: reflect-pad right/bottom to a multiple, run, clamp to [0,1], crop to size x scale. */
export async function runPadded(run: (input: Tensor) => Promise<Tensor>, input: Tensor, multipleOf: number, scale: number): Promise<Tensor> {
  const [, c, h, w] = input.shape as [number, number, number, number];
  const ph = Math.ceil(h / multipleOf) * multipleOf;
  const pw = Math.ceil(w / multipleOf) * multipleOf;
  const padded = ph === h && pw === w ? input : reflectPad(input, ph, pw);
  const out = await run(padded);
  const [oh, ow] = [h * scale, w * scale];
  const [, , rh, rw] = out.shape as [number, number, number, number];
  const data = new Float32Array(c * oh * ow);
  for (let ch = 0; ch < c; ch++)
    for (let y = 0; y < oh; y++)
      for (let x = 0; x < ow; x++) {
        const v = out.data[(ch * rh + y) * rw + x]!;
        data[(ch * oh + y) * ow + x] = Math.max(0, Math.min(1, v));
      }
  return { shape: [1, c, oh, ow], data };
}

/** torch's reflect padding on the right and bottom (the edge pixel is not repeated). */
function reflectPad(t: Tensor, ph: number, pw: number): Tensor {
  const [, c, h, w] = t.shape as [number, number, number, number];
  const reflect = (i: number, n: number) => (i < n ? i : 2 * (n - 1) - i);
  const data = new Float32Array(c * ph * pw);
  for (let ch = 0; ch < c; ch++)
    for (let y = 0; y < ph; y++) for (let x = 0; x < pw; x++) data[(ch * ph + y) * pw + x] = t.data[(ch * h + reflect(y, h)) * w + reflect(x, w)]!;
  return { shape: [1, c, ph, pw], data };
}

/** numpy's round (half to even), as A1111 rounds the network's x255 output. */
function roundHalfEven(v: number): number {
  const r = Math.round(v);
  return Math.abs(v % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** upscale_pil_patch: RGB -> BGR float32 (/255 in float64 first), the net, x255, round, uint8, back to RGB. */
export async function upscalePatch(run: UpscaleNetRunner, img: RawImage): Promise<RawImage> {
  const { width: w, height: h, channels } = img;
  const plane = w * h;
  const input = new Float32Array(3 * plane);
  for (let p = 0; p < plane; p++) for (let c = 0; c < 3; c++) input[(2 - c) * plane + p] = img.data[p * channels + c]! / 255;
  const out = await run({ shape: [1, 3, h, w], data: input });
  const [, , oh, ow] = out.shape as [number, number, number, number];
  const oplane = oh * ow;
  const data = new Uint8Array(oplane * 3);
  for (let p = 0; p < oplane; p++)
    for (let c = 0; c < 3; c++) {
      const v = roundHalfEven(Math.fround(out.data[(2 - c) * oplane + p]! * 255));
      data[p * 3 + c] = Math.max(0, Math.min(255, v));
    }
  return { data, width: ow, height: oh, channels: 3 };
}

interface GridTile {
  x: number;
  y: number;
  image: RawImage;
}

/** split_grid's tile origins along one axis (x = int(i*dx), clamped so the tile ends inside the image). */
export function gridOrigins(size: number, tile: number, overlap: number): number[] {
  const count = Math.ceil((size - overlap) / (tile - overlap));
  const step = count > 1 ? (size - tile) / (count - 1) : 0;
  const origins: number[] = [];
  for (let i = 0; i < count; i++) {
    let o = Math.trunc(i * step);
    if (o + tile >= size) o = size - tile;
    origins.push(o);
  }
  return origins;
}

/** Pillow's crop: a w x h box at (x, y); pixels outside the source are black. */
function crop(img: RawImage, x: number, y: number, w: number, h: number): RawImage {
  const data = new Uint8Array(w * h * 3);
  for (let row = 0; row < h; row++) {
    const sy = y + row;
    if (sy < 0 || sy >= img.height) continue;
    for (let col = 0; col < w; col++) {
      const sx = x + col;
      if (sx < 0 || sx >= img.width) continue;
      const s = (sy * img.width + sx) * img.channels;
      const d = (row * w + col) * 3;
      data[d] = img.data[s]!;
      data[d + 1] = img.data[s + 1]!;
      data[d + 2] = img.data[s + 2]!;
    }
  }
  return { data, width: w, height: h, channels: 3 };
}

/**
 * Pillow's paste of `src` at (x, y), clipped to `dst`; with `mask(col, row)` (0..255) the libImaging BLEND:
 * t = s*m + d*(255-m) + 128, out = (t + (t >> 8)) >> 8.
 */
function paste(dst: RawImage, src: RawImage, x: number, y: number, mask?: (col: number, row: number) => number): void {
  for (let row = 0; row < src.height; row++) {
    const dy = y + row;
    if (dy < 0 || dy >= dst.height) continue;
    for (let col = 0; col < src.width; col++) {
      const dx = x + col;
      if (dx < 0 || dx >= dst.width) continue;
      const s = (row * src.width + col) * 3;
      const d = (dy * dst.width + dx) * 3;
      const m = mask ? mask(col, row) : 255;
      for (let c = 0; c < 3; c++) {
        if (m === 255) dst.data[d + c] = src.data[s + c]!;
        else {
          const t = src.data[s + c]! * m + dst.data[d + c]! * (255 - m) + 128;
          dst.data[d + c] = (t + (t >> 8)) >> 8;
        }
      }
    }
  }
}

/** combine_grid's ramp: uint8(float32(r) * 255 / overlap), r = 0..overlap-1. */
function ramp(overlap: number): Uint8Array {
  const out = new Uint8Array(overlap);
  for (let r = 0; r < overlap; r++) out[r] = Math.trunc(Math.fround(Math.fround(r * 255) / overlap));
  return out;
}

/** combine_grid: rows assembled left to right, then stacked top to bottom, blending the first `overlap` pixels. */
function combineGrid(rows: { y: number; h: number; tiles: GridTile[] }[], width: number, height: number, tileH: number, overlap: number): RawImage {
  const out: RawImage = { data: new Uint8Array(width * height * 3), width, height, channels: 3 };
  const m = ramp(overlap);
  for (const { y, h, tiles } of rows) {
    const row: RawImage = { data: new Uint8Array(width * h * 3), width, height: h, channels: 3 };
    for (const t of tiles) {
      if (t.x === 0) {
        paste(row, t.image, 0, 0);
        continue;
      }
      paste(row, crop(t.image, 0, 0, overlap, tileH), t.x, 0, (col) => m[col]!);
      paste(row, crop(t.image, overlap, 0, t.image.width - overlap, tileH), t.x + overlap, 0);
    }
    if (y === 0) {
      paste(out, row, 0, 0);
      continue;
    }
    paste(out, crop(row, 0, 0, width, overlap), 0, y, (_col, r) => m[r]!);
    paste(out, crop(row, 0, overlap, width, h - overlap), 0, y + overlap);
  }
  return out;
}

/**
 * upscale_with_model: tile <= 0 runs the whole image at once; otherwise split_grid(tile, tile, overlap), each
 * tile upscaled, and combine_grid at the network's scale (taken, like A1111, from the first tile's output).
 * `onTile(done, total)` reports progress.
 */
export async function upscaleWithModel(
  run: UpscaleNetRunner,
  img: RawImage,
  tile: number,
  overlap: number,
  onTile?: (done: number, total: number) => void,
): Promise<RawImage> {
  if (tile <= 0) return upscalePatch(run, img);
  const ys = gridOrigins(img.height, tile, overlap);
  const xs = gridOrigins(img.width, tile, overlap);
  const total = xs.length * ys.length;
  let scale = 0;
  let done = 0;
  const rows: { y: number; h: number; tiles: GridTile[] }[] = [];
  for (const y of ys) {
    const tiles: GridTile[] = [];
    for (const x of xs) {
      const up = await upscalePatch(run, crop(img, x, y, tile, tile));
      scale ||= Math.trunc(up.width / tile);
      tiles.push({ x: x * scale, y: y * scale, image: up });
      onTile?.(++done, total);
    }
    rows.push({ y: y * scale, h: tile * scale, tiles });
  }
  return combineGrid(rows, img.width * scale, img.height * scale, tile * scale, overlap * scale);
}
