// The SD3 MMDiT (Stability's reference MMDiT, as in sd3_medium.safetensors) as an ONNX graph, read by the original
// parameter names (diffusers folders are mapped onto them by weights/sd3-keys.ts): 2x2 patch embedding plus a
// centre-cropped fixed sin-cos position table, a conditioning vector c = t-embedding + pooled-text embedding, joint
// blocks that modulate the context and image streams separately and attend over [context, image] together (the last
// context block only contributes keys and values), then a modulated projection and unpatchify. SD3.5 adds, where
// the weights have them: per-head RMS norm of q and k (`attn.ln_q` / `attn.ln_k`, both streams; Large and Medium) and
// MMDiT-X's second, image-only self-attention (`x_block.attn2`, Medium's first layers) fed by its own shift/scale
// and added with its own gate (such an x_block's adaLN has 9 chunks: the usual 6, then shift2, scale2, gate2).
import { ModelFileError } from '../api.ts';
import { float, type AttentionKind, type GraphBuilder, type Value } from '../onnx/graph.ts';
import type { WeightSource } from '../weights/types.ts';
import { geluTanh, linear, NetWeights, rmsNormalize, timestepSinusoids, toCompute } from './blocks.ts';

export interface MmditConfig {
  hidden: number;
  /** depth = heads; the head width is 64 in every SD3 model. */
  depth: number;
  heads: number;
  patch: number;
  channels: number;
  /** Side of the square pos_embed table (192 for SD3-medium, 8 in the tiny fixture). */
  posEmbedMaxSize: number;
  contextInDim: number;
  pooledDim: number;
  mlpHidden: number;
}

export interface MmditGraphOptions {
  attention?: AttentionKind;
}

export const MMDIT_IO = { x: 'x', timestep: 'timestep', context: 'context', y: 'y', output: 'output' } as const;

const EPS = 1e-6;
const HEAD_DIM = 64;

/** The config of an MMDiT from its original-named weights. QK norm and dual attention are read per block later. */
export function mmditConfigFromWeights(w: WeightSource): MmditConfig {
  const shape = (name: string): number[] => {
    if (!w.has(name)) throw new ModelFileError(name, 'missing SD3 transformer weight (not an SD3 MMDiT checkpoint?)');
    return w.shape(name);
  };
  const [hidden, channels, patch] = shape('x_embedder.proj.weight') as [number, number, number];
  const [, positions] = shape('pos_embed') as [number, number];
  let depth = 0;
  for (const name of w.names()) {
    const m = /^joint_blocks\.(\d+)\./.exec(name);
    if (m) depth = Math.max(depth, Number(m[1]) + 1);
  }
  if (hidden % HEAD_DIM !== 0) throw new ModelFileError('x_embedder.proj.weight', `hidden ${hidden} is not a multiple of the head width ${HEAD_DIM}`);
  return {
    hidden,
    depth,
    heads: hidden / HEAD_DIM,
    patch,
    channels,
    posEmbedMaxSize: Math.round(Math.sqrt(positions)),
    contextInDim: shape('context_embedder.weight')[1]!,
    pooledDim: shape('y_embedder.mlp.0.weight')[1]!,
    mlpHidden: shape('joint_blocks.0.x_block.mlp.fc1.weight')[0]!,
  };
}

/**
 * Adds the MMDiT to `b`. Inputs: x [B, C, H, W] latents, timestep [B] (sigma * 1000, as the SD3 pipeline passes
 * scheduler.timesteps), context [B, T, contextInDim], y [B, pooledDim]. Output [B, C, H, W]: the velocity.
 */
