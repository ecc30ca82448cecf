// TAESD / TAESDXL decoder (madebyollin's tiny autoencoder) as an ONNX graph. The published layout, a Sequential:
//   Clamp (tanh(x/3)*3), conv(latent -> C), ReLU,
//   3 x [Block x3, Upsample x2 (nearest), conv(C -> C, no bias)],
//   Block, conv(C -> 3)
// Block(n_in, n_out) = ReLU(conv-ReLU-conv-ReLU-conv(x) + skip(x)), skip a 1x1 no-bias conv when n_in != n_out.
// The graph is read off the weights: a no-bias 3x3 conv is preceded by an Upsample, so channel counts and the
// number of blocks and upsamplings come from the file. Two key layouts: the original taesd_decoder.{pth,safetensors}
// ("1.weight", "3.conv.0.weight" ... Sequential indices, index 0 the Clamp) and diffusers' AutoencoderTiny
// ("decoder.layers.0.weight": the same Sequential without the Clamp, so one index lower).
// Input: the sampler's latent as is (TAESD was trained on scaled latents); output: RGB in [0, 1] (clamped).
import type { GraphBuilder, Value } from '../onnx/graph.ts';
import type { Tensor } from '../tensor.ts';
import { renamed, type TensorSource, UpscalerFormatError } from './upscaler-weights.ts';

/** One step of the decoder Sequential, in order. */
export type TaesdLayer =
  | { kind: 'conv'; name: string; bias: boolean; outChannels: number; inChannels: number }
  | { kind: 'relu' }
  | { kind: 'upsample' }
  | { kind: 'block'; name: string; inChannels: number; outChannels: number; skip: boolean };

export interface TaesdDecoderPlan {
  latentChannels: number;
  outChannels: number;
  /** Spatial factor between latent and image (2 per Upsample). */
  scale: number;
  layers: TaesdLayer[];
}

/** Thrown when a file is not a TAESD decoder; the message says what was expected. */
export class TaesdFormatError extends UpscalerFormatError {
  override name = 'TaesdFormatError';
}

/** Graph input/output names. */
export const TAESD_IO = { latent: 'latent', image: 'image' } as const;

/** Most Sequential entries a decoder may have (the published one has 20). */
const MAX_LAYERS = 64;

/** The decoder's weights under original (Sequential-index) names, whichever layout the file uses. */
export function taesdDecoderWeights(src: TensorSource): TensorSource {
  const names = src.names();
  const diffusers = names.filter((n) => n.startsWith('decoder.layers.'));
  if (diffusers.length > 0) {
    // diffusers drops the Clamp from the Sequential: layers.i is the original i + 1.
    const map = new Map<string, string>();
    for (const n of diffusers) {
      const m = /^decoder\.layers\.(\d+)\.(.+)$/.exec(n);
      if (m) map.set(`${Number(m[1]) + 1}.${m[2]}`, n);
    }
    return renamed(src, map);
  }
  // A full autoencoder in the original layout keeps the decoder under "decoder." (taesd.py's TAESD module).
  if (names.some((n) => n.startsWith('decoder.'))) {
    return renamed(src, new Map(names.filter((n) => n.startsWith('decoder.')).map((n) => [n.slice('decoder.'.length), n])));
  }
  return src;
}

/** True when the (normalised) names look like a TAESD decoder: a first conv at index 1 and a Block after it. */
export function isTaesdDecoder(names: readonly string[]): boolean {
  return names.includes('1.weight') && names.some((n) => /^\d+\.conv\.0\.weight$/.test(n));
}

