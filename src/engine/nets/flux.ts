// The Flux.1 transformer (black-forest-labs/flux `Flux`) as an ONNX graph, read by BFL parameter names
// (`double_blocks.0.img_attn.qkv.weight`; diffusers folders are mapped onto these names by
// weights/flux-keys.ts). Joint text+image attention with per-head RMS-normed q/k and 3-axis RoPE, adaLN-style
// modulation from one conditioning vector (timestep + guidance + pooled text), then double-stream blocks
// (separate weights per stream), single-stream blocks (one fused linear for qkv and the MLP) and a final
// modulated projection of the image tokens.
import { ModelFileError } from '../api.ts';
import { float, type AttentionKind, type GraphBuilder, type Value } from '../onnx/graph.ts';
import type { WeightSource } from '../weights/types.ts';
import { constFloat32, geluTanh, linear, NetWeights, rmsNormalize, timestepSinusoids, toCompute } from './blocks.ts';

/** What the graph depends on; everything but the RoPE axes is read off the weights' shapes. */
export interface FluxConfig {
  /** Packed latent channels per token (16 latent channels x 2x2 patch = 64). */
  inChannels: number;
  hidden: number;
  heads: number;
  headDim: number;
  mlpHidden: number;
  /** Width of the pooled text vector `y` (CLIP-L pooled: 768). */
  vecInDim: number;
  /** Width of the text tokens `txt` (T5-XXL: 4096). */
  contextInDim: number;
  doubleBlocks: number;
  singleBlocks: number;
  /** dev has a guidance embedding (distilled guidance as an input); schnell does not. */
  guidanceEmbed: boolean;
  /** RoPE dims per position axis (sum = headDim): [16, 56, 56] in FLUX.1. */
  axesDim: number[];
  theta: number;
}

export interface FluxGraphOptions {
  /** Text tokens per prompt: fixed per graph (T5 max length, 512 for dev and 256 for schnell). */
  textTokens: number;
  attention?: AttentionKind;
}

/** Graph input/output names (BFL `Flux.forward` argument names). */
export const FLUX_IO = {
  img: 'img',
  imgIds: 'img_ids',
  txt: 'txt',
  txtIds: 'txt_ids',
  timesteps: 'timesteps',
  y: 'y',
  guidance: 'guidance',
  output: 'output',
} as const;

const EPS = 1e-6;

function countBlocks(names: string[], prefix: string): number {
  let n = 0;
  for (const name of names) {
    if (!name.startsWith(prefix)) continue;
    const i = Number.parseInt(name.slice(prefix.length), 10);
    if (Number.isInteger(i)) n = Math.max(n, i + 1);
  }
  return n;
}

/**
 * The config of a Flux transformer from its BFL-named weights. `axesDim` is not in the weights; it defaults to
 * FLUX.1's [16, 56, 56] when the head dim is 128 and must be given otherwise (diffusers: `axes_dims_rope`).
 */
export function fluxConfigFromWeights(w: WeightSource, axesDim?: number[], theta = 10000): FluxConfig {
  const shape = (name: string): number[] => {
    if (!w.has(name)) throw new ModelFileError(name, 'missing Flux transformer weight (not a Flux.1 checkpoint?)');
    return w.shape(name);
  };
  const [hidden, inChannels] = shape('img_in.weight') as [number, number];
  const headDim = shape('double_blocks.0.img_attn.norm.query_norm.scale')[0]!;
  const axes = axesDim ?? (headDim === 128 ? [16, 56, 56] : undefined);
  if (!axes) throw new ModelFileError('axes_dims_rope', `unknown RoPE axes for a Flux transformer with head dim ${headDim}: give the config's axes_dims_rope`);
  if (axes.reduce((a, d) => a + d, 0) !== headDim || axes.some((d) => d % 2 !== 0)) {
    throw new ModelFileError('axes_dims_rope', `RoPE axes [${axes}] must be even and sum to the head dim ${headDim}`);
  }
  if (hidden % headDim !== 0) throw new ModelFileError('img_in.weight', `hidden ${hidden} is not a multiple of the head dim ${headDim}`);
  const names = w.names();
  return {
    inChannels,
    hidden,
    heads: hidden / headDim,
    headDim,
    mlpHidden: shape('double_blocks.0.img_mlp.0.weight')[0]!,
    vecInDim: shape('vector_in.in_layer.weight')[1]!,
    contextInDim: shape('txt_in.weight')[1]!,
    doubleBlocks: countBlocks(names, 'double_blocks.'),
    singleBlocks: countBlocks(names, 'single_blocks.'),
    guidanceEmbed: w.has('guidance_in.in_layer.weight'),
    axesDim: axes,
    theta,
  };
}

