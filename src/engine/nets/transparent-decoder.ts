// LayerDiffuse's transparent VAE decoder ("UNet1024", lllyasviel/LayerDiffuse_DiffusersCLI lib_layerdiffuse/vae.py):
// a diffusers-blocks UNet without time input that takes the SD-VAE-decoded RGB in [0,1] and the raw (unscaled)
// latent, and returns [alpha, R, G, B] (straight colour). The latent enters through a 1x1 conv added before the
// down block at 1/8 resolution. Widths, block counts, resnets per block and where attention sits are read from
// the weights; what the released class fixes in code (4 norm groups, eps 1e-5, head dim 8) is a constant here.
// The topology is a plan (plan.ts), so parameter shapes and FLOPs are the usual folds; the graph walk adds the
// latent injection and multi-head pixel attention, the two things UNet1024 has that the SD VAE does not.
import { ModelFileError } from '../api.ts';
import type { GraphBuilder, Value } from '../onnx/graph.ts';
import type { WeightSource } from '../weights/types.ts';
import { conv, groupNorm, NetWeights, pointwise } from './blocks.ts';
import { buildBlock, planFlops, planParameters, type BuildContext, type Step } from './plan.ts';

/** UNet1024's fixed settings (diffusers UNet2DModel arguments in the released class). */
const GROUPS = 4;
const EPS = 1e-5;
const HEAD_DIM = 8;
/** The latent is added before the down block whose input is at 1/8 resolution: after three downsamplers. */
const LATENT_BLOCK = 3;
/** Inputs must be multiples of this: six stride-2 downsamplers (the runner pads other sizes). */
export const TRANSPARENT_DECODER_MULTIPLE = 64;

export interface TransparentDecoderConfig {
  inChannels: number;
  outChannels: number;
  latentChannels: number;
  /** Output channels of each down block (up blocks mirror them). */
  blockOutChannels: number[];
  layersPerBlock: number;
  /** Whether down block i has attention after each resnet (up block n-1-i mirrors it). */
  downAttention: boolean[];
  upAttention: boolean[];
}

/** The released file's shape: (32,32,64,128,256,512,512), attention in the three deepest blocks. */
export const RELEASED_TRANSPARENT_DECODER: TransparentDecoderConfig = {
  inChannels: 3,
  outChannels: 4,
  latentChannels: 4,
  blockOutChannels: [32, 32, 64, 128, 256, 512, 512],
  layersPerBlock: 2,
  downAttention: [false, false, false, false, true, true, true],
  upAttention: [true, true, true, false, false, false, false],
};

/** Graph input/output names. */
export const TRANSPARENT_DECODER_IO = {
  /** [batch, 3, H, W], the SD VAE's decoded RGB in [0,1]; H and W multiples of 64. */
  pixel: 'pixel',
  /** [batch, 4, H/8, W/8], the raw latent (sampler latent / scaling_factor). */
  latent: 'latent',
  /** [batch, 4, H, W], raw (not clipped): channel 0 alpha, 1..3 straight RGB. */
  rgba: 'rgba',
} as const;

/** Reads the topology from the weights (diffusers UNet2DModel names); ModelFileError when it is not a UNet1024. */
export function transparentDecoderConfig(weights: WeightSource, label: string): TransparentDecoderConfig {
  const shape = (name: string) => {
    if (!weights.has(name)) throw new ModelFileError(label, `is not a LayerDiffuse transparent VAE decoder: it has no "${name}"`);
    return weights.shape(name);
  };
  const blockOutChannels: number[] = [];
  for (let i = 0; weights.has(`down_blocks.${i}.resnets.0.conv1.weight`); i++) blockOutChannels.push(shape(`down_blocks.${i}.resnets.0.conv1.weight`)[0]!);
  if (blockOutChannels.length <= LATENT_BLOCK)
    throw new ModelFileError(label, `is not a LayerDiffuse transparent VAE decoder: ${blockOutChannels.length} down blocks`);
  let layersPerBlock = 0;
  while (weights.has(`down_blocks.0.resnets.${layersPerBlock}.conv1.weight`)) layersPerBlock++;
  const n = blockOutChannels.length;
  return {
    inChannels: shape('conv_in.weight')[1]!,
    outChannels: shape('conv_out.weight')[0]!,
    latentChannels: shape('latent_conv_in.weight')[1]!,
    blockOutChannels,
    layersPerBlock,
    downAttention: blockOutChannels.map((_, i) => weights.has(`down_blocks.${i}.attentions.0.to_q.weight`)),
    upAttention: Array.from({ length: n }, (_, i) => weights.has(`up_blocks.${i}.attentions.0.to_q.weight`)),
  };
}

