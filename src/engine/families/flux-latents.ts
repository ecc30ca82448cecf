// Flux's latent conventions, for the flux family: the 16-channel VAE's scale and shift, 2x2 patch packing of the
// latent image into tokens (FluxPipeline._pack_latents / BFL's rearrange), the (0, row, col) position ids RoPE
// reads, and the transformer as a velocity function over unpacked latents for samplers/flow.ts.
import { FLUX_IO } from '../nets/flux.ts';
import type { Feed } from '../runtime.ts';
import type { VelocityFn } from '../samplers/flow.ts';
import type { Tensor } from '../tensor.ts';

/** A 16-channel flow VAE latent space: network latents = scale * (vae latents - shift). */
export interface ShiftedLatentScale {
  scalingFactor: number;
  shiftFactor: number;
}

/** BFL ae.safetensors (autoencoder.py) and diffusers' FLUX.1 vae/config.json. */
export const FLUX_VAE_SCALE: ShiftedLatentScale = { scalingFactor: 0.3611, shiftFactor: 0.1159 };
/** SD3/SD3.5 vae/config.json. */
export const SD3_VAE_SCALE: ShiftedLatentScale = { scalingFactor: 1.5305, shiftFactor: 0.0609 };

/** VAE encoder output -> the latents the transformer works on. */
export function toNetworkLatents(vae: Float32Array, s: ShiftedLatentScale): Float32Array {
  return Float32Array.from(vae, (v) => (v - s.shiftFactor) * s.scalingFactor);
}

/** Transformer latents -> what the VAE decoder takes. */
export function toVaeLatents(net: Float32Array, s: ShiftedLatentScale): Float32Array {
  return Float32Array.from(net, (v) => v / s.scalingFactor + s.shiftFactor);
}

function dims(latents: Tensor): [number, number, number, number] {
  const [b, c, h, w] = latents.shape as [number, number, number, number];
  if (latents.shape.length !== 4 || h % 2 !== 0 || w % 2 !== 0) {
    throw new RangeError(`Flux latents must be [batch, channels, even height, even width], got [${latents.shape}] (image sides must be multiples of 16)`);
  }
  return [b, c, h, w];
}

/** [B, C, H, W] -> [B, (H/2)(W/2), 4C]; token (y, x) holds channel c at index 4c + 2dy + dx. */
export function packLatents(latents: Tensor): Tensor {
  const [b, c, h, w] = dims(latents);
  const hh = h / 2,
    ww = w / 2;
  const out = new Float32Array(latents.data.length);
  let o = 0;
  for (let n = 0; n < b; n++) {
    for (let y = 0; y < hh; y++) {
      for (let x = 0; x < ww; x++) {
        for (let ch = 0; ch < c; ch++) {
          for (let dy = 0; dy < 2; dy++) {
            for (let dx = 0; dx < 2; dx++) out[o++] = latents.data[((n * c + ch) * h + 2 * y + dy) * w + 2 * x + dx]!;
          }
        }
      }
    }
  }
  return { shape: [b, hh * ww, 4 * c], data: out };
}

/** The inverse of packLatents for a latent image of `height` x `width` (latent pixels). */
export function unpackLatents(tokens: Tensor, height: number, width: number): Tensor {
  const [b, l, c4] = tokens.shape as [number, number, number];
  const hh = height / 2,
    ww = width / 2;
  if (tokens.shape.length !== 3 || l !== hh * ww || c4 % 4 !== 0) {
    throw new RangeError(`cannot unpack [${tokens.shape}] into a ${height}x${width} latent image`);
  }
  const c = c4 / 4;
  const out = new Float32Array(tokens.data.length);
  let i = 0;
  for (let n = 0; n < b; n++) {
    for (let y = 0; y < hh; y++) {
      for (let x = 0; x < ww; x++) {
        for (let ch = 0; ch < c; ch++) {
          for (let dy = 0; dy < 2; dy++) {
            for (let dx = 0; dx < 2; dx++) out[((n * c + ch) * height + 2 * y + dy) * width + 2 * x + dx] = tokens.data[i++]!;
          }
        }
      }
    }
  }
  return { shape: [b, c, height, width], data: out };
}

/** img_ids [B, (H/2)(W/2), 3]: (0, row, col) of each packed token, in packing order. */
export function imagePositionIds(batch: number, height: number, width: number): Tensor {
  const hh = height / 2,
    ww = width / 2;
  const data = new Float32Array(batch * hh * ww * 3);
  let o = 0;
  for (let n = 0; n < batch; n++) {
    for (let y = 0; y < hh; y++) {
      for (let x = 0; x < ww; x++) {
        data[o++] = 0;
        data[o++] = y;
        data[o++] = x;
      }
    }
  }
  return { shape: [batch, hh * ww, 3], data };
}

/** txt_ids [B, T, 3]: zeros (text tokens all sit at position 0 on every axis). */
export function textPositionIds(batch: number, tokens: number): Tensor {
  return { shape: [batch, tokens, 3], data: new Float32Array(batch * tokens * 3) };
}

/** What stays fixed over a Flux sampling run: the prompt's tokens and pooled vector, the guidance, the image size. */
export interface FluxCondition {
  /** T5 last_hidden_state [B, T, contextDim]. */
  txt: Tensor;
  /** CLIP-L pooled [B, vecDim]. */
  y: Tensor;
  /** Distilled guidance (dev); undefined for schnell, whose transformer has no guidance input. */
  guidance?: number;
  /** Latent size (pixels / 8). */
  height: number;
  width: number;
}

/**
 * The transformer as a velocity over unpacked latents [B, 16, H, W]: packs x, feeds sigma as the timestep (Flux takes
 * sigma in [0, 1] and scales by 1000 inside), unpacks the prediction. `run` executes the transformer graph.
 */
export function fluxVelocity(run: (feeds: Record<string, Feed>) => Promise<Record<string, Tensor>>, cond: FluxCondition): VelocityFn {
  const batch = cond.txt.shape[0]!;
  const imgIds = imagePositionIds(batch, cond.height, cond.width);
  const txtIds = textPositionIds(batch, cond.txt.shape[1]!);
  const perRow = (v: number): Tensor => ({ shape: [batch], data: new Float32Array(batch).fill(v) });
  return async (x, sigma) => {
    const channels = x.length / (batch * cond.height * cond.width);
    const feeds: Record<string, Feed> = {
      [FLUX_IO.img]: packLatents({ shape: [batch, channels, cond.height, cond.width], data: x }),
      [FLUX_IO.imgIds]: imgIds,
      [FLUX_IO.txt]: cond.txt,
      [FLUX_IO.txtIds]: txtIds,
      [FLUX_IO.timesteps]: perRow(sigma),
      [FLUX_IO.y]: cond.y,
    };
    if (cond.guidance !== undefined) feeds[FLUX_IO.guidance] = perRow(cond.guidance);
    const out = (await run(feeds))[FLUX_IO.output];
    if (!out) throw new Error('the Flux transformer returned no output');
    return unpackLatents(out, cond.height, cond.width).data;
  };
}