/**
 * Adds the Flux transformer to `b`. Inputs: img [B, L, inChannels] (packed latents), img_ids [B, L, 3],
 * txt [B, T, contextInDim], txt_ids [B, T, 3], timesteps [B] (sigma in [0, 1]), y [B, vecInDim], and guidance [B]
 * when the weights have a guidance embedding. Output [B, L, inChannels]: the flow (velocity) prediction.
 */
export function buildFluxTransformer(b: GraphBuilder, weights: WeightSource, config: FluxConfig, opts: FluxGraphOptions): void {
  const w = new NetWeights(weights, 'Flux transformer');
  const c = config;
  const T = opts.textTokens;
  const kind = opts.attention ?? 'contrib';
  let img = b.input(FLUX_IO.img, ['batch', 'tokens', c.inChannels]);
  const imgIds = b.input(FLUX_IO.imgIds, ['batch', 'tokens', 3], 'float', { keepFloat32: true });
  let txt = b.input(FLUX_IO.txt, ['batch', T, c.contextInDim]);
  const txtIds = b.input(FLUX_IO.txtIds, ['batch', T, 3], 'float', { keepFloat32: true });
  const t = b.input(FLUX_IO.timesteps, ['batch'], 'float', { keepFloat32: true });
  const y = b.input(FLUX_IO.y, ['batch', c.vecInDim]);

  // Conditioning vector: MLPEmbedders of the timestep (and guidance) sinusoids, plus the pooled text.
  const mlpEmbed = (prefix: string, x: Value) => linear(b, w, `${prefix}.out_layer`, b.silu(linear(b, w, `${prefix}.in_layer`, x)));
  const sinusoids = (v: Value) => toCompute(b, timestepSinusoids(b, b.mul(v, constFloat32(b, [1000], [])), 256, true, 0));
  let vec = b.add(mlpEmbed('time_in', sinusoids(t)), mlpEmbed('vector_in', y));
  if (c.guidanceEmbed) {
    const g = b.input(FLUX_IO.guidance, ['batch'], 'float', { keepFloat32: true });
    vec = b.add(vec, mlpEmbed('guidance_in', sinusoids(g)));
  }
  const vecAct = b.op('Unsqueeze', [b.silu(vec), b.constInt64([1])]); // [B, 1, hidden]: broadcasts over tokens

  img = linear(b, w, 'img_in', img);
  txt = linear(b, w, 'txt_in', txt);
  const rope = ropeTables(b, b.concat([txtIds, imgIds], 1), c);
  const ctx: BlockContext = { b, w, c, rope, kind, vecAct, ones: b.constFloat(new Array<number>(c.hidden).fill(1)) };

  for (let i = 0; i < c.doubleBlocks; i++) [img, txt] = doubleBlock(ctx, `double_blocks.${i}`, img, txt, T);
  let x = b.concat([txt, img], 1);
  for (let i = 0; i < c.singleBlocks; i++) x = singleBlock(ctx, `single_blocks.${i}`, x);
  img = b.slice(x, [T], [Number.MAX_SAFE_INTEGER], [1]);

  const [shift, scale] = chunks(ctx, 'final_layer.adaLN_modulation.1', 2);
  const out = linear(b, w, 'final_layer.linear', modulate(ctx, img, shift!, scale!));
  b.output(out, FLUX_IO.output, ['batch', 'tokens', c.inChannels]);
}

interface BlockContext {
  b: GraphBuilder;
  w: NetWeights;
  c: FluxConfig;
  rope: { cos: Value; sin: Value };
  kind: AttentionKind;
  vecAct: Value;
  /** LayerNorm scale of ones: Flux's norms have no affine parameters. */
  ones: Value;
}

/** Linear(SiLU(vec)) split into `n` [B, 1, hidden] chunks (shift, scale, gate, ... in BFL order). */
function chunks(ctx: BlockContext, prefix: string, n: number): Value[] {
  const m = linear(ctx.b, ctx.w, prefix, ctx.vecAct);
  return ctx.b.split(m, 2, new Array<number>(n).fill(ctx.c.hidden));
}

