// A network as a plan: the blocks its forward pass runs, in order, with the channels each one has, and the
// skip connections between them. Everything else about a network is a fold over its plan: the ONNX graph
// (buildSteps), the parameter names and shapes a checkpoint must hold (planParameters) and the FLOP count
// (planFlops). Each block type is described here once, in BLOCKS: its weights with the work they do, the size
// of its output, and its graph.
import type { Tiling } from '../api.ts';
import type { AttentionKind, GraphBuilder, Value } from '../onnx/graph.ts';
import {
  conv,
  downsample,
  groupNorm,
  pixelSelfAttention,
  resnetBlock,
  timestepMlp,
  transformer2d,
  upsample,
  type NetWeights,
  type UpsampleKind,
} from './blocks.ts';

/** A convolution with bias; "same" padding for its kernel. `optional`: some checkpoints leave it out (VAE quant convs). */
export interface ConvStep {
  kind: 'conv';
  prefix: string;
  cin: number;
  cout: number;
  kernel: 1 | 3;
  optional?: boolean;
}

/** GroupNorm then SiLU (conv_norm_out before conv_out). */
export interface NormSiluStep {
  kind: 'normSilu';
  prefix: string;
  channels: number;
  groups: number;
  eps: number;
}

/** diffusers ResnetBlock2D; `tembDim`: the width of the time embedding it adds, when it has one (UNet). */
export interface ResnetStep {
  kind: 'resnet';
  prefix: string;
  cin: number;
  cout: number;
  groups: number;
  eps: number;
  tembDim?: number;
}

/** diffusers Transformer2DModel with `layers` BasicTransformerBlocks (self- and cross-attention, GEGLU). */
export interface TransformerStep {
  kind: 'transformer';
  prefix: string;
  channels: number;
  layers: number;
  heads: number;
  groups: number;
  contextDim: number;
  /** use_linear_projection: proj_in/proj_out are linears (SD2/SDXL), else 1x1 convolutions (SD1). */
  linearProjection: boolean;
  upcast: boolean;
}

/** The VAE mid block's single-head self-attention over all pixels. */
export interface PixelAttentionStep {
  kind: 'pixelAttention';
  prefix: string;
  channels: number;
  groups: number;
  eps: number;
}

/** Downsample2D: stride-2 3x3 convolution; `padding` as diffusers' (1: all sides, 0: right and bottom). */
export interface DownsampleStep {
  kind: 'downsample';
  prefix: string;
  channels: number;
  padding: 0 | 1;
}

/** Upsample2D: nearest 2x then a 3x3 convolution; `toSkip`: resize to the size of the next skip connection. */
export interface UpsampleStep {
  kind: 'upsample';
  prefix: string;
  channels: number;
  how: UpsampleKind;
  toSkip: boolean;
}

/** TimestepEmbedding: linear_1 (inDim -> dim), SiLU, linear_2. */
export interface TimestepMlpStep {
  kind: 'timestepMlp';
  prefix: string;
  inDim: number;
  dim: number;
}

export type Block = ConvStep | NormSiluStep | ResnetStep | TransformerStep | PixelAttentionStep | DownsampleStep | UpsampleStep | TimestepMlpStep;

/** Remember the current value as a skip connection; concatenate the latest remembered one onto the channels. */
export type Flow = { kind: 'pushSkip' } | { kind: 'concatSkip' };

export type Step = Block | Flow;

/** Spatial size of an activation. */
export interface Size {
  h: number;
  w: number;
}

/** Where a block runs: its input and output sizes, the batch and the cross-attention context length. */
export interface Extent {
  batch: number;
  tokens: number;
  in: Size;
  out: Size;
}

/** What a block tells a fold about itself: each weight, with the multiply-adds it does. */
interface Tally {
  /** Convolution weight [cout, cin, k, k] and bias [cout], applied at `pixels` output positions. */
  conv(name: string, cout: number, cin: number, k: number, pixels: number): void;
  /** Linear weight [out, in] (and bias [out]) applied to `rows` rows. */
  linear(name: string, out: number, inn: number, rows: number, bias?: boolean): void;
  /** Norm scale and shift [channels]. */
  norm(name: string, channels: number): void;
  /** Work that is not one weight's (attention scores, phase-collapsed kernels). */
  macs(n: number): void;
}

