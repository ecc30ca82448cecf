// Building blocks shared by the diffusion networks (diffusers module names and semantics): ResNet blocks,
// spatial transformers with self/cross attention and GEGLU feed-forward, the VAE's pixel self-attention,
// up/down samplers and the sinusoidal timestep embedding. Every function reads its weights by diffusers
// parameter name under `prefix`; which blocks a network runs, with which channels, is its plan (plan.ts).
import { ModelFileError, type Tiling } from '../api.ts';
import { float, type AttentionKind, type GraphBuilder, type Value } from '../onnx/graph.ts';
import { OnnxDType } from '../onnx/proto.ts';
import type { Tensor } from '../tensor.ts';
import type { WeightSource } from '../weights/types.ts';
import type { LoraBranchSites } from './lora-branch.ts';
import { quantizedLinear } from './quantized-linear.ts';

/**
 * How the transformer blocks are expressed. 'contrib': onnxruntime's com.microsoft kernels (MultiHeadAttention,
 * which on CPU is a flash attention that never holds a whole score matrix, plus SkipLayerNormalization and
 * BiasGelu); 'onnx': standard ONNX ops only (MatMul/Softmax attention), for runtimes without the contrib ops.
 */
export type UnetAttentionKind = AttentionKind;

/** One network's weights by diffusers name; a missing required one is a checkpoint that does not match the config. */
export class NetWeights {
  constructor(
    readonly source: WeightSource,
    /** The network's name in error messages ("UNet", "VAE"). */
    readonly net: string,
    /** Set when the network is built with LoRA branches (graph inputs) at its Linear/Conv sites. */
    readonly branches?: LoraBranchSites,
  ) {}

  has(name: string): boolean {
    return this.source.has(name);
  }

  /** A required parameter. */
  param(name: string): Tensor {
    if (!this.source.has(name)) throw new ModelFileError(name, `missing ${this.net} weight (checkpoint does not match the ${this.net} config)`);
    return this.source.get(name);
  }

  /** A parameter some checkpoints leave out (biases). */
  optional(name: string): Tensor | undefined {
    return this.source.has(name) ? this.source.get(name) : undefined;
  }
}

/** torch.nn.Linear under `prefix` (weight [out, in], optional bias). */
export function linear(b: GraphBuilder, w: NetWeights, prefix: string, x: Value, scale = 1): Value {
  const q = quantizedLinear(b, w, prefix, x, { scale });
  if (q) return linearWithBranch(b, w, prefix, x, q.y, q.shape, { scale });
  let weight = w.param(`${prefix}.weight`);
  let bias = w.optional(`${prefix}.bias`);
  if (scale !== 1) {
    weight = scaled(weight, scale);
    bias = bias && scaled(bias, scale);
  }
  return linearWithBranch(b, w, prefix, x, b.linear(x, weight, bias, prefix), weight.shape, { scale });
}

/** A linear site's output plus its LoRA branch when the network has branches (weight [out, in, ...1]). */
function linearWithBranch(
  b: GraphBuilder,
  w: NetWeights,
  prefix: string,
  x: Value,
  y: Value,
  shape: number[],
  opts: { cols?: [number, number]; scale?: number } = {},
): Value {
  return w.branches ? w.branches.linear(b, prefix, x, y, { in: shape[1]!, out: shape[0]!, ...opts }) : y;
}

function scaled(t: Tensor, s: number): Tensor {
  const data = new Float32Array(t.data.length);
  for (let i = 0; i < data.length; i++) data[i] = t.data[i]! * s;
  return { shape: t.shape, data };
}

/**
 * A linear [out, in] weight, or a 1x1 convolution [out, in, 1, 1] (original-LDM checkpoints store some
 * projections so), applied as a linear layer on channels-last data.
 */
export function pointwise(b: GraphBuilder, w: NetWeights, prefix: string, x: Value): Value {
  const q = quantizedLinear(b, w, prefix, x);
  if (q) return linearWithBranch(b, w, prefix, x, q.y, q.shape);
  const weight = w.param(`${prefix}.weight`);
  const flat: Tensor = { shape: weight.shape.slice(0, 2), data: weight.data };
  if (weight.shape.slice(2).some((d) => d !== 1)) {
    throw new ModelFileError(`${prefix}.weight`, `expected a linear or 1x1 convolution weight, got shape [${weight.shape}]`);
  }
  return linearWithBranch(b, w, prefix, x, b.linear(x, flat, w.optional(`${prefix}.bias`), prefix), weight.shape);
}