/** The latent injection: latent_conv_in(latent) added to the running sample. */
type AddLatent = { kind: 'addLatent' };
type DecoderStep = Step | AddLatent;

/** UNet2DModel's forward as a plan: conv_in, down blocks (skips pushed), mid block, up blocks (skips concatenated), out. */
export function transparentDecoderPlan(config: TransparentDecoderConfig): DecoderStep[] {
  const ch = config.blockOutChannels;
  const n = ch.length;
  const L = config.layersPerBlock;
  const steps: DecoderStep[] = [];
  const resnet = (prefix: string, cin: number, cout: number) => steps.push({ kind: 'resnet', prefix, cin, cout, groups: GROUPS, eps: EPS });
  const attention = (prefix: string, channels: number) => steps.push({ kind: 'pixelAttention', prefix, channels, groups: GROUPS, eps: EPS });
  steps.push({ kind: 'conv', prefix: 'conv_in', cin: config.inChannels, cout: ch[0]!, kernel: 3 }, { kind: 'pushSkip' });
  let cin = ch[0]!;
  for (let i = 0; i < n; i++) {
    if (i === LATENT_BLOCK) steps.push({ kind: 'addLatent' });
    for (let j = 0; j < L; j++) {
      resnet(`down_blocks.${i}.resnets.${j}`, cin, ch[i]!);
      cin = ch[i]!;
      if (config.downAttention[i]) attention(`down_blocks.${i}.attentions.${j}`, cin);
      steps.push({ kind: 'pushSkip' });
    }
    if (i < n - 1) steps.push({ kind: 'downsample', prefix: `down_blocks.${i}.downsamplers.0`, channels: cin, padding: 1 }, { kind: 'pushSkip' });
  }
  resnet('mid_block.resnets.0', cin, cin);
  attention('mid_block.attentions.0', cin);
  resnet('mid_block.resnets.1', cin, cin);
  const rev = [...ch].reverse();
  for (let i = 0; i < n; i++) {
    const out = rev[i]!;
    // diffusers get_up_block: the last resnet's skip is the next-shallower block's width (its downsampler output).
    const lastSkip = rev[Math.min(i + 1, n - 1)]!;
    for (let j = 0; j <= L; j++) {
      steps.push({ kind: 'concatSkip' });
      resnet(`up_blocks.${i}.resnets.${j}`, cin + (j < L ? out : lastSkip), out);
      cin = out;
      if (config.upAttention[i]) attention(`up_blocks.${i}.attentions.${j}`, out);
    }
    if (i < n - 1) steps.push({ kind: 'upsample', prefix: `up_blocks.${i}.upsamplers.0`, channels: out, how: 'phases', toSkip: false });
  }
  steps.push({ kind: 'normSilu', prefix: 'conv_norm_out', channels: cin, groups: GROUPS, eps: EPS });
  steps.push({ kind: 'conv', prefix: 'conv_out', cin, cout: config.outChannels, kernel: 3 });
  return steps;
}

const planOnly = (steps: DecoderStep[]): Step[] => steps.filter((s): s is Step => s.kind !== 'addLatent');

/** Every parameter name the decoder reads, with its diffusers shape (the released file's key set for its config). */
export function transparentDecoderParameterShapes(config: TransparentDecoderConfig): Map<string, number[]> {
  const shapes = planParameters(planOnly(transparentDecoderPlan(config)));
  const latentOut = config.blockOutChannels[LATENT_BLOCK - 1]!;
  shapes.set('latent_conv_in.weight', [latentOut, config.latentChannels, 1, 1]);
  shapes.set('latent_conv_in.bias', [latentOut]);
  return shapes;
}