/** What the graph fold hands every block. */
export interface BuildContext {
  b: GraphBuilder;
  w: NetWeights;
  /** silu(time embedding) [batch, T]; null in networks without time input. */
  temb: Value | null;
  /** Cross-attention context [batch, tokens, dim]; null in networks without. */
  context: Value | null;
  attention: AttentionKind;
  /** Seamless tiling: every spatially padded convolution pads circularly on these axes. */
  tiling?: Tiling;
}

interface BlockKind<S extends Block> {
  /** Weights and work at `at` (a fold that only wants the weights passes a zero extent). */
  describe(s: S, at: Extent, t: Tally): void;
  /** Output size; the input size when absent. `skip`: the next skip connection's size. */
  outSize?(s: S, size: Size, skip: Size | undefined): Size;
  build(c: BuildContext, s: S, x: Value, skip: Value | undefined): Value;
}

const pixels = (batch: number, s: Size) => batch * s.h * s.w;

const BLOCKS: { [K in Block['kind']]: BlockKind<Extract<Block, { kind: K }>> } = {
  conv: {
    describe: (s, at, t) => t.conv(s.prefix, s.cout, s.cin, s.kernel, pixels(at.batch, at.out)),
    build: (c, s, x) => {
      if (s.optional && !c.w.has(`${s.prefix}.weight`)) return x;
      return conv(c.b, c.w, s.prefix, x, { pad: (s.kernel - 1) / 2, tiling: c.tiling });
    },
  },
  normSilu: {
    describe: (s, _at, t) => t.norm(s.prefix, s.channels),
    build: (c, s, x) => c.b.silu(groupNorm(c.b, c.w, s.prefix, x, s.groups, s.eps)),
  },
  resnet: {
    describe: (s, at, t) => {
      const px = pixels(at.batch, at.out);
      t.norm(`${s.prefix}.norm1`, s.cin);
      t.conv(`${s.prefix}.conv1`, s.cout, s.cin, 3, px);
      // Per sample, not per pixel: left out of the work like the norms.
      if (s.tembDim !== undefined) t.linear(`${s.prefix}.time_emb_proj`, s.cout, s.tembDim, 0);
      t.norm(`${s.prefix}.norm2`, s.cout);
      t.conv(`${s.prefix}.conv2`, s.cout, s.cout, 3, px);
      if (s.cin !== s.cout) t.conv(`${s.prefix}.conv_shortcut`, s.cout, s.cin, 1, px);
    },
    build: (c, s, x) => {
      if (s.tembDim !== undefined && !c.temb) throw new Error(`${s.prefix}: a time-conditioned block built without a time embedding`);
      return resnetBlock(c.b, c.w, s.prefix, x, s.tembDim !== undefined ? c.temb : null, {
        groups: s.groups,
        eps: s.eps,
        shortcut: s.cin !== s.cout,
        tiling: c.tiling,
      });
    },
  },
  transformer: {
    describe: (s, at, t) => {
      const c = s.channels;
      const px = pixels(at.batch, at.out);
      const hw = at.out.h * at.out.w;
      const contextRows = at.batch * at.tokens;
      const proj = (name: string) => (s.linearProjection ? t.linear(name, c, c, px) : t.conv(name, c, c, 1, px));
      t.norm(`${s.prefix}.norm`, c);
      proj(`${s.prefix}.proj_in`);
      for (let l = 0; l < s.layers; l++) {
        const p = `${s.prefix}.transformer_blocks.${l}`;
        for (const n of ['norm1', 'norm2', 'norm3']) t.norm(`${p}.${n}`, c);
        for (const [a, kvDim, kvRows] of [
          ['attn1', c, px],
          ['attn2', s.contextDim, contextRows],
        ] as const) {
          t.linear(`${p}.${a}.to_q`, c, c, px, false);
          t.linear(`${p}.${a}.to_k`, c, kvDim, kvRows, false);
          t.linear(`${p}.${a}.to_v`, c, kvDim, kvRows, false);
          t.linear(`${p}.${a}.to_out.0`, c, c, px);
        }
        t.macs(2 * px * hw * c); // self-attention QK^T and PV
        t.macs(2 * px * at.tokens * c); // cross-attention QK^T and PV
        t.linear(`${p}.ff.net.0.proj`, 8 * c, c, px);
        t.linear(`${p}.ff.net.2`, c, 4 * c, px);
      }
      proj(`${s.prefix}.proj_out`);
    },
    build: (c, s, x) => {
      if (!c.context) throw new Error(`${s.prefix}: a cross-attention block built without a context`);
      return transformer2d(c.b, c.w, s.prefix, x, c.context, { heads: s.heads, layers: s.layers, groups: s.groups, kind: c.attention, upcast: s.upcast });
    },
  },
  pixelAttention: {
    describe: (s, at, t) => {
      const px = pixels(at.batch, at.out);
      t.norm(`${s.prefix}.group_norm`, s.channels);
      for (const p of ['to_q', 'to_k', 'to_v', 'to_out.0']) t.linear(`${s.prefix}.${p}`, s.channels, s.channels, px);
      t.macs(2 * px * at.out.h * at.out.w * s.channels); // QK^T and PV
    },
    build: (c, s, x) => pixelSelfAttention(c.b, c.w, s.prefix, x, { channels: s.channels, groups: s.groups, eps: s.eps, kind: c.attention }),
  },
  downsample: {
    describe: (s, at, t) => t.conv(`${s.prefix}.conv`, s.channels, s.channels, 3, pixels(at.batch, at.out)),
    // padding 1: ceil(n/2); padding 0 (right/bottom only): floor(n/2).
    outSize: (s, { h, w }) =>
      s.padding === 1 ? { h: Math.floor((h - 1) / 2) + 1, w: Math.floor((w - 1) / 2) + 1 } : { h: Math.floor(h / 2), w: Math.floor(w / 2) },
    build: (c, s, x) => downsample(c.b, c.w, s.prefix, x, s.padding, c.tiling),
  },
  upsample: {
    describe: (s, at, t) => {
      const c = s.channels;
      if (s.how === 'resize') return t.conv(`${s.prefix}.conv`, c, c, 3, pixels(at.batch, at.out));
      t.conv(`${s.prefix}.conv`, c, c, 3, 0);
      t.macs(pixels(at.batch, at.in) * c * c * 16); // four 2x2 kernels at the input resolution
    },
    outSize: (s, { h, w }, skip) => {
      if (!s.toSkip) return { h: 2 * h, w: 2 * w };
      if (!skip) throw new Error(`${s.prefix}: no skip connection to take the size of`);
      return skip;
    },
    build: (c, s, x, skip) => {
      if (s.toSkip && !skip) throw new Error(`${s.prefix}: no skip connection to take the size of`);
      return upsample(c.b, c.w, s.prefix, x, s.how, s.toSkip ? skip! : null, c.tiling);
    },
  },
  timestepMlp: {
    // Per sample, not per pixel: left out of the work like the norms.
    describe: (s, _at, t) => {
      t.linear(`${s.prefix}.linear_1`, s.dim, s.inDim, 0);
      t.linear(`${s.prefix}.linear_2`, s.dim, s.dim, 0);
    },
    build: (c, s, x) => timestepMlp(c.b, c.w, s.prefix, x),
  },
};