/** The axes a tiling wraps: y (rows, axis 2 of NCHW) and x (columns, axis 3). */
function wrapsOf(tiling: Tiling | undefined): { y: boolean; x: boolean } {
  return { y: tiling === 'xy' || tiling === 'y', x: tiling === 'xy' || tiling === 'x' };
}

/**
 * The input of a padded 2-D convolution and the zero padding left for the convolution itself, per side
 * [top, left, bottom, right]: axes the tiling wraps are padded circularly here (Slice + Concat), the others
 * stay the convolution's zero padding. Circular rows first, then columns, so corners wrap on both axes as
 * torch's circular padding does.
 */
export function wrapForConv(b: GraphBuilder, x: Value, pads: [number, number, number, number], tiling: Tiling | undefined): { x: Value; pads: number[] } {
  const [top, left, bottom, right] = pads;
  const wrap = wrapsOf(tiling);
  let h = x;
  if (wrap.y) h = b.wrapPad(h, 2, top, bottom);
  if (wrap.x) h = b.wrapPad(h, 3, left, right);
  return { x: h, pads: [wrap.y ? 0 : top, wrap.x ? 0 : left, wrap.y ? 0 : bottom, wrap.x ? 0 : right] };
}

/**
 * A convolution with `pad` zeros on every side; with a tiling, the wrapped axes are padded circularly instead
 * (torch's padding_mode 'circular', what A1111's tiling switches every Conv2d to). Without padding (1x1
 * convolutions) a tiling changes nothing.
 */
export function conv(b: GraphBuilder, w: NetWeights, prefix: string, x: Value, opts: { stride?: number; pad?: number; tiling?: Tiling } = {}): Value {
  const weight = w.param(`${prefix}.weight`);
  const bias = w.optional(`${prefix}.bias`);
  const pad = opts.pad ?? 0;
  const withBranch = (input: Value, y: Value, pads: number[]) =>
    w.branches
      ? w.branches.conv(b, prefix, input, y, { in: weight.shape[1]!, out: weight.shape[0]!, kernel: weight.shape.slice(2), stride: opts.stride ?? 1, pads })
      : y;
  if (!opts.tiling || pad === 0) return withBranch(x, b.conv(x, weight, bias, prefix, { stride: opts.stride, pad: opts.pad }), [pad, pad, pad, pad]);
  const wrapped = wrapForConv(b, x, [pad, pad, pad, pad], opts.tiling);
  return withBranch(wrapped.x, b.conv(wrapped.x, weight, bias, prefix, { stride: opts.stride, pads: wrapped.pads }), wrapped.pads);
}

export function groupNorm(b: GraphBuilder, w: NetWeights, prefix: string, x: Value, groups: number, eps: number): Value {
  return b.groupNorm(x, groups, w.param(`${prefix}.weight`), w.param(`${prefix}.bias`), eps, prefix);
}

export function layerNorm(b: GraphBuilder, w: NetWeights, prefix: string, x: Value, eps: number): Value {
  return b.layerNorm(x, w.param(`${prefix}.weight`), w.param(`${prefix}.bias`), eps, prefix);
}

/** A float32 constant regardless of the builder's precision (timestep math must stay in fp32). */
export function constFloat32(b: GraphBuilder, values: number[], dims: number[]): Value {
  const data = Float32Array.from(values);
  return b.op('Constant', [], {
    value: { tensor: { name: 'c', dims, dataType: OnnxDType.FLOAT, rawData: new Uint8Array(data.buffer) } },
  });
}

/** Casts an fp32 value to the builder's compute type (no-op in fp32). */
export function toCompute(b: GraphBuilder, x: Value): Value {
  return b.precision === 'fp16' ? b.cast(x, OnnxDType.FLOAT16) : x;
}

