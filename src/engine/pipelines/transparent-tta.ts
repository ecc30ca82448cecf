// The transparent decoder's test-time augmentation, as all three reference implementations do it
// (LayerDiffuse_DiffusersCLI vae.py estimate_augmented): 8 passes, flip along W (no, yes) x rot90 k = 0..3 over
// (H, W), each output clipped to [0,1] and turned back, then the per-element lower median (torch.median of 8 =
// the 4th smallest). With tta off, one plain pass, clipped. Sizes that are not multiples of 64 are padded by
// repeating the last row and column (the latent by the same amount / 8), decoded, and cropped back.
import { KilnInputError } from '../api.ts';
import type { Tensor } from '../tensor.ts';
import { abortError } from './progress.ts';

/** A [channels, height, width] image plane stack. */
export interface Planes {
  channels: number;
  height: number;
  width: number;
  data: Float32Array;
}

/** One decoder pass on [1,C,H,W] tensors. */
export type TransparentPass = (pixel: Tensor, latent: Tensor) => Promise<Tensor>;

/** The (flip, k) of each pass in the reference's order. */
export const TTA_PASSES: ReadonlyArray<{ flip: boolean; k: number }> = [false, true].flatMap((flip) => [0, 1, 2, 3].map((k) => ({ flip, k })));

export function flipWidth(p: Planes): Planes {
  const { channels, height, width, data } = p;
  const out = new Float32Array(data.length);
  for (let r = 0; r < channels * height; r++) {
    const row = r * width;
    for (let x = 0; x < width; x++) out[row + x] = data[row + width - 1 - x]!;
  }
  return { channels, height, width, data: out };
}

/** torch.rot90(k=1, dims=(H, W)): out[i][j] = in[j][W-1-i], so the output is W x H. */
function rot90Once(p: Planes): Planes {
  const { channels, height, width, data } = p;
  const out = new Float32Array(data.length);
  for (let c = 0; c < channels; c++) {
    const src = c * height * width;
    for (let i = 0; i < width; i++) {
      const dst = src + i * height;
      for (let j = 0; j < height; j++) out[dst + j] = data[src + j * width + (width - 1 - i)]!;
    }
  }
  return { channels, height: width, width: height, data: out };
}

/** torch.rot90 with any k (negative k turns the other way). */
export function rot90(p: Planes, k: number): Planes {
  let out = p;
  for (let i = 0; i < ((k % 4) + 4) % 4; i++) out = rot90Once(out);
  return out;
}

/** Grows to height x width by repeating the last row and column (edge replication). */
export function padEdges(p: Planes, height: number, width: number): Planes {
  if (height === p.height && width === p.width) return p;
  const out = new Float32Array(p.channels * height * width);
  for (let c = 0; c < p.channels; c++)
    for (let y = 0; y < height; y++) {
      const sy = Math.min(y, p.height - 1);
      const src = (c * p.height + sy) * p.width;
      const dst = (c * height + y) * width;
      for (let x = 0; x < width; x++) out[dst + x] = p.data[src + Math.min(x, p.width - 1)]!;
    }
  return { channels: p.channels, height, width, data: out };
}

/** The top-left height x width of every plane. */
export function cropPlanes(p: Planes, height: number, width: number): Planes {
  if (height === p.height && width === p.width) return p;
  const out = new Float32Array(p.channels * height * width);
  for (let c = 0; c < p.channels; c++)
    for (let y = 0; y < height; y++) out.set(p.data.subarray((c * p.height + y) * p.width, (c * p.height + y) * p.width + width), (c * height + y) * width);
  return { channels: p.channels, height, width, data: out };
}

function clipUnit(data: Float32Array): Float32Array {
  for (let i = 0; i < data.length; i++) data[i] = Math.min(1, Math.max(0, data[i]!));
  return data;
}

/** Per element, the 4th smallest of 8 (torch.median's lower median), then clipped to [0,1]. */
export function lowerMedian(passes: Float32Array[]): Float32Array {
  const n = passes.length;
  const out = new Float32Array(passes[0]!.length);
  const v = new Float32Array(n);
  const mid = Math.floor((n - 1) / 2);
  for (let i = 0; i < out.length; i++) {
    // Insertion sort of n (8) values: small and branch-predictable.
    for (let a = 0; a < n; a++) {
      const x = passes[a]![i]!;
      let b = a;
      while (b > 0 && v[b - 1]! > x) {
        v[b] = v[b - 1]!;
        b--;
      }
      v[b] = x;
    }
    out[i] = v[mid]!;
  }
  return clipUnit(out);
}

const asTensor = (p: Planes): Tensor => ({ shape: [1, p.channels, p.height, p.width], data: p.data });

export interface TransparentDecodeOptions {
  /** 8 augmented passes and their median (default); false: one pass. */
  tta?: boolean;
  /** Called after each pass with (done, total). */
  onPass?: (done: number, total: number) => void;
  signal?: AbortSignal;
}

/**
 * pixel [3,H,W] in [0,1] and the raw latent [4,H/8,W/8] -> [4,H,W] in [0,1] (alpha, R, G, B). H and W must be
 * multiples of 8 (of the latent factor), the decoder's `multiple` is reached by edge padding.
 */
export async function transparentDecode(
  run: TransparentPass,
  pixel: Planes,
  latent: Planes,
  multiple: number,
  opts: TransparentDecodeOptions = {},
): Promise<Planes> {
  const f = pixel.height / latent.height;
  if (!Number.isInteger(f) || pixel.width / latent.width !== f || multiple % f !== 0)
    throw new KilnInputError(`transparent: the image (${pixel.width}x${pixel.height}) must be the latent size times ${f}`, 'transparent');
  const up = (n: number) => Math.ceil(n / multiple) * multiple;
  const H = up(pixel.height);
  const W = up(pixel.width);
  const p0 = padEdges(pixel, H, W);
  const l0 = padEdges(latent, H / f, W / f);
  const passes = opts.tta === false ? [{ flip: false, k: 0 }] : TTA_PASSES;
  const outputs: Float32Array[] = [];
  for (const { flip, k } of passes) {
    if (opts.signal?.aborted) throw abortError();
    const p = rot90(flip ? flipWidth(p0) : p0, k);
    const l = rot90(flip ? flipWidth(l0) : l0, k);
    const y = await run(asTensor(p), asTensor(l));
    const planes: Planes = { channels: y.shape[1]!, height: y.shape[2]!, width: y.shape[3]!, data: clipUnit(y.data) };
    const back = rot90(planes, -k);
    outputs.push((flip ? flipWidth(back) : back).data);
    opts.onPass?.(outputs.length, passes.length);
  }
  const channels = outputs[0]!.length / (H * W);
  const merged = outputs.length === 1 ? outputs[0]! : lowerMedian(outputs);
  return cropPlanes({ channels, height: H, width: W, data: merged }, pixel.height, pixel.width);
}
