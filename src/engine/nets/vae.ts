// AutoencoderKL (diffusers) encoder and decoder as ONNX graphs, driven by the VAE config: ResNet blocks,
// a mid block with one single-head self-attention over all pixels, stride-2 downsampling and nearest 2x
// upsampling. Weights use diffusers names ("encoder.down_blocks.0.resnets.0.conv1.weight").
import { ModelFileError } from '../api.ts';
import type { AttentionKind, GraphBuilder, Value } from '../onnx/graph.ts';
import type { Tensor } from '../tensor.ts';
import type { VaeConfig, WeightSource } from '../weights/types.ts';

/** The config.json fields the graphs depend on (diffusers AutoencoderKL names). */
export type VaeNetConfig = Pick<VaeConfig, 'block_out_channels' | 'layers_per_block' | 'norm_num_groups' | 'latent_channels' | 'in_channels' | 'out_channels'> & {
  /** diffusers' switch for the mid-block attention (default true; false in a few newer VAEs). */
  mid_block_add_attention?: boolean;
};

export interface VaeEncoderOptions {
  attention?: AttentionKind;
}

export interface VaeDecoderOptions {
  /**
   * When set, the graph's `latent` input is the raw sampler latent and the graph divides it by this factor
   * (the config's scaling_factor) first, exactly as the pipeline's `latents / scaling_factor`. When unset
   * (default) the caller divides before feeding the graph.
   */
  scalingFactor?: number;
  attention?: AttentionKind;
  /**
   * How nearest-2x upsampling + 3x3 conv is computed: 'phases' (default) runs four 2x2 convolutions on the
   * low-resolution input, one per output pixel parity, and interleaves them (DepthToSpace): the same function
   * with 16 instead of 36 multiply-adds per input pixel and channel pair, and no full-resolution Resize copy.
   * 'resize' is the literal Resize then Conv.
   */
  upsample?: UpsampleKind;
}

export type UpsampleKind = 'phases' | 'resize';

/** Graph input/output names. */
export const VAE_IO = {
  /** Encoder input [batch, in_channels, height, width], pixels in [-1, 1]. */
  image: 'image',
  /** Encoder outputs [batch, latent_channels, height/f, width/f]; logvar clamped to [-30, 20]. */
  mean: 'mean',
  logvar: 'logvar',
  /** Decoder input [batch, latent_channels, h, w]; decoder output is `image` [batch, out_channels, h*f, w*f]. */
  latent: 'latent',
} as const;

/** diffusers builds every AutoencoderKL norm with eps 1e-6. */
const EPS = 1e-6;

/** Every encoder option with its default filled in: the part of a graph-cache key that describes the graph. */
export function vaeEncoderGraphOptions(opts: VaeEncoderOptions): Record<string, unknown> {
  return { attention: opts.attention ?? 'contrib' };
}

/** Every decoder option with its default filled in: the part of a graph-cache key that describes the graph. */
export function vaeDecoderGraphOptions(opts: VaeDecoderOptions): Record<string, unknown> {
  return { attention: opts.attention ?? 'contrib', scalingFactor: opts.scalingFactor ?? null, upsample: opts.upsample ?? 'phases' };
}

/** The spatial factor between image and latent: 2 per down block except the last (8 for SD). */
export function vaeScaleFactor(config: VaeNetConfig): number {
  return 2 ** (config.block_out_channels.length - 1);
}

/** Latent-space input size of one decode. */
export interface VaeDecodeDims {
  batch: number;
  /** Latent height and width (the image is vaeScaleFactor times larger). */
  height: number;
  width: number;
}

/**
 * FLOPs (2 per multiply-add) of one decoder call as the graph built with `opts` computes it: every convolution
 * (upsamplers as 2x2 phases or as 3x3 at full resolution) and the mid-block attention's projections and
 * score/value matmuls. Norms, activations and copies are left out (about 1% of the work).
 */