/** (1 + scale) * LayerNorm(x) + shift, the norm without affine parameters (eps 1e-6). */
function modulate(ctx: BlockContext, x: Value, shift: Value, scale: Value): Value {
  const { b } = ctx;
  const normed = b.op('LayerNormalization', [x, ctx.ones], { axis: -1, epsilon: float(EPS) });
  return b.add(b.mul(normed, b.add(scale, b.constFloat(1))), shift);
}

/**
 * cos/sin of the RoPE angles, [B, L, headDim/2, 1] each: for rotation pair d on axis a, angle = ids[a] * theta^(-2j/dim_a).
 * Written as ids @ M with one non-zero per column, so each angle is a single float32 product.
 */
function ropeTables(b: GraphBuilder, ids: Value, c: FluxConfig): { cos: Value; sin: Value } {
  const pairs = c.headDim / 2;
  const m = new Array<number>(3 * pairs).fill(0);
  let p = 0;
  c.axesDim.forEach((dim, axis) => {
    for (let j = 0; j < dim / 2; j++, p++) m[axis * pairs + p] = 1 / c.theta ** ((2 * j) / dim);
  });
  const angles = b.matmul(ids, constFloat32(b, m, [3, pairs])); // [B, L, pairs]
  // [B, L, 1, pairs, 1]: broadcasts over heads and against the (even, odd) halves of each pair.
  const shape = (v: Value) => toCompute(b, b.op('Unsqueeze', [v, b.constInt64([2, 4])]));
  return { cos: shape(b.op('Cos', [angles])), sin: shape(b.op('Sin', [angles])) };
}

/** [B, L, H*D] -> RMSNorm per head (scale [D]) -> [B, L, H, D]. */
function headNorm(ctx: BlockContext, x: Value, scaleName: string): Value {
  const { b, c } = ctx;
  const heads = b.reshape(x, [0, 0, c.heads, c.headDim]);
  return b.mul(rmsNormalize(b, heads, EPS), b.weight(scaleName, ctx.w.param(scaleName)));
}

/** [B, L, H, D] over the joint [txt, img] sequence -> RoPE on interleaved pairs -> [B, L, H*D]. */
function rope(ctx: BlockContext, x: Value): Value {
  const { b, c } = ctx;
  const pairs = b.reshape(x, [0, 0, c.heads, c.headDim / 2, 2]);
  const [x0, x1] = b.split(pairs, 4, [1, 1]) as [Value, Value];
  const { cos, sin } = ctx.rope;
  const r0 = b.sub(b.mul(cos, x0), b.mul(sin, x1));
  const r1 = b.add(b.mul(sin, x0), b.mul(cos, x1));
  return b.reshape(b.concat([r0, r1], 4), [0, 0, c.hidden]);
}

/** Fused qkv [B, L, 3*hidden] (K outermost, then heads) -> q and k normed per head [B, L, H, D], and v [B, L, H*D]. */
function qkvOf(ctx: BlockContext, qkv: Value, normPrefix: string): [Value, Value, Value] {
  const [q, k, v] = ctx.b.split(qkv, 2, [ctx.c.hidden, ctx.c.hidden, ctx.c.hidden]) as [Value, Value, Value];
  return [headNorm(ctx, q, `${normPrefix}.query_norm.scale`), headNorm(ctx, k, `${normPrefix}.key_norm.scale`), v];
}

/** Attention over the joint sequence; RoPE positions are the joint [txt, img] ids, so q and k rotate after joining. */
function attend(ctx: BlockContext, q: Value, k: Value, v: Value): Value {
  return ctx.b.attention(rope(ctx, q), rope(ctx, k), v, { heads: ctx.c.heads, headDim: ctx.c.headDim, kind: ctx.kind });
}

/** BFL DoubleStreamBlock: each stream modulated with its own weights, one joint attention over [txt, img]. */
function doubleBlock(ctx: BlockContext, p: string, img: Value, txt: Value, textTokens: number): [Value, Value] {
  const { b, w } = ctx;
  const im = chunks(ctx, `${p}.img_mod.lin`, 6);
  const tm = chunks(ctx, `${p}.txt_mod.lin`, 6);
  const [iq, ik, iv] = qkvOf(ctx, linear(b, w, `${p}.img_attn.qkv`, modulate(ctx, img, im[0]!, im[1]!)), `${p}.img_attn.norm`);
  const [tq, tk, tv] = qkvOf(ctx, linear(b, w, `${p}.txt_attn.qkv`, modulate(ctx, txt, tm[0]!, tm[1]!)), `${p}.txt_attn.norm`);
  const attn = attend(ctx, b.concat([tq, iq], 1), b.concat([tk, ik], 1), b.concat([tv, iv], 1));
  const txtAttn = b.slice(attn, [0], [textTokens], [1]);
  const imgAttn = b.slice(attn, [textTokens], [Number.MAX_SAFE_INTEGER], [1]);
  const stream = (x: Value, a: Value, mod: Value[], s: 'img' | 'txt') => {
    x = b.add(x, b.mul(mod[2]!, linear(b, w, `${p}.${s}_attn.proj`, a)));
    const h = geluTanh(b, linear(b, w, `${p}.${s}_mlp.0`, modulate(ctx, x, mod[3]!, mod[4]!)));
    return b.add(x, b.mul(mod[5]!, linear(b, w, `${p}.${s}_mlp.2`, h)));
  };
  return [stream(img, imgAttn, im, 'img'), stream(txt, txtAttn, tm, 'txt')];
}