function kindOf<S extends Block>(s: S): BlockKind<S> {
  return BLOCKS[s.kind] as unknown as BlockKind<S>;
}

/**
 * The one interpretation of the data flow, for any kind of value (graph values, sizes): runs the steps on `x`,
 * keeping the skip connections on a stack.
 */
function walk<V>(steps: readonly Step[], x: V, apply: (s: Block, x: V, skip: V | undefined) => V, concat: (x: V, skip: V) => V, skips: V[] = []): V {
  for (const s of steps) {
    if (s.kind === 'pushSkip') skips.push(x);
    else if (s.kind === 'concatSkip') {
      const skip = skips.pop();
      if (skip === undefined) throw new Error('plan concatenates a skip connection it never made');
      x = concat(x, skip);
    } else x = apply(s, x, skips[skips.length - 1]);
  }
  return x;
}

/**
 * Graph fold: appends the steps' ops to `c.b`, starting from `x`; returns the last value. `skips` is the skip
 * connection stack, shared when a plan is built in parts (the UNet's step-reuse graphs); it is updated in place.
 */
export function buildSteps(c: BuildContext, steps: readonly Step[], x: Value, skips: Value[] = []): Value {
  return walk(
    steps,
    x,
    (s, v, skip) => kindOf(s).build(c, s, v, skip),
    (v, skip) => c.b.concat([v, skip], 1),
    skips,
  );
}