export function vaeDecoderFlops(config: VaeNetConfig, dims: VaeDecodeDims, opts: Pick<VaeDecoderOptions, 'upsample'> = {}): number {
  const ch = [...config.block_out_channels].reverse();
  let hw = dims.height * dims.width;
  let macs = 0;
  const conv = (cin: number, cout: number, k: number) => (macs += dims.batch * hw * cin * cout * k * k);
  const resnet = (cin: number, cout: number) => {
    conv(cin, cout, 3);
    conv(cout, cout, 3);
    if (cin !== cout) conv(cin, cout, 1);
  };
  conv(config.latent_channels, config.latent_channels, 1); // post_quant_conv
  conv(config.latent_channels, ch[0]!, 3);
  resnet(ch[0]!, ch[0]!);
  if (config.mid_block_add_attention ?? true) {
    macs += dims.batch * (4 * hw * ch[0]! * ch[0]! + 2 * hw * hw * ch[0]!); // q, k, v, out; QK^T and PV
  }
  resnet(ch[0]!, ch[0]!);
  let cin = ch[0]!;
  for (let i = 0; i < ch.length; i++) {
    for (let j = 0; j <= config.layers_per_block; j++) {
      resnet(cin, ch[i]!);
      cin = ch[i]!;
    }
    if (i < ch.length - 1) {
      if ((opts.upsample ?? 'phases') === 'phases') macs += dims.batch * hw * cin * cin * 16; // four 2x2 kernels
      hw *= 4;
      if (opts.upsample === 'resize') conv(cin, cin, 3);
    }
  }
  conv(cin, config.out_channels, 3);
  return 2 * macs;
}

/** Encoder: image -> DiagonalGaussian parameters (mean, logvar) after quant_conv. */
export function buildVaeEncoder(b: GraphBuilder, weights: WeightSource, config: VaeNetConfig, opts: VaeEncoderOptions = {}): void {
  const n = new Net(b, weights, config.norm_num_groups, opts.attention ?? 'contrib', config.mid_block_add_attention ?? true);
  const ch = config.block_out_channels;
  const f = vaeScaleFactor(config);
  const latentShape = ['batch', config.latent_channels, `height/${f}`, `width/${f}`];
  let x = b.input(VAE_IO.image, ['batch', config.in_channels, 'height', 'width']);

  x = n.conv('encoder.conv_in', x, 1);
  for (let i = 0; i < ch.length; i++) {
    for (let j = 0; j < config.layers_per_block; j++) x = n.resnet(`encoder.down_blocks.${i}.resnets.${j}`, x);
    if (i < ch.length - 1) {
      // diffusers Downsample2D(padding=0): pad right and bottom by one, then a stride-2 3x3 convolution.
      const padded = b.op('Pad', [x, b.constInt64([0, 0, 0, 0, 0, 0, 1, 1])], { mode: 'constant' });
      x = n.conv(`encoder.down_blocks.${i}.downsamplers.0.conv`, padded, 0, 2);
    }
  }
  x = n.midBlock('encoder.mid_block', x);
  x = n.conv('encoder.conv_out', b.silu(n.groupNorm('encoder.conv_norm_out', x)), 1);
  if (weights.has('quant_conv.weight')) x = n.conv('quant_conv', x, 0);

  const [mean, logvar] = b.split(x, 1, [config.latent_channels, config.latent_channels]) as [Value, Value];
  b.output(mean, VAE_IO.mean, latentShape);
  b.output(b.op('Clip', [logvar, b.constFloat(-30), b.constFloat(20)]), VAE_IO.logvar, latentShape);
}