/** Reads the layer list and channel counts from decoder weights under original names (taesdDecoderWeights). */
export function taesdDecoderPlan(src: TensorSource): TaesdDecoderPlan {
  const names = new Set(src.names());
  if (!isTaesdDecoder([...names])) throw new TaesdFormatError('not a TAESD decoder: expected weights "1.weight" and "<i>.conv.0.weight"');
  // taesd.py's use_midblock_gn variant (newer latent spaces) adds a GroupNorm pool to some blocks: not built here.
  const pooled = [...names].find((n) => /^\d+\.pool\./.test(n));
  if (pooled) throw new TaesdFormatError(`TAESD decoder with mid-block GroupNorm (${pooled}) is not supported; use taesd/taesdxl decoders`);
  const conv4 = (name: string): [number, number, number, number] => {
    const s = src.shape(name);
    if (s.length !== 4) throw new TaesdFormatError(`weight ${name} has shape [${s}], expected a conv weight`);
    return s as [number, number, number, number];
  };
  const last = Math.max(...[...names].map((n) => Number(/^(\d+)\./.exec(n)?.[1] ?? -1)));
  if (last > MAX_LAYERS) throw new TaesdFormatError(`TAESD decoder has ${last} layers; at most ${MAX_LAYERS} are supported`);
  const layers: TaesdLayer[] = [];
  let channels = conv4('1.weight')[1];
  const latentChannels = channels;
  let scale = 1;
  for (let i = 1; i <= last; i++) {
    if (names.has(`${i}.conv.0.weight`)) {
      const out = conv4(`${i}.conv.0.weight`)[0];
      for (const k of [2, 4]) if (!names.has(`${i}.conv.${k}.weight`)) throw new TaesdFormatError(`TAESD block ${i} lacks ${i}.conv.${k}.weight`);
      const skip = names.has(`${i}.skip.weight`);
      if (!skip && out !== channels) throw new TaesdFormatError(`TAESD block ${i} changes ${channels} -> ${out} channels without a skip conv`);
      layers.push({ kind: 'block', name: String(i), inChannels: channels, outChannels: out, skip });
      channels = out;
    } else if (names.has(`${i}.weight`)) {
      const [out, inC] = conv4(`${i}.weight`);
      if (inC !== channels) throw new TaesdFormatError(`TAESD conv ${i} takes ${inC} channels, the layer before gives ${channels}`);
      const bias = names.has(`${i}.bias`);
      // The published decoder: the upsampling convs have no bias and follow an Upsample; the first conv a ReLU.
      if (!bias) {
        layers.push({ kind: 'upsample' });
        scale *= 2;
      }
      layers.push({ kind: 'conv', name: String(i), bias, inChannels: inC, outChannels: out });
      if (i === 1) layers.push({ kind: 'relu' });
      channels = out;
    }
  }
  if (scale === 1) throw new TaesdFormatError('TAESD decoder has no upsampling conv (no-bias 3x3 conv)');
  return { latentChannels, outChannels: channels, scale, layers };
}

/** Builds the decoder: input `latent` [batch, latentChannels, h, w], output `image` [batch, 3, h*s, w*s] in [0, 1]. */
export function buildTaesdDecoder(b: GraphBuilder, src: TensorSource, plan: TaesdDecoderPlan): void {
  const input = b.input(TAESD_IO.latent, ['batch', plan.latentChannels, 'height', 'width']);
  const conv = (x: Value, name: string, bias: boolean, pad = 1): Value =>
    b.conv(x, src.get(`${name}.weight`), bias ? src.get(`${name}.bias`) : undefined, name, { pad });
  const relu = (x: Value): Value => b.op('Relu', [x]);
  let x = b.scale(b.op('Tanh', [b.scale(input, 1 / 3)]), 3);
  for (const layer of plan.layers) {
    if (layer.kind === 'relu') x = relu(x);
    else if (layer.kind === 'upsample') x = upsample2x(b, x);
    else if (layer.kind === 'conv') x = conv(x, layer.name, layer.bias);
    else {
      const p = `${layer.name}.conv`;
      const body = conv(relu(conv(relu(conv(x, `${p}.0`, true)), `${p}.2`, true)), `${p}.4`, true);
      const skip = layer.skip ? conv(x, `${layer.name}.skip`, false, 0) : x;
      x = relu(b.add(body, skip));
    }
  }
  // taesd.py's output convention: [0, 1] (A1111 maps it to [-1, 1] after); clamped as every preview/decode does.
  x = b.op('Clip', [x, b.constFloat(0), b.constFloat(1)]);
  b.output(x, TAESD_IO.image, ['batch', plan.outChannels, 'out_height', 'out_width']);
}

/** Nearest-neighbour x2 (torch nn.Upsample(scale_factor=2)). */
function upsample2x(b: GraphBuilder, x: Value): Value {
  const sizes = b.mul(b.shapeOf(x), b.constInt64([1, 1, 2, 2]));
  return b.op('Resize', [x, null, null, sizes], { mode: 'nearest', coordinate_transformation_mode: 'asymmetric', nearest_mode: 'floor' });
}

/** A name -> tensor source over in-memory tensors (tests, benchmarks). */
export function memoryTensors(tensors: Record<string, Tensor>): TensorSource {
  return {
    names: () => Object.keys(tensors),
    shape: (n) => [...(tensors[n] ?? missing(n)).shape],
    get: (n) => tensors[n] ?? missing(n),
  };
}

function missing(name: string): never {
  throw new TaesdFormatError(`weight ${name} is missing`);
}