/** BFL SingleStreamBlock: linear1 gives qkv and the MLP input in one matmul; linear2 mixes attention and MLP. */
function singleBlock(ctx: BlockContext, p: string, x: Value): Value {
  const { b, w, c } = ctx;
  const [shift, scale, gate] = chunks(ctx, `${p}.modulation.lin`, 3);
  const fused = linear(b, w, `${p}.linear1`, modulate(ctx, x, shift!, scale!));
  const [qkv, mlp] = b.split(fused, 2, [3 * c.hidden, c.mlpHidden]) as [Value, Value];
  const [q, k, v] = qkvOf(ctx, qkv, `${p}.norm`);
  const out = linear(b, w, `${p}.linear2`, b.concat([attend(ctx, q, k, v), geluTanh(b, mlp)], 2));
  return b.add(x, b.mul(gate!, out));
}

/** Every BFL weight a Flux transformer of `c` has, with its shape (parameter counts, memory estimates, benches). */
export function fluxParameterShapes(c: FluxConfig): Map<string, number[]> {
  const shapes = new Map<string, number[]>();
  const lin = (name: string, out: number, inn: number) => {
    shapes.set(`${name}.weight`, [out, inn]);
    shapes.set(`${name}.bias`, [out]);
  };
  const mlpEmbedder = (name: string, inn: number) => {
    lin(`${name}.in_layer`, c.hidden, inn);
    lin(`${name}.out_layer`, c.hidden, c.hidden);
  };
  const h = c.hidden;
  lin('img_in', h, c.inChannels);
  mlpEmbedder('time_in', 256);
  mlpEmbedder('vector_in', c.vecInDim);
  if (c.guidanceEmbed) mlpEmbedder('guidance_in', 256);
  lin('txt_in', h, c.contextInDim);
  for (let i = 0; i < c.doubleBlocks; i++) {
    for (const s of ['img', 'txt']) {
      const p = `double_blocks.${i}.${s}`;
      lin(`${p}_mod.lin`, 6 * h, h);
      lin(`${p}_attn.qkv`, 3 * h, h);
      shapes.set(`${p}_attn.norm.query_norm.scale`, [c.headDim]);
      shapes.set(`${p}_attn.norm.key_norm.scale`, [c.headDim]);
      lin(`${p}_attn.proj`, h, h);
      lin(`${p}_mlp.0`, c.mlpHidden, h);
      lin(`${p}_mlp.2`, h, c.mlpHidden);
    }
  }
  for (let i = 0; i < c.singleBlocks; i++) {
    const p = `single_blocks.${i}`;
    lin(`${p}.linear1`, 3 * h + c.mlpHidden, h);
    lin(`${p}.linear2`, h, h + c.mlpHidden);
    shapes.set(`${p}.norm.query_norm.scale`, [c.headDim]);
    shapes.set(`${p}.norm.key_norm.scale`, [c.headDim]);
    lin(`${p}.modulation.lin`, 3 * h, h);
  }
  lin('final_layer.linear', c.inChannels, h);
  lin('final_layer.adaLN_modulation.1', 2 * h, h);
  return shapes;
}

/** FLUX.1-dev's config (schnell: guidanceEmbed false). */
export const FLUX1_DEV: FluxConfig = {
  inChannels: 64,
  hidden: 3072,
  heads: 24,
  headDim: 128,
  mlpHidden: 12288,
  vecInDim: 768,
  contextInDim: 4096,
  doubleBlocks: 19,
  singleBlocks: 38,
  guidanceEmbed: true,
  axesDim: [16, 56, 56],
  theta: 10000,
};
