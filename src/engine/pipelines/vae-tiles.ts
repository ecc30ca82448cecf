// The VAE, whole or in overlapping tiles. A whole decode of a 1024x1024 SD image holds about 4 GB of activations
// (128-channel planes at full resolution), on top of the UNet's weights; above a size threshold the latent (or
// image) is cut into overlapping tiles, each tile runs alone, and the tiles are blended with linear ramps across
// their overlaps (weights normalised per pixel, as MultiDiffusion's tiled VAE and diffusers' tiled_decode blend),
// so there is no visible seam. Tiles see only their own neighbourhood (group norms and the mid-block attention
// are per tile), so a tiled result is close to, not equal to, the whole one: at and below the threshold the
// exact whole-image path runs, so ordinary sizes give exactly the pixels they always did.
import type { Tiling } from '../api.ts';
import { runSession, type Session } from '../runtime.ts';
import type { Tensor } from '../tensor.ts';

/** Tile geometry in latent pixels. */
export interface VaeTileSettings {
  /** Tile only when the latent has more pixels than this (96x96 latent = a 768x768 SD image). */
  thresholdPixels: number;
  /** Largest tile side, and the overlap between neighbouring tiles. */
  maxTile: number;
  overlap: number;
}

/**
 * 80-latent tiles (640 px) overlapping by 16 (128 px): a 1024x1024 SD image is 2x2 tiles of 72. Measured with
 * real-size SD1.5 VAE weights, process peak RSS: 4.6 GB for a whole 1024 px decode, 1.4 GB for a 512 px one.
 */
export const VAE_TILES: VaeTileSettings = { thresholdPixels: 96 * 96, maxTile: 80, overlap: 16 };

/**
 * The settings for a model: images up to 1.5 times the model's native size per side (and never fewer than 96x96
 * latent pixels) decode whole, so SDXL at its native 1024 px keeps the exact whole decode; SD1.5 tiles above
 * 768 px (its 2x hires fix to 1024 px), SDXL above 1536 px.
 */
export function vaeTilesFor(model: { nativeSize: number; latentFactor: number }): VaeTileSettings {
  const side = 1.5 * (model.nativeSize / model.latentFactor);
  return { ...VAE_TILES, thresholdPixels: Math.max(VAE_TILES.thresholdPixels, Math.floor(side * side)) };
}

/** One axis's tiles: [start, size] pairs covering `length`, evenly spread, neighbours overlapping by >= overlap - 1. */
export function tileSpans(length: number, maxTile: number, overlap: number): Array<[number, number]> {
  if (length <= maxTile) return [[0, length]];
  const n = Math.ceil((length - overlap) / (maxTile - overlap));
  const size = Math.ceil((length + (n - 1) * overlap) / n);
  const spans: Array<[number, number]> = [];
  for (let i = 0; i < n; i++) spans.push([Math.round((i * (length - size)) / (n - 1)), size]);
  return spans;
}

/** Whether an image of this latent size is tiled: above the threshold, and never for seamless (wrapping) graphs. */
export function usesVaeTiles(latentH: number, latentW: number, tiling: Tiling | undefined, tiles: VaeTileSettings = VAE_TILES): boolean {
  return !tiling && latentH * latentW > tiles.thresholdPixels && (latentH > tiles.maxTile || latentW > tiles.maxTile);
}

/**
 * The blend weight of offset `p` in a tile of `size` output pixels along one axis: a linear ramp over `ramp`
 * pixels on each side that has a neighbour (not at the image border), 1 elsewhere.
 */
function ramp(p: number, size: number, ramp: number, atStart: boolean, atEnd: boolean): number {
  let w = 1;
  if (!atStart) w = Math.min(w, (p + 0.5) / ramp);
  if (!atEnd) w = Math.min(w, (size - p - 0.5) / ramp);
  return w;
}

/** Crops [1, C, H, W] to rows y0..y0+h and columns x0..x0+w. */
function crop(t: Tensor, y0: number, x0: number, h: number, w: number): Tensor {
  const [, c, H, W] = t.shape as [number, number, number, number];
  const out = new Float32Array(c * h * w);
  for (let ch = 0; ch < c; ch++)
    for (let y = 0; y < h; y++) out.set(t.data.subarray((ch * H + y0 + y) * W + x0, (ch * H + y0 + y) * W + x0 + w), (ch * h + y) * w);
  return { shape: [1, c, h, w], data: out };
}