/** The channels of a block's output (undefined for flow steps). */
export function outputChannels(s: Step): number | undefined {
  switch (s.kind) {
    case 'conv':
    case 'resnet':
      return s.cout;
    case 'normSilu':
    case 'transformer':
    case 'pixelAttention':
    case 'downsample':
    case 'upsample':
      return s.channels;
    case 'timestepMlp':
      return s.dim;
    default:
      return undefined;
  }
}

/** One block's graph, outside any flow (the UNet's embedding MLPs). */
export function buildBlock(c: BuildContext, s: Block, x: Value): Value {
  return kindOf(s).build(c, s, x, undefined);
}

/**
 * Tiling fold: the convolutions a tiling switches to circular padding, by weight name: every convolution with
 * spatial padding (3x3 convs, resnet conv1/conv2, padding-1 downsamplers, upsamplers). 1x1 convolutions and the
 * VAE encoder's right/bottom zero-padded downsamplers are left as they are.
 */
export function planWrappedConvs(steps: readonly Step[]): string[] {
  const names: string[] = [];
  for (const s of steps) {
    if (s.kind === 'conv' && s.kernel === 3) names.push(s.prefix);
    else if (s.kind === 'resnet') names.push(`${s.prefix}.conv1`, `${s.prefix}.conv2`);
    else if ((s.kind === 'downsample' && s.padding === 1) || s.kind === 'upsample') names.push(`${s.prefix}.conv`);
  }
  return names;
}

const NOWHERE: Extent = { batch: 0, tokens: 0, in: { h: 0, w: 0 }, out: { h: 0, w: 0 } };

/** Parameter fold: every weight name the steps read, with its diffusers shape, in plan order. */
export function planParameters(steps: readonly Step[], into = new Map<string, number[]>()): Map<string, number[]> {
  const tally: Tally = {
    conv: (name, cout, cin, k) => {
      into.set(`${name}.weight`, [cout, cin, k, k]);
      into.set(`${name}.bias`, [cout]);
    },
    linear: (name, out, inn, _rows, bias = true) => {
      into.set(`${name}.weight`, [out, inn]);
      if (bias) into.set(`${name}.bias`, [out]);
    },
    norm: (name, channels) => {
      into.set(`${name}.weight`, [channels]);
      into.set(`${name}.bias`, [channels]);
    },
    macs: () => {},
  };
  for (const s of steps) if (s.kind !== 'pushSkip' && s.kind !== 'concatSkip') kindOf(s).describe(s, NOWHERE, tally);
  return into;
}

/**
 * FLOP fold: floating-point operations of the steps on an input of `size` (2 per multiply-add of convolutions,
 * linears and attention matmuls; norms, elementwise ops and per-sample embedding projections are left out as a
 * rounding error).
 */
export function planFlops(steps: readonly Step[], size: Size, dims: { batch: number; tokens?: number }): number {
  let macs = 0;
  const tally: Tally = {
    conv: (_name, cout, cin, k, px) => (macs += px * cin * cout * k * k),
    linear: (_name, out, inn, rows) => (macs += rows * inn * out),
    norm: () => {},
    macs: (n) => (macs += n),
  };
  walk<Size>(
    steps,
    size,
    (s, inSize, skip) => {
      const kind = kindOf(s);
      const out = kind.outSize ? kind.outSize(s, inSize, skip) : inSize;
      kind.describe(s, { batch: dims.batch, tokens: dims.tokens ?? 0, in: inSize, out }, tally);
      return out;
    },
    (x) => x,
  );
  return 2 * macs;
}