export function buildMmdit(b: GraphBuilder, weights: WeightSource, c: MmditConfig, opts: MmditGraphOptions = {}): void {
  const w = new NetWeights(weights, 'SD3 transformer');
  const kind = opts.attention ?? 'contrib';
  const x = b.input(MMDIT_IO.x, ['batch', c.channels, 'height', 'width']);
  const t = b.input(MMDIT_IO.timestep, ['batch'], 'float', { keepFloat32: true });
  let context = b.input(MMDIT_IO.context, ['batch', 'tokens', c.contextInDim]);
  const y = b.input(MMDIT_IO.y, ['batch', c.pooledDim]);

  // Patches: [B, hidden, h, w] -> [B, h*w, hidden], plus the centre crop of the position table.
  const patches = b.conv(x, w.param('x_embedder.proj.weight'), w.param('x_embedder.proj.bias'), 'x_embedder.proj', { stride: c.patch });
  const grid = b.sliceDims(b.shapeOf(patches), 2, 4); // [h, w]
  let img = b.transpose(b.reshape(patches, [0, c.hidden, -1]), [0, 2, 1]);
  const m = c.posEmbedMaxSize;
  const table = b.weight('pos_embed', w.param('pos_embed'), [1, m, m, c.hidden]);
  const start = b.op('Div', [b.sub(b.constInt64([m, m]), grid), b.constInt64([2, 2])]);
  const crop = b.op('Slice', [table, start, b.add(start, grid), b.constInt64([1, 2])]);
  img = b.add(img, b.reshape(crop, [1, -1, c.hidden]));

  const mlp2 = (p: string, v: Value) => linear(b, w, `${p}.mlp.2`, b.silu(linear(b, w, `${p}.mlp.0`, v)));
  const cond = b.add(mlp2('t_embedder', toCompute(b, timestepSinusoids(b, t, 256, true, 0))), mlp2('y_embedder', y));
  const cAct = b.op('Unsqueeze', [b.silu(cond), b.constInt64([1])]); // [B, 1, hidden]
  const ones = b.constFloat(new Array<number>(c.hidden).fill(1));
  const ctx: Ctx = { b, w, c, kind, cAct, ones };

  context = linear(b, w, 'context_embedder', context);
  for (let i = 0; i < c.depth; i++) [context, img] = jointBlock(ctx, `joint_blocks.${i}`, context, img);

  const [shift, scale] = mods(ctx, 'final_layer.adaLN_modulation.1', 2);
  const out = linear(b, w, 'final_layer.linear', modulate(ctx, img, shift!, scale!)); // [B, h*w, p*p*C]
  // Unpatchify: (h, w, p, q, C) -> (C, h, p, w, q).
  const p = c.patch;
  const six = b.concat([b.sliceDims(b.shapeOf(x), 0, 1), grid, b.constInt64([p, p, c.channels])], 0);
  const image = b.transpose(b.reshape(out, six), [0, 5, 1, 3, 2, 4]);
  b.output(b.reshape(image, b.shapeOf(x)), MMDIT_IO.output, ['batch', c.channels, 'height', 'width']);
}

export const MMDIT_BLOCK_IO = { context: 'context', x: 'x', cond: 'cond', contextOut: 'context_out', xOut: 'x_out' } as const;

/**
 * Adds joint block `index` alone to `b`, for checking a block against a plain reference: inputs context
 * [B, T, hidden], x [B, L, hidden] (both already embedded) and cond [B, hidden] (c, before its SiLU); outputs the
 * block's next context (passed through by a pre-only block) and x.
 */
export function buildMmditJointBlock(b: GraphBuilder, weights: WeightSource, c: MmditConfig, index: number, opts: MmditGraphOptions = {}): void {
  const w = new NetWeights(weights, 'SD3 transformer');
  const context = b.input(MMDIT_BLOCK_IO.context, ['batch', 'tokens', c.hidden]);
  const x = b.input(MMDIT_BLOCK_IO.x, ['batch', 'patches', c.hidden]);
  const cond = b.input(MMDIT_BLOCK_IO.cond, ['batch', c.hidden]);
  const cAct = b.op('Unsqueeze', [b.silu(cond), b.constInt64([1])]);
  const ctx: Ctx = { b, w, c, kind: opts.attention ?? 'contrib', cAct, ones: b.constFloat(new Array<number>(c.hidden).fill(1)) };
  const [nextContext, nextX] = jointBlock(ctx, `joint_blocks.${index}`, context, x);
  b.output(b.op('Identity', [nextContext]), MMDIT_BLOCK_IO.contextOut, ['batch', 'tokens', c.hidden]);
  b.output(nextX, MMDIT_BLOCK_IO.xOut, ['batch', 'patches', c.hidden]);
}

interface Ctx {
  b: GraphBuilder;
  w: NetWeights;
  c: MmditConfig;
  kind: AttentionKind;
  cAct: Value;
  ones: Value;
}

function mods(ctx: Ctx, prefix: string, n: number): Value[] {
  return ctx.b.split(linear(ctx.b, ctx.w, prefix, ctx.cAct), 2, new Array<number>(n).fill(ctx.c.hidden));
}

function modulate(ctx: Ctx, x: Value, shift: Value, scale: Value): Value {
  const { b } = ctx;
  const normed = b.op('LayerNormalization', [x, ctx.ones], { axis: -1, epsilon: float(EPS) });
  return b.add(b.mul(normed, b.add(scale, b.constFloat(1))), shift);
}

