// AutoencoderKL (diffusers) encoder and decoder as ONNX graphs, driven by the VAE config: ResNet blocks,
// a mid block with one single-head self-attention over all pixels, stride-2 downsampling and nearest 2x
// upsampling, all from the shared blocks. Each half is a plan (plan.ts); its graph, FLOP count and parameter
// names and shapes are folds over it. Weights use diffusers names ("encoder.down_blocks.0.resnets.0.conv1.weight").
import type { Tiling } from '../api.ts';
import type { AttentionKind, GraphBuilder, Value } from '../onnx/graph.ts';
import type { VaeConfig, WeightSource } from '../weights/types.ts';
import { NetWeights, type UpsampleKind } from './blocks.ts';
import { buildSteps, planFlops, planParameters, type BuildContext, type Step } from './plan.ts';

export type { UpsampleKind } from './blocks.ts';

/** The config.json fields the graphs depend on (diffusers AutoencoderKL names). */
export type VaeNetConfig = Pick<
  VaeConfig,
  'block_out_channels' | 'layers_per_block' | 'norm_num_groups' | 'latent_channels' | 'in_channels' | 'out_channels'
> & {
  /** diffusers' switch for the mid-block attention (default true; false in a few newer VAEs). */
  mid_block_add_attention?: boolean;
};

export interface VaeEncoderOptions {
  attention?: AttentionKind;
  /** Seamless tiling: a graph variant whose padded convolutions wrap around on these axes. */
  tiling?: Tiling;
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
   * How nearest-2x upsampling + 3x3 conv is computed (see UpsampleKind): 'phases' (default), four 2x2
   * convolutions at the low resolution interleaved by DepthToSpace; 'resize', the literal Resize then Conv.
   */
  upsample?: UpsampleKind;
  /** Seamless tiling: a graph variant whose padded convolutions wrap around on these axes. */
  tiling?: Tiling;
}

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
  return { attention: opts.attention ?? 'contrib', ...tilingOption(opts.tiling) };
}

/** Every decoder option with its default filled in: the part of a graph-cache key that describes the graph. */
export function vaeDecoderGraphOptions(opts: VaeDecoderOptions): Record<string, unknown> {
  return {
    attention: opts.attention ?? 'contrib',
    scalingFactor: opts.scalingFactor ?? null,
    upsample: opts.upsample ?? 'phases',
    ...tilingOption(opts.tiling),
  };
}

/** Only present when set: the key of an untiled graph is what it was before tiling existed. */
function tilingOption(tiling: Tiling | undefined): { tiling?: Tiling } {
  return tiling ? { tiling } : {};
}

/** The spatial factor between image and latent: 2 per down block except the last (8 for SD). */
export function vaeScaleFactor(config: VaeNetConfig): number {
  return 2 ** (config.block_out_channels.length - 1);
}

/** Blocks without time input, with the VAE's groups and eps. */
function vaeSteps(config: VaeNetConfig, body: Step[]) {
  const groups = config.norm_num_groups;
  return {
    resnet: (prefix: string, cin: number, cout: number) => body.push({ kind: 'resnet', prefix, cin, cout, groups, eps: EPS }),
    /** UNetMidBlock2D: resnet, attention (unless mid_block_add_attention is false), resnet. */
    midBlock: (prefix: string, channels: number) => {
      body.push({ kind: 'resnet', prefix: `${prefix}.resnets.0`, cin: channels, cout: channels, groups, eps: EPS });
      if (config.mid_block_add_attention ?? true) body.push({ kind: 'pixelAttention', prefix: `${prefix}.attentions.0`, channels, groups, eps: EPS });
      body.push({ kind: 'resnet', prefix: `${prefix}.resnets.1`, cin: channels, cout: channels, groups, eps: EPS });
    },
    normSilu: (prefix: string, channels: number) => body.push({ kind: 'normSilu', prefix, channels, groups, eps: EPS }),
  };
}