/** Decoder: latent -> image (in about [-1, 1], unclamped, as vae.decode(...).sample). */
export function buildVaeDecoder(b: GraphBuilder, weights: WeightSource, config: VaeNetConfig, opts: VaeDecoderOptions = {}): void {
  const n = new Net(b, weights, config.norm_num_groups, opts.attention ?? 'contrib', config.mid_block_add_attention ?? true);
  const ch = config.block_out_channels;
  const f = vaeScaleFactor(config);
  let x = b.input(VAE_IO.latent, ['batch', config.latent_channels, 'height', 'width']);
  if (opts.scalingFactor !== undefined) x = b.div(x, b.constFloat(opts.scalingFactor));

  if (weights.has('post_quant_conv.weight')) x = n.conv('post_quant_conv', x, 0);
  x = n.conv('decoder.conv_in', x, 1);
  x = n.midBlock('decoder.mid_block', x);
  for (let i = 0; i < ch.length; i++) {
    for (let j = 0; j <= config.layers_per_block; j++) x = n.resnet(`decoder.up_blocks.${i}.resnets.${j}`, x);
    if (i < ch.length - 1) x = n.upsampleConv(`decoder.up_blocks.${i}.upsamplers.0.conv`, x, opts.upsample ?? 'phases');
  }
  x = n.conv('decoder.conv_out', b.silu(n.groupNorm('decoder.conv_norm_out', x)), 1);
  b.output(x, VAE_IO.image, ['batch', config.out_channels, `height*${f}`, `width*${f}`]);
}

/**
 * The 2x2 kernel that a nearest-2x upsample + 3x3 conv applies to the low-resolution input for output pixels of
 * row parity dy and column parity dx: kernel rows {0} and {1,2} for parity 0, {0,1} and {2} for parity 1
 * (the same for columns), summed in float64.
 */
function collapseKernel(w: Tensor, dy: number, dx: number, name: string): Tensor {
  const [cout, cin, kh, kw] = w.shape as [number, number, number, number];
  if (kh !== 3 || kw !== 3) throw new ModelFileError(name, `expected a 3x3 upsampler kernel, got [${w.shape}]`);
  const taps = (parity: number) => (parity === 0 ? [[0], [1, 2]] : [[0, 1], [2]]);
  const rows = taps(dy);
  const cols = taps(dx);
  const out = new Float32Array(cout * cin * 4);
  for (let oc = 0; oc < cout * cin; oc++) {
    for (let a = 0; a < 2; a++) {
      for (let c = 0; c < 2; c++) {
        let sum = 0;
        for (const ky of rows[a]!) for (const kx of cols[c]!) sum += w.data[oc * 9 + ky * 3 + kx]!;
        out[oc * 4 + a * 2 + c] = sum;
      }
    }
  }
  return { shape: [cout, cin, 2, 2], data: out };
}

/** The layer vocabulary of the VAE, bound to one builder and weight source. */
class Net {
  constructor(
    private readonly b: GraphBuilder,
    private readonly w: WeightSource,
    private readonly groups: number,
    private readonly attention: AttentionKind,
    private readonly midAttention: boolean,
  ) {}

  param(name: string): Tensor {
    if (!this.w.has(name)) throw new ModelFileError(name, 'missing VAE weight (checkpoint does not match the VAE config)');
    return this.w.get(name);
  }

  conv(p: string, x: Value, pad: number, stride = 1): Value {
    return this.b.conv(x, this.param(`${p}.weight`), this.param(`${p}.bias`), p, { pad, stride });
  }