/**
 * Runs `session` over tiles of `input` ([1, C, H, W]) and blends each named output. `inFactor`/`outFactor`: how
 * many input/output pixels one latent pixel is (decode 1/8, encode 8/1); spans are computed in latent pixels.
 */
async function runTiled(
  session: Session,
  inputName: string,
  input: Tensor,
  outputs: string[],
  inFactor: number,
  outFactor: number,
  tiles: VaeTileSettings,
): Promise<Record<string, Tensor>> {
  const latentH = input.shape[2]! / inFactor;
  const latentW = input.shape[3]! / inFactor;
  const rows = tileSpans(latentH, tiles.maxTile, tiles.overlap);
  const cols = tileSpans(latentW, tiles.maxTile, tiles.overlap);
  const outH = latentH * outFactor;
  const outW = latentW * outFactor;
  const rampPx = tiles.overlap * outFactor;
  const acc: Record<string, Float32Array> = {};
  const channels: Record<string, number> = {};
  const weight = new Float32Array(outH * outW);
  for (const [ty, th] of rows) {
    for (const [tx, tw] of cols) {
      const piece = crop(input, ty * inFactor, tx * inFactor, th * inFactor, tw * inFactor);
      const result = await runSession(session, { [inputName]: piece });
      const oh = th * outFactor;
      const ow = tw * outFactor;
      const wy = Float32Array.from({ length: oh }, (_, p) => ramp(p, oh, rampPx, ty === 0, ty + th === latentH));
      const wx = Float32Array.from({ length: ow }, (_, p) => ramp(p, ow, rampPx, tx === 0, tx + tw === latentW));
      const oy = ty * outFactor;
      const ox = tx * outFactor;
      for (const name of outputs) {
        const t = result[name]!;
        const c = t.shape[1]!;
        channels[name] = c;
        acc[name] ??= new Float32Array(c * outH * outW);
        const sum = acc[name];
        for (let ch = 0; ch < c; ch++)
          for (let y = 0; y < oh; y++) {
            const src = (ch * oh + y) * ow;
            const dst = (ch * outH + oy + y) * outW + ox;
            for (let x = 0; x < ow; x++) sum[dst + x]! += t.data[src + x]! * wy[y]! * wx[x]!;
          }
      }
      for (let y = 0; y < oh; y++) for (let x = 0; x < ow; x++) weight[(oy + y) * outW + ox + x]! += wy[y]! * wx[x]!;
    }
  }
  const out: Record<string, Tensor> = {};
  for (const name of outputs) {
    const sum = acc[name]!;
    const c = channels[name]!;
    for (let ch = 0; ch < c; ch++) for (let p = 0; p < outH * outW; p++) sum[ch * outH * outW + p]! /= weight[p]!;
    out[name] = { shape: [1, c, outH, outW], data: sum };
  }
  return out;
}

/** The decoder on one latent [1, C, h, w] (raw sampler space): the image [1, 3, h*f, w*f] in about [-1, 1]. */
export async function vaeDecode(decoder: Session, latent: Tensor, latentFactor: number, tiling?: Tiling, tiles: VaeTileSettings = VAE_TILES): Promise<Tensor> {
  const [, , h, w] = latent.shape as [number, number, number, number];
  if (!usesVaeTiles(h, w, tiling, tiles)) return (await runSession(decoder, { latent })).image!;
  return (await runTiled(decoder, 'latent', latent, ['image'], 1, latentFactor, tiles)).image!;
}

/**
 * The encoder on one image [1, 3, H, W] in [-1, 1]: the latent distribution's mean and logvar. Tiled only when
 * both sides are whole latent pixels (a tile must map to whole latent pixels); otherwise whole.
 */
export async function vaeEncode(
  encoder: Session,
  image: Tensor,
  latentFactor: number,
  tiling?: Tiling,
  tiles: VaeTileSettings = VAE_TILES,
): Promise<{ mean: Tensor; logvar: Tensor }> {
  const [, , H, W] = image.shape as [number, number, number, number];
  const whole = H % latentFactor !== 0 || W % latentFactor !== 0 || !usesVaeTiles(H / latentFactor, W / latentFactor, tiling, tiles);
  const r = whole ? await runSession(encoder, { image }) : await runTiled(encoder, 'image', image, ['mean', 'logvar'], latentFactor, 1, tiles);
  return { mean: r.mean!, logvar: r.logvar! };
}