/** Encoder: conv_in, down blocks (resnets, then a right/bottom-padded stride-2 conv but in the last), mid block, conv_out, quant_conv. */
export function vaeEncoderPlan(config: VaeNetConfig): Step[] {
  const body: Step[] = [];
  const s = vaeSteps(config, body);
  const ch = config.block_out_channels;
  const last = ch[ch.length - 1]!;
  const moments = 2 * config.latent_channels;
  body.push({ kind: 'conv', prefix: 'encoder.conv_in', cin: config.in_channels, cout: ch[0]!, kernel: 3 });
  let cin = ch[0]!;
  for (let i = 0; i < ch.length; i++) {
    for (let j = 0; j < config.layers_per_block; j++) {
      s.resnet(`encoder.down_blocks.${i}.resnets.${j}`, cin, ch[i]!);
      cin = ch[i]!;
    }
    if (i < ch.length - 1) body.push({ kind: 'downsample', prefix: `encoder.down_blocks.${i}.downsamplers.0`, channels: cin, padding: 0 });
  }
  s.midBlock('encoder.mid_block', last);
  s.normSilu('encoder.conv_norm_out', last);
  body.push({ kind: 'conv', prefix: 'encoder.conv_out', cin: last, cout: moments, kernel: 3 });
  body.push({ kind: 'conv', prefix: 'quant_conv', cin: moments, cout: moments, kernel: 1, optional: true });
  return body;
}

/** Decoder: post_quant_conv, conv_in, mid block, up blocks (one more resnet than the encoder's, then a 2x upsampler but in the last), conv_out. */
export function vaeDecoderPlan(config: VaeNetConfig, opts: Pick<VaeDecoderOptions, 'upsample'> = {}): Step[] {
  const body: Step[] = [];
  const s = vaeSteps(config, body);
  const ch = [...config.block_out_channels].reverse();
  const latent = config.latent_channels;
  body.push({ kind: 'conv', prefix: 'post_quant_conv', cin: latent, cout: latent, kernel: 1, optional: true });
  body.push({ kind: 'conv', prefix: 'decoder.conv_in', cin: latent, cout: ch[0]!, kernel: 3 });
  s.midBlock('decoder.mid_block', ch[0]!);
  let cin = ch[0]!;
  for (let i = 0; i < ch.length; i++) {
    for (let j = 0; j <= config.layers_per_block; j++) {
      s.resnet(`decoder.up_blocks.${i}.resnets.${j}`, cin, ch[i]!);
      cin = ch[i]!;
    }
    if (i < ch.length - 1)
      body.push({ kind: 'upsample', prefix: `decoder.up_blocks.${i}.upsamplers.0`, channels: cin, how: opts.upsample ?? 'phases', toSkip: false });
  }
  s.normSilu('decoder.conv_norm_out', cin);
  body.push({ kind: 'conv', prefix: 'decoder.conv_out', cin, cout: config.out_channels, kernel: 3 });
  return body;
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
  return planFlops(vaeDecoderPlan(config, opts), { h: dims.height, w: dims.width }, dims);
}

/** diffusers AutoencoderKL parameter names and shapes (encoder, quant convs, decoder): what the two graphs read. */
export function vaeParameterShapes(config: VaeNetConfig): Map<string, number[]> {
  return planParameters(vaeDecoderPlan(config), planParameters(vaeEncoderPlan(config)));
}

function context(b: GraphBuilder, weights: WeightSource, opts: { attention?: AttentionKind; tiling?: Tiling }): BuildContext {
  return { b, w: new NetWeights(weights, 'VAE'), temb: null, context: null, attention: opts.attention ?? 'contrib', tiling: opts.tiling };
}

/** Encoder: image -> DiagonalGaussian parameters (mean, logvar) after quant_conv. */
export function buildVaeEncoder(b: GraphBuilder, weights: WeightSource, config: VaeNetConfig, opts: VaeEncoderOptions = {}): void {
  const f = vaeScaleFactor(config);
  const latentShape = ['batch', config.latent_channels, `height/${f}`, `width/${f}`];
  const image = b.input(VAE_IO.image, ['batch', config.in_channels, 'height', 'width']);
  const moments = buildSteps(context(b, weights, opts), vaeEncoderPlan(config), image);
  const [mean, logvar] = b.split(moments, 1, [config.latent_channels, config.latent_channels]) as [Value, Value];
  b.output(mean, VAE_IO.mean, latentShape);
  b.output(b.op('Clip', [logvar, b.constFloat(-30), b.constFloat(20)]), VAE_IO.logvar, latentShape);
}

/** Decoder: latent -> image (in about [-1, 1], unclamped, as vae.decode(...).sample). */
export function buildVaeDecoder(b: GraphBuilder, weights: WeightSource, config: VaeNetConfig, opts: VaeDecoderOptions = {}): void {
  const f = vaeScaleFactor(config);
  let x = b.input(VAE_IO.latent, ['batch', config.latent_channels, 'height', 'width']);
  if (opts.scalingFactor !== undefined) x = b.div(x, b.constFloat(opts.scalingFactor));
  const image = buildSteps(context(b, weights, opts), vaeDecoderPlan(config, opts), x);
  b.output(image, VAE_IO.image, ['batch', config.out_channels, `height*${f}`, `width*${f}`]);
}
