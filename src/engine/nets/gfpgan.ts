// GFPGAN v1.3/v1.4 (GFPGANv1Clean, as A1111 >= 1.8 loads it through spandrel) as an ONNX graph: a U-Net encoder
// whose bottleneck gives the 16 style codes (different_w), a U-Net decoder whose features give SFT scale/shift
// conditions, and a StyleGAN2 decoder (modulated, demodulated convolutions, noise injection, SFT on half of the
// channels, ToRGB skips). Deterministic: the noise is the checkpoint's stored buffers (A1111 draws fresh noise every
// call, randomize_noise=True, so its faces differ from call to call). Sizes come from the weights.
import { float, type GraphBuilder, type Value } from '../onnx/graph.ts';
import type { Tensor } from '../tensor.ts';
import { FaceNetFormatError } from './parsenet.ts';
import type { TensorSource } from './upscaler-weights.ts';

const SQRT2 = Math.SQRT2;

function lrelu(b: GraphBuilder, x: Value): Value {
  return b.op('LeakyRelu', [x], { alpha: float(0.2) });
}

/** F.interpolate(scale_factor=s, mode='bilinear', align_corners=False). */
function bilinear(b: GraphBuilder, x: Value, s: number): Value {
  return b.op('Resize', [x, null, b.constFloat([1, 1, s, s])], { mode: 'linear', coordinate_transformation_mode: 'half_pixel' });
}

function conv(b: GraphBuilder, src: TensorSource, x: Value, name: string, pad: number, bias = true): Value {
  return b.conv(x, src.get(`${name}.weight`), bias ? src.get(`${name}.bias`) : undefined, name, { pad });
}

/** GFPGAN's ResBlock: conv, lrelu, bilinear rescale, conv, lrelu, plus a 1x1 conv of the rescaled input. */
function resBlock(b: GraphBuilder, src: TensorSource, x: Value, name: string, scale: number): Value {
  let out = lrelu(b, conv(b, src, x, `${name}.conv1`, 1));
  out = lrelu(b, conv(b, src, bilinear(b, out, scale), `${name}.conv2`, 1));
  return b.add(out, conv(b, src, bilinear(b, x, scale), `${name}.skip`, 0, false));
}

/** ModulatedConv2d for batch 1: the weight scaled per input channel by the style, optionally demodulated. */
function modulatedConv(b: GraphBuilder, src: TensorSource, x: Value, style: Value, name: string, demodulate: boolean, upsample: boolean): Value {
  const w5 = src.get(`${name}.weight`); // [1, out, in, k, k]
  const [, cout, cin, k] = w5.shape as [number, number, number, number, number];
  const s = b.linear(style, src.get(`${name}.modulation.weight`), src.get(`${name}.modulation.bias`), `${name}.modulation`); // [1, in]
  let w = b.mul(b.weight(`${name}.weight`, w5, [cout, cin, k, k]), b.reshape(s, [1, cin, 1, 1]));
  if (demodulate) {
    const sq = b.op('ReduceSum', [b.mul(w, w), b.constInt64([1, 2, 3])], { keepdims: 1 });
    w = b.mul(w, b.op('Reciprocal', [b.op('Sqrt', [b.add(sq, b.constFloat(1e-8))])]));
  }
  if (upsample) x = bilinear(b, x, 2);
  const p = Math.floor(k / 2);
  return b.op('Conv', [x, w], { kernel_shape: [k, k], pads: [p, p, p, p], strides: [1, 1], group: 1 });
}

/** StyleConv: modulated conv x sqrt(2), + weight x noise, + bias, lrelu 0.2. */
function styleConv(b: GraphBuilder, src: TensorSource, x: Value, style: Value, name: string, noise: Tensor, upsample: boolean): Value {
  let out = b.scale(modulatedConv(b, src, x, style, `${name}.modulated_conv`, true, upsample), SQRT2);
  const noiseStrength = src.get(`${name}.weight`).data[0]!;
  const scaled: Tensor = { shape: noise.shape, data: noise.data.map((v) => v * noiseStrength) };
  out = b.add(out, b.weight(`${name}.noise`, scaled));
  out = b.add(out, b.weight(`${name}.bias`, src.get(`${name}.bias`)));
  return lrelu(b, out);
}