interface PreAttention {
  mod: Value[];
  q: Value;
  k: Value;
  v: Value;
  preOnly: boolean;
  /** MMDiT-X: q, k, v of the image-only second attention. */
  second?: { q: Value; k: Value; v: Value };
}

/** [B, L, H*D] -> RMS norm per head with scale [D] (eps 1e-6) -> [B, L, H*D]. */
function headRmsNorm(ctx: Ctx, x: Value, scaleName: string): Value {
  const { b } = ctx;
  const heads = b.reshape(x, [0, 0, ctx.c.heads, HEAD_DIM]);
  const normed = b.mul(rmsNormalize(b, heads, EPS), b.weight(scaleName, ctx.w.param(scaleName)));
  return b.reshape(normed, [0, 0, ctx.c.hidden]);
}

/** q, k, v of one SelfAttention (`attn` or `attn2`) on an already modulated input; QK norm where it has ln_q. */
function qkvOf(ctx: Ctx, p: string, input: Value): { q: Value; k: Value; v: Value } {
  const qkv = linear(ctx.b, ctx.w, `${p}.qkv`, input);
  let [q, k, v] = ctx.b.split(qkv, 2, [ctx.c.hidden, ctx.c.hidden, ctx.c.hidden]) as [Value, Value, Value];
  if (ctx.w.has(`${p}.ln_q.weight`)) {
    q = headRmsNorm(ctx, q, `${p}.ln_q.weight`);
    k = headRmsNorm(ctx, k, `${p}.ln_k.weight`);
  }
  return { q, k, v };
}

/** One DismantledBlock's half before attention: its modulation chunks and q, k, v (and attn2's, if it has one). */
function preAttention(ctx: Ctx, p: string, x: Value): PreAttention {
  const preOnly = !ctx.w.has(`${p}.attn.proj.weight`);
  const dual = ctx.w.has(`${p}.attn2.qkv.weight`);
  const mod = mods(ctx, `${p}.adaLN_modulation.1`, preOnly ? 2 : dual ? 9 : 6);
  const { q, k, v } = qkvOf(ctx, `${p}.attn`, modulate(ctx, x, mod[0]!, mod[1]!));
  // Both attentions modulate the same LayerNorm(x), each with its own shift and scale.
  const second = dual ? qkvOf(ctx, `${p}.attn2`, modulate(ctx, x, mod[6]!, mod[7]!)) : undefined;
  return { mod, q, k, v, preOnly, second };
}

function postAttention(ctx: Ctx, p: string, x: Value, attn: Value, mod: Value[], attn2?: Value): Value {
  const { b, w } = ctx;
  x = b.add(x, b.mul(mod[2]!, linear(b, w, `${p}.attn.proj`, attn)));
  if (attn2) x = b.add(x, b.mul(mod[8]!, linear(b, w, `${p}.attn2.proj`, attn2)));
  const h = geluTanh(b, linear(b, w, `${p}.mlp.fc1`, modulate(ctx, x, mod[3]!, mod[4]!)));
  return b.add(x, b.mul(mod[5]!, linear(b, w, `${p}.mlp.fc2`, h)));
}

/** block_mixing: joint attention over [context, x]; a pre-only context block ends the context stream. */
function jointBlock(ctx: Ctx, p: string, context: Value, x: Value): [Value, Value] {
  const { b } = ctx;
  const cb = preAttention(ctx, `${p}.context_block`, context);
  const xb = preAttention(ctx, `${p}.x_block`, x);
  const attend = (q: Value, k: Value, v: Value) => b.attention(q, k, v, { heads: ctx.c.heads, headDim: HEAD_DIM, kind: ctx.kind });
  const attn = attend(b.concat([cb.q, xb.q], 1), b.concat([cb.k, xb.k], 1), b.concat([cb.v, xb.v], 1));
  // The context length is dynamic: split at the context's own token count.
  const tokens = b.sliceDims(b.shapeOf(context), 1, 2);
  const contextAttn = b.op('Slice', [attn, b.constInt64([0]), tokens, b.constInt64([1])]);
  const xAttn = b.op('Slice', [attn, tokens, b.constInt64([Number.MAX_SAFE_INTEGER]), b.constInt64([1])]);
  const xAttn2 = xb.second ? attend(xb.second.q, xb.second.k, xb.second.v) : undefined;
  const nextContext = cb.preOnly ? context : postAttention(ctx, `${p}.context_block`, context, contextAttn, cb.mod);
  return [nextContext, postAttention(ctx, `${p}.x_block`, x, xAttn, xb.mod, xAttn2)];
}