/**
 * diffusers get_timestep_embedding: t [N] (fp32) -> [N, dim] sinusoids with frequencies
 * exp(-ln(10000) * i / (half - shift)); [sin, cos], or [cos, sin] when flipSinToCos. Frequencies are rounded
 * to float32 step by step as torch computes them.
 */
export function timestepSinusoids(b: GraphBuilder, t: Value, dim: number, flipSinToCos: boolean, freqShift: number): Value {
  if (dim % 2 !== 0) throw new Error(`timestep embedding dim ${dim} must be even`);
  const half = dim / 2;
  const freqs: number[] = [];
  for (let i = 0; i < half; i++) {
    const exponent = Math.fround(Math.fround(-Math.log(10000) * i) / (half - freqShift));
    freqs.push(Math.fround(Math.exp(exponent)));
  }
  const args = b.mul(b.op('Unsqueeze', [t, b.constInt64([1])]), constFloat32(b, freqs, [1, half]));
  const sin = b.op('Sin', [args]);
  const cos = b.op('Cos', [args]);
  return b.concat(flipSinToCos ? [cos, sin] : [sin, cos], 1);
}

/** diffusers TimestepEmbedding: linear_1 -> SiLU -> linear_2. */
export function timestepMlp(b: GraphBuilder, w: NetWeights, prefix: string, x: Value): Value {
  return linear(b, w, `${prefix}.linear_2`, b.silu(linear(b, w, `${prefix}.linear_1`, x)));
}

export interface ResnetOptions {
  groups: number;
  eps: number;
  /** conv_shortcut: a 1x1 convolution on the input, which diffusers has exactly when in and out channels differ. */
  shortcut: boolean;
  /** diffusers output_scale_factor (1 in SD UNets). */
  outputScale?: number;
  /** Seamless tiling: conv1 and conv2 pad circularly on these axes. */
  tiling?: Tiling;
}

/**
 * diffusers ResnetBlock2D (time_embedding_norm "default"): x + conv2(silu(norm2(conv1(silu(norm1 x)) + temb))).
 * `tembAct` is silu(time embedding) [batch, T], shared by all blocks; null for blocks without time input (VAE).
 */
export function resnetBlock(b: GraphBuilder, w: NetWeights, prefix: string, x: Value, tembAct: Value | null, opts: ResnetOptions): Value {
  let h = b.silu(groupNorm(b, w, `${prefix}.norm1`, x, opts.groups, opts.eps));
  h = conv(b, w, `${prefix}.conv1`, h, { pad: 1, tiling: opts.tiling });
  if (tembAct) {
    const t = linear(b, w, `${prefix}.time_emb_proj`, tembAct);
    h = b.add(h, b.op('Unsqueeze', [t, b.constInt64([2, 3])]));
  }
  h = b.silu(groupNorm(b, w, `${prefix}.norm2`, h, opts.groups, opts.eps));
  h = conv(b, w, `${prefix}.conv2`, h, { pad: 1, tiling: opts.tiling });
  const shortcut = opts.shortcut ? conv(b, w, `${prefix}.conv_shortcut`, x) : x;
  const out = b.add(shortcut, h);
  const s = opts.outputScale ?? 1;
  return s === 1 ? out : b.scale(out, 1 / s);
}

/**
 * diffusers Downsample2D with use_conv: a stride-2 3x3 convolution. padding 1 (UNet) pads every side by one;
 * padding 0 (VAE encoder) pads only the right and bottom, by one, as diffusers does before its convolution.
 * A tiling wraps the padding-1 kind; the padding-0 kind keeps its explicit zero pad, as in A1111, where the
 * circular mode belongs to the Conv2d (whose own padding is 0 there) and not to the F.pad before it.
 */
export function downsample(b: GraphBuilder, w: NetWeights, prefix: string, x: Value, padding: 0 | 1, tiling?: Tiling): Value {
  if (padding === 1) return conv(b, w, `${prefix}.conv`, x, { stride: 2, pad: 1, tiling });
  const padded = b.op('Pad', [x, b.constInt64([0, 0, 0, 0, 0, 0, 1, 1])], { mode: 'constant' });
  return conv(b, w, `${prefix}.conv`, padded, { pad: 0, stride: 2 });
}