function toRgb(b: GraphBuilder, src: TensorSource, x: Value, style: Value, name: string, skip: Value | null): Value {
  let out = b.add(modulatedConv(b, src, x, style, `${name}.modulated_conv`, false, false), b.weight(`${name}.bias`, src.get(`${name}.bias`)));
  if (skip) out = b.add(out, bilinear(b, skip, 2));
  return out;
}

/** Input `image` [1, 3, 512, 512] RGB in [-1, 1]; output `restored` [1, 3, 512, 512] RGB, nominally [-1, 1]. */
export function buildGfpgan(b: GraphBuilder, src: TensorSource): void {
  const names = new Set(src.names());
  for (const k of ['conv_body_first.weight', 'final_linear.weight', 'stylegan_decoder.constant_input.weight']) {
    if (!names.has(k)) throw new FaceNetFormatError(`not a GFPGAN v1.3/1.4 (GFPGANv1Clean) checkpoint: ${k} is missing`);
  }
  const downs = new Set(src.names().flatMap((n) => (n.startsWith('conv_body_down.') ? [n.split('.')[1]] : []))).size;
  const styleFeat = src.shape('stylegan_decoder.style_conv1.modulated_conv.modulation.weight')[1]!;
  const latents = src.shape('final_linear.weight')[0]! / styleFeat;
  const input = b.input('image', [1, 3, 512, 512]);

  // U-Net encoder.
  let feat = lrelu(b, conv(b, src, input, 'conv_body_first', 0));
  const skips: Value[] = [];
  for (let i = 0; i < downs; i++) {
    feat = resBlock(b, src, feat, `conv_body_down.${i}`, 0.5);
    skips.unshift(feat);
  }
  feat = lrelu(b, conv(b, src, feat, 'final_conv', 1));
  const styleCode = b.reshape(b.linear(b.reshape(feat, [1, -1]), src.get('final_linear.weight'), src.get('final_linear.bias'), 'final_linear'), [
    latents,
    styleFeat,
  ]);
  const latent = (i: number) => b.slice(styleCode, [i], [i + 1], [0]); // [1, styleFeat]

  // U-Net decoder -> SFT conditions.
  const conditions: Value[] = [];
  for (let i = 0; i < downs; i++) {
    feat = resBlock(b, src, b.add(feat, skips[i]!), `conv_body_up.${i}`, 2);
    for (const kind of ['condition_scale', 'condition_shift']) {
      conditions.push(conv(b, src, lrelu(b, conv(b, src, feat, `${kind}.${i}.0`, 1)), `${kind}.${i}.2`, 1));
    }
  }

  // StyleGAN2 decoder with SFT on the second half of the channels.
  const d = 'stylegan_decoder';
  const noise = (i: number) => src.get(`${d}.noises.noise${i}`);
  let out: Value = b.weight(`${d}.constant_input.weight`, src.get(`${d}.constant_input.weight`));
  out = styleConv(b, src, out, latent(0), `${d}.style_conv1`, noise(0), false);
  let skip = toRgb(b, src, out, latent(1), `${d}.to_rgb1`, null);
  for (let level = 0, i = 1; level < downs; level++, i += 2) {
    out = styleConv(b, src, out, latent(i), `${d}.style_convs.${2 * level}`, noise(i), true);
    if (i < conditions.length) {
      const channels = src.shape(`${d}.style_convs.${2 * level}.bias`)[1]!;
      const [same, sft] = b.split(out, 1, [channels / 2, channels - channels / 2]) as [Value, Value];
      out = b.concat([same, b.add(b.mul(sft, conditions[i - 1]!), conditions[i]!)], 1);
    }
    out = styleConv(b, src, out, latent(i + 1), `${d}.style_convs.${2 * level + 1}`, noise(i + 1), false);
    skip = toRgb(b, src, out, latent(i + 2), `${d}.to_rgbs.${level}`, skip);
  }
  b.output(skip, 'restored', [1, 3, 512, 512]);
}