  /** Upsample2D: F.interpolate(scale_factor=2, mode="nearest") then a 3x3 conv with padding 1. */
  upsampleConv(p: string, x: Value, kind: UpsampleKind): Value {
    const b = this.b;
    if (kind === 'resize') {
      // Output sizes as an int64 shape keep this precision-agnostic.
      const sizes = b.mul(b.shapeOf(x), b.constInt64([1, 1, 2, 2]));
      const up = b.op('Resize', [x, null, null, sizes], { mode: 'nearest', coordinate_transformation_mode: 'asymmetric', nearest_mode: 'floor' });
      return this.conv(p, up, 1);
    }
    const weight = this.param(`${p}.weight`);
    const bias = b.weight(`${p}.bias`, this.param(`${p}.bias`));
    const phases: Value[] = [];
    // Output row 2i+dy reads upsampled rows 2i+dy-1..2i+dy+1, i.e. input rows i-1,i,i (dy=0) or i,i,i+1 (dy=1):
    // the 3x3 kernel collapses to 2x2, padded on the top/left for parity 0 and on the bottom/right for parity 1.
    for (const dy of [0, 1]) {
      for (const dx of [0, 1]) {
        const k = collapseKernel(weight, dy, dx, `${p}.weight`);
        phases.push(b.op('Conv', [x, b.weight(`${p}.phase${dy}${dx}.weight`, k), bias], { kernel_shape: [2, 2], pads: [1 - dy, 1 - dx, dy, dx], strides: [1, 1] }));
      }
    }
    // Channel (dy*2+dx)*C + c goes to pixel (2i+dy, 2j+dx) of channel c: DepthToSpace's DCR order.
    return b.op('DepthToSpace', [b.concat(phases, 1)], { blocksize: 2, mode: 'DCR' });
  }

  groupNorm(p: string, x: Value): Value {
    return this.b.groupNorm(x, this.groups, this.param(`${p}.weight`), this.param(`${p}.bias`), EPS, p);
  }

  /** Linear on channels-last data; also accepts the [out, in, 1, 1] conv layout of original-LDM checkpoints. */
  linear(p: string, x: Value): Value {
    const weight = this.param(`${p}.weight`);
    const [out, inn, ...rest] = weight.shape as [number, number, ...number[]];
    if (rest.some((d) => d !== 1)) throw new ModelFileError(`${p}.weight`, `expected a linear or 1x1 conv weight, got [${weight.shape}]`);
    return this.b.linear(x, { shape: [out, inn], data: weight.data }, this.param(`${p}.bias`), p);
  }

  /** ResnetBlock2D without time embedding: shortcut(x) + conv2(silu(norm2(conv1(silu(norm1(x)))))). */
  resnet(p: string, x: Value): Value {
    let h = this.conv(`${p}.conv1`, this.b.silu(this.groupNorm(`${p}.norm1`, x)), 1);
    h = this.conv(`${p}.conv2`, this.b.silu(this.groupNorm(`${p}.norm2`, h)), 1);
    const shortcut = this.w.has(`${p}.conv_shortcut.weight`) ? this.conv(`${p}.conv_shortcut`, x, 0) : x;
    return this.b.add(shortcut, h);
  }

  /** UNetMidBlock2D: resnet, attention, resnet. */
  midBlock(p: string, x: Value): Value {
    x = this.resnet(`${p}.resnets.0`, x);
    if (this.midAttention) x = this.selfAttention(`${p}.attentions.0`, x);
    return this.resnet(`${p}.resnets.1`, x);
  }

  /**
   * diffusers Attention as the VAE uses it: group norm, single-head attention over the H*W pixels with
   * scale 1/sqrt(C), to_out, plus the input (residual_connection; rescale_output_factor is 1).
   */
  selfAttention(p: string, x: Value): Value {
    const b = this.b;
    const channels = this.param(`${p}.to_q.weight`).shape[0]!;
    const normed = this.groupNorm(`${p}.group_norm`, x);
    const tokens = b.transpose(b.reshape(normed, [0, 0, -1]), [0, 2, 1]); // [batch, h*w, C]
    const q = this.linear(`${p}.to_q`, tokens);
    const k = this.linear(`${p}.to_k`, tokens);
    const v = this.linear(`${p}.to_v`, tokens);
    const attn = this.linear(`${p}.to_out.0`, b.attention(q, k, v, { heads: 1, headDim: channels, kind: this.attention }));
    const back = b.reshape(b.transpose(attn, [0, 2, 1]), b.shapeOf(x));
    return b.add(back, x);
  }
}