/**
 * How nearest-2x upsampling + 3x3 conv is computed: 'resize' is the literal Resize then Conv; 'phases' runs four
 * 2x2 convolutions on the low-resolution input, one per output pixel parity, and interleaves them
 * (DepthToSpace): the same function with 16 instead of 36 multiply-adds per input pixel and channel pair, and
 * no full-resolution Resize copy.
 */
export type UpsampleKind = 'phases' | 'resize';

/**
 * diffusers Upsample2D with use_conv. 'resize' resizes to the size of `like` (the skip connection the UNet
 * concatenates next, which is also right for odd latent sizes, where diffusers passes upsample_size), or else
 * to twice the input; 'phases' is always exactly twice the input.
 */
export function upsample(b: GraphBuilder, w: NetWeights, prefix: string, x: Value, kind: UpsampleKind, like: Value | null, tiling?: Tiling): Value {
  const p = `${prefix}.conv`;
  if (kind === 'phases') return phaseUpsample(b, w, p, x, tiling);
  // Output sizes as an int64 shape keep this precision-agnostic.
  const sizes = like ? b.concat([b.sliceDims(b.shapeOf(x), 0, 2), b.sliceDims(b.shapeOf(like), 2, 4)], 0) : b.mul(b.shapeOf(x), b.constInt64([1, 1, 2, 2]));
  const up = b.op('Resize', [x, null, null, sizes], { mode: 'nearest', coordinate_transformation_mode: 'asymmetric', nearest_mode: 'floor' });
  return conv(b, w, p, up, { pad: 1, tiling });
}