/** FLOPs of one pass at `height` x `width` pixels (2 per multiply-add; norms and elementwise work left out). */
export function transparentDecoderFlops(config: TransparentDecoderConfig, height: number, width: number): number {
  const latentPixels = (height / 8) * (width / 8);
  const latent = 2 * latentPixels * config.latentChannels * config.blockOutChannels[LATENT_BLOCK - 1]!;
  return planFlops(planOnly(transparentDecoderPlan(config)), { h: height, w: width }, { batch: 1 }) + latent;
}

/** Every weight present with the shape the config implies; ModelFileError naming the first that is not. */
function checkShapes(weights: WeightSource, config: TransparentDecoderConfig, label: string): void {
  for (const [name, expected] of transparentDecoderParameterShapes(config)) {
    if (!weights.has(name)) throw new ModelFileError(label, `transparent decoder weight "${name}" is missing`);
    const got = weights.shape(name);
    if (got.join(',') !== expected.join(','))
      throw new ModelFileError(label, `transparent decoder weight "${name}" has shape [${got}], expected [${expected}]`);
  }
}

/**
 * diffusers Attention on a feature map as UNet2DModel's attention blocks use it: group norm, q/k/v over the H*W
 * pixels with heads of HEAD_DIM channels, to_out, plus the input. Always onnxruntime's MultiHeadAttention: at
 * 1024² the first attention block has 4096 tokens and 64 heads, whose full score matrices would take 4 GiB.
 */
function multiHeadPixelAttention(b: GraphBuilder, w: NetWeights, prefix: string, x: Value, channels: number): Value {
  const normed = groupNorm(b, w, `${prefix}.group_norm`, x, GROUPS, EPS);
  const tokens = b.transpose(b.reshape(normed, [0, 0, -1]), [0, 2, 1]); // [batch, h*w, C]
  const q = pointwise(b, w, `${prefix}.to_q`, tokens);
  const k = pointwise(b, w, `${prefix}.to_k`, tokens);
  const v = pointwise(b, w, `${prefix}.to_v`, tokens);
  const heads = channels / HEAD_DIM;
  if (!Number.isInteger(heads)) throw new ModelFileError(`${prefix}.to_q.weight`, `${channels} channels do not split into heads of ${HEAD_DIM}`);
  const attn = pointwise(b, w, `${prefix}.to_out.0`, b.attention(q, k, v, { heads, headDim: HEAD_DIM, kind: 'contrib' }));
  return b.add(b.reshape(b.transpose(attn, [0, 2, 1]), b.shapeOf(x)), x);
}

/** pixel [batch,3,H,W] + latent [batch,4,H/8,W/8] -> rgba [batch,4,H,W] (raw). */
export function buildTransparentDecoder(b: GraphBuilder, weights: WeightSource, label: string): TransparentDecoderConfig {
  const config = transparentDecoderConfig(weights, label);
  checkShapes(weights, config, label);
  const w = new NetWeights(weights, 'transparent decoder');
  const c: BuildContext = { b, w, temb: null, context: null, attention: 'contrib' };
  const pixel = b.input(TRANSPARENT_DECODER_IO.pixel, ['batch', config.inChannels, 'height', 'width']);
  const latent = b.input(TRANSPARENT_DECODER_IO.latent, ['batch', config.latentChannels, 'height/8', 'width/8']);
  const skips: Value[] = [];
  let x = pixel;
  for (const s of transparentDecoderPlan(config)) {
    if (s.kind === 'pushSkip') skips.push(x);
    else if (s.kind === 'concatSkip') {
      const skip = skips.pop();
      if (!skip) throw new Error('transparent decoder plan concatenates a skip connection it never made');
      x = b.concat([x, skip], 1);
    } else if (s.kind === 'addLatent') x = b.add(x, conv(b, w, 'latent_conv_in', latent));
    else if (s.kind === 'pixelAttention') x = multiHeadPixelAttention(b, w, s.prefix, x, s.channels);
    else x = buildBlock(c, s, x);
  }
  b.output(x, TRANSPARENT_DECODER_IO.rgba, ['batch', config.outChannels, 'height', 'width']);
  return config;
}