function phaseUpsample(b: GraphBuilder, w: NetWeights, p: string, x: Value, tiling: Tiling | undefined): Value {
  const weight = w.param(`${p}.weight`);
  const bias = b.weight(`${p}.bias`, w.param(`${p}.bias`));
  const phases: Value[] = [];
  // Output row 2i+dy reads upsampled rows 2i+dy-1..2i+dy+1, i.e. input rows i-1,i,i (dy=0) or i,i,i+1 (dy=1):
  // the 3x3 kernel collapses to 2x2, padded on the top/left for parity 0 and on the bottom/right for parity 1.
  for (const dy of [0, 1]) {
    for (const dx of [0, 1]) {
      const k = collapseKernel(weight, dy, dx, `${p}.weight`);
      // Tiled: the upsampled image wraps exactly when the low-resolution input does (row -1 of the upsampled
      // image is input row h-1, row 2h is input row 0), so the one row or column each phase pads wraps here.
      const input = tiling ? wrapForConv(b, x, [1 - dy, 1 - dx, dy, dx], tiling) : { x, pads: [1 - dy, 1 - dx, dy, dx] };
      phases.push(b.op('Conv', [input.x, b.weight(`${p}.phase${dy}${dx}.weight`, k), bias], { kernel_shape: [2, 2], pads: input.pads, strides: [1, 1] }));
    }
  }
  // Channel (dy*2+dx)*C + c goes to pixel (2i+dy, 2j+dx) of channel c: DepthToSpace's DCR order.
  return b.op('DepthToSpace', [b.concat(phases, 1)], { blocksize: 2, mode: 'DCR' });
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

/**
 * diffusers Attention as the VAE's mid block uses it: group norm, single-head attention over the H*W pixels
 * with scale 1/sqrt(C), to_out, plus the input (residual_connection; rescale_output_factor is 1).
 */
export function pixelSelfAttention(
  b: GraphBuilder,
  w: NetWeights,
  prefix: string,
  x: Value,
  opts: { channels: number; groups: number; eps: number; kind: AttentionKind },
): Value {
  const normed = groupNorm(b, w, `${prefix}.group_norm`, x, opts.groups, opts.eps);
  const tokens = b.transpose(b.reshape(normed, [0, 0, -1]), [0, 2, 1]); // [batch, h*w, C]
  const q = pointwise(b, w, `${prefix}.to_q`, tokens);
  const k = pointwise(b, w, `${prefix}.to_k`, tokens);
  const v = pointwise(b, w, `${prefix}.to_v`, tokens);
  const attn = pointwise(b, w, `${prefix}.to_out.0`, b.attention(q, k, v, { heads: 1, headDim: opts.channels, kind: opts.kind }));
  const back = b.reshape(b.transpose(attn, [0, 2, 1]), b.shapeOf(x));
  return b.add(back, x);
}

export interface AttentionOptions {
  heads: number;
  kind: AttentionKind;
  /** diffusers upcast_attention: scores and softmax in fp32 when the graph is fp16 ('onnx' kind). */
  upcast?: boolean;
}

/** A linear layer's MatMul, with its bias handed back for a later fused op (SkipLayerNormalization). */
function matmulOnly(b: GraphBuilder, w: NetWeights, prefix: string, x: Value): { y: Value; bias: Tensor | undefined } {
  const q = quantizedLinear(b, w, prefix, x, { bias: false });
  if (q) return { y: linearWithBranch(b, w, prefix, x, q.y, q.shape), bias: w.optional(`${prefix}.bias`) };
  const weight = w.param(`${prefix}.weight`);
  return { y: linearWithBranch(b, w, prefix, x, b.linear(x, weight, undefined, prefix), weight.shape), bias: w.optional(`${prefix}.bias`) };
}

/**
 * diffusers Attention (to_q/to_k/to_v without bias), up to but excluding to_out.0. x: rows [batch*seq, dim]
 * and `toBatched` its [batch, seq, dim] shape; context: [batch, tokens, ctxDim] for cross-attention, or null
 * for self-attention. Returns rows [batch*seq, inner]. Scale 1/sqrt(headDim).
 */
function attentionCore(b: GraphBuilder, w: NetWeights, prefix: string, rows: Value, toBatched: Value, context: Value | null, opts: AttentionOptions): Value {
  const innerDim = w.param(`${prefix}.to_q.weight`).shape[0]!;
  const headDim = innerDim / opts.heads;
  if (!Number.isInteger(headDim)) throw new ModelFileError(`${prefix}.to_q.weight`, `${innerDim} channels do not split into ${opts.heads} heads`);
  const scale = 1 / Math.sqrt(headDim);
  const x = b.reshape(rows, toBatched);
  const kv = context ?? x;
  let out: Value;
  if (opts.kind === 'contrib') {
    const q = linear(b, w, `${prefix}.to_q`, x);
    const k = linear(b, w, `${prefix}.to_k`, kv);
    const v = linear(b, w, `${prefix}.to_v`, kv);
    out = b.msOp('MultiHeadAttention', [q, k, v], { num_heads: opts.heads, scale: float(scale) });
  } else {
    // The score scale is folded into the query projection, so no separate multiply over [b, h, s, t].
    const q = linear(b, w, `${prefix}.to_q`, x, scale);
    const k = linear(b, w, `${prefix}.to_k`, kv);
    const v = linear(b, w, `${prefix}.to_v`, kv);
    const heads = (t: Value, perm: number[]) => b.transpose(b.reshape(t, [0, 0, opts.heads, headDim]), perm);
    let qh = heads(q, [0, 2, 1, 3]); // [b, h, s, d]
    let kt = heads(k, [0, 2, 3, 1]); // [b, h, d, t]
    const upcast = opts.upcast && b.precision === 'fp16';
    if (upcast) {
      qh = b.cast(qh, OnnxDType.FLOAT);
      kt = b.cast(kt, OnnxDType.FLOAT);
    }
    const vh = heads(v, [0, 2, 1, 3]);
    const rows = (qPart: Value) => {
      let probs = b.softmax(b.matmul(qPart, kt), -1);
      if (upcast) probs = b.cast(probs, OnnxDType.FLOAT16);
      return b.matmul(probs, vh);
    };
    // Self-attention's scores grow with the square of the tokens: sliced queries past a threshold. Cross-attention
    // (77 context tokens) stays whole.
    out = b.transpose(context ? rows(qh) : b.queryChunks(qh, 2, rows), [0, 2, 1, 3]); // [b, s, h, d]
  }
  return b.reshape(out, [-1, innerDim]);
}

/**
 * residual + delta (+ bias), then LayerNorm: returns [normed, sum]. In 'contrib' mode one
 * SkipLayerNormalization kernel does both adds and the norm in one pass over the rows.
 */
function addThenNorm(
  b: GraphBuilder,
  w: NetWeights,
  normPrefix: string,
  delta: Value,
  bias: Tensor | undefined,
  residual: Value,
  kind: AttentionKind,
  eps: number,
): [Value, Value] {
  const gamma = w.param(`${normPrefix}.weight`);
  const beta = w.param(`${normPrefix}.bias`);
  if (kind === 'contrib') {
    const ins = [delta, residual, b.weight(`${normPrefix}.weight`, gamma), b.weight(`${normPrefix}.bias`, beta)];
    if (bias) ins.push(b.weight(`${normPrefix}.skip_bias`, bias));
    const outs = b.opN('SkipLayerNormalization', ins, 4, { epsilon: float(eps) }, 'com.microsoft');
    return [outs[0]!, outs[3]!];
  }
  const sum = b.add(bias ? b.add(delta, b.weight(`${normPrefix}.skip_bias`, bias)) : delta, residual);
  return [b.layerNorm(sum, gamma, beta, eps, normPrefix), sum];
}

/**
 * diffusers FeedForward with GEGLU (net.0.proj to 2*inner, hidden * gelu(gate), net.2), without net.2's bias,
 * which is returned. The projection is split into its hidden and gate halves at build time: two matmuls
 * instead of one plus a Split copy, and in 'contrib' mode the gate's bias and GELU run as one BiasGelu.
 */
function gegluFeedForward(b: GraphBuilder, w: NetWeights, prefix: string, x: Value, kind: AttentionKind): { y: Value; bias: Tensor | undefined } {
  const proj = w.param(`${prefix}.net.0.proj.weight`);
  const projBias = w.param(`${prefix}.net.0.proj.bias`);
  const [twoInner, dim] = proj.shape as [number, number];
  const inner = twoInner / 2;
  const half = (t: Tensor, i: number, rows: number[]): Tensor => ({
    shape: rows,
    data: t.data.subarray(i * inner * (t.shape[1] ?? 1), (i + 1) * inner * (t.shape[1] ?? 1)),
  });
  const site = `${prefix}.net.0.proj`;
  const q = (rows: [number, number], name: string, bias: boolean) => quantizedLinear(b, w, site, x, { rows, bias, name: `${site}.${name}` });
  const qHidden = q([0, inner], 'hidden', true);
  if (qHidden) {
    // Quantised: the same two halves as MatMulNBits ops (the gate's bias stays with its GELU).
    const hiddenQ = linearWithBranch(b, w, site, x, qHidden.y, qHidden.shape, { cols: [0, inner] });
    const gateQ = q([inner, twoInner], 'gate', kind !== 'contrib')!;
    const gateY = linearWithBranch(b, w, site, x, gateQ.y, gateQ.shape, { cols: [inner, twoInner] });
    const gated = kind === 'contrib' ? b.msOp('BiasGelu', [gateY, b.weight(`${prefix}.net.0.proj.gate.bias`, half(projBias, 1, [inner]))]) : b.gelu(gateY);
    return matmulOnly(b, w, `${prefix}.net.2`, b.mul(hiddenQ, gated));
  }
  const hidden = linearWithBranch(b, w, site, x, b.linear(x, half(proj, 0, [inner, dim]), half(projBias, 0, [inner]), `${site}.hidden`), proj.shape, {
    cols: [0, inner],
  });
  const gateLinear = (weight: Tensor, bias: Tensor | undefined) =>
    linearWithBranch(b, w, site, x, b.linear(x, weight, bias, `${site}.gate`), proj.shape, { cols: [inner, twoInner] });
  const gateW = half(proj, 1, [inner, dim]);
  const gateB = half(projBias, 1, [inner]);
  let gate: Value;
  if (kind === 'contrib') {
    gate = b.msOp('BiasGelu', [gateLinear(gateW, undefined), b.weight(`${prefix}.net.0.proj.gate.bias`, gateB)]);
  } else {
    gate = b.gelu(gateLinear(gateW, gateB));
  }
  return matmulOnly(b, w, `${prefix}.net.2`, b.mul(hidden, gate));
}

export interface Transformer2dOptions extends AttentionOptions {
  layers: number;
  groups: number;
}

/**
 * diffusers Transformer2DModel on NCHW input: GroupNorm (eps 1e-6), proj_in, `layers` BasicTransformerBlocks
 * (norm1 -> self-attention, norm2 -> cross-attention, norm3 -> GEGLU, each with a residual) over the h*w tokens,
 * proj_out, plus the input. proj_in/proj_out are 1x1 convolutions (SD1) or linears (use_linear_projection,
 * SD2/SDXL); both are the same channel matmul, so both run on channels-last rows [batch*h*w, C]: 2-D rows let
 * onnxruntime fuse every MatMul+bias into one Gemm, and the graph transposes only once in and once out.
 */
export function transformer2d(b: GraphBuilder, w: NetWeights, prefix: string, x: Value, context: Value, opts: Transformer2dOptions): Value {
  const eps = 1e-5;
  const normed = groupNorm(b, w, `${prefix}.norm`, x, opts.groups, 1e-6);
  const nhwc = b.transpose(normed, [0, 2, 3, 1]);
  const channels = w.param(`${prefix}.norm.weight`).shape[0]!;
  const inner = w.param(`${prefix}.proj_in.weight`).shape[0]!;
  const toBatched = b.concat([b.sliceDims(b.shapeOf(x), 0, 1), b.constInt64([-1, inner])], 0);
  let h = pointwise(b, w, `${prefix}.proj_in`, b.reshape(nhwc, [-1, channels]));
  let pending: { y: Value; bias: Tensor | undefined } | undefined; // the previous block's feed-forward output
  for (let i = 0; i < opts.layers; i++) {
    const t = `${prefix}.transformer_blocks.${i}`;
    let n1: Value;
    if (pending) [n1, h] = addThenNorm(b, w, `${t}.norm1`, pending.y, pending.bias, h, opts.kind, eps);
    else n1 = layerNorm(b, w, `${t}.norm1`, h, eps);
    const a1 = matmulOnly(b, w, `${t}.attn1.to_out.0`, attentionCore(b, w, `${t}.attn1`, n1, toBatched, null, opts));
    const [n2, h2] = addThenNorm(b, w, `${t}.norm2`, a1.y, a1.bias, h, opts.kind, eps);
    const a2 = matmulOnly(b, w, `${t}.attn2.to_out.0`, attentionCore(b, w, `${t}.attn2`, n2, toBatched, context, opts));
    const [n3, h3] = addThenNorm(b, w, `${t}.norm3`, a2.y, a2.bias, h2, opts.kind, eps);
    h = h3;
    pending = gegluFeedForward(b, w, `${t}.ff`, n3, opts.kind);
  }
  if (pending) {
    const ff = pending.bias ? b.add(pending.y, b.weight(`${prefix}.ff_out_bias`, pending.bias)) : pending.y;
    h = b.add(ff, h);
  }
  h = pointwise(b, w, `${prefix}.proj_out`, h);
  const back = b.transpose(b.reshape(h, b.shapeOf(nhwc)), [0, 3, 1, 2]);
  return b.add(back, x);
}

/** GELU with the tanh approximation (torch approximate="tanh", transformers "gelu_new"). */
export function geluTanh(b: GraphBuilder, x: Value): Value {
  const cube = b.mul(b.mul(x, x), x);
  const inner = b.scale(b.add(x, b.scale(cube, 0.044715)), Math.sqrt(2 / Math.PI));
  return b.mul(b.scale(x, 0.5), b.add(b.op('Tanh', [inner]), b.constFloat(1)));
}

/** RMS norm over the last axis without the scale: x / sqrt(mean(x^2) + eps) (T5LayerNorm, Flux's QK norm). */
export function rmsNormalize(b: GraphBuilder, x: Value, eps: number): Value {
  const ms = b.op('ReduceMean', [b.mul(x, x)], { axes: [-1], keepdims: 1 });
  return b.mul(x, b.op('Reciprocal', [b.op('Sqrt', [b.add(ms, b.constFloat(eps))])]));
}
