// The SD3 MMDiT (Stability's reference MMDiT, as in sd3_medium.safetensors) as an ONNX graph, read by the original
// parameter names (diffusers folders are mapped onto them by weights/sd3-keys.ts): 2x2 patch embedding plus a
// centre-cropped fixed sin-cos position table, a conditioning vector c = t-embedding + pooled-text embedding, joint
// blocks that modulate the context and image streams separately and attend over [context, image] together (the last
// context block only contributes keys and values), then a modulated projection and unpatchify.
import { ModelFileError } from '../api.ts';
import { float, type AttentionKind, type GraphBuilder, type Value } from '../onnx/graph.ts';
import type { WeightSource } from '../weights/types.ts';
import { geluTanh, linear, NetWeights, timestepSinusoids, toCompute } from './blocks.ts';

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

/** The config of an MMDiT from its original-named weights. SD3.5's QK norm and dual attention are refused by name. */
export function mmditConfigFromWeights(w: WeightSource): MmditConfig {
  const shape = (name: string): number[] => {
    if (!w.has(name)) throw new ModelFileError(name, 'missing SD3 transformer weight (not an SD3 MMDiT checkpoint?)');
    return w.shape(name);
  };
  for (const unsupported of ['joint_blocks.0.x_block.attn.ln_q.weight', 'joint_blocks.0.x_block.attn2.qkv.weight']) {
    if (w.has(unsupported)) throw new ModelFileError(unsupported, 'SD3.5 MMDiT features (QK RMS norm, dual attention) are not supported yet');
  }
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

/** One DismantledBlock's half before attention: its modulation chunks and q, k, v. */
function preAttention(ctx: Ctx, p: string, x: Value): { mod: Value[]; q: Value; k: Value; v: Value; preOnly: boolean } {
  const preOnly = !ctx.w.has(`${p}.attn.proj.weight`);
  const mod = mods(ctx, `${p}.adaLN_modulation.1`, preOnly ? 2 : 6);
  const qkv = linear(ctx.b, ctx.w, `${p}.attn.qkv`, modulate(ctx, x, mod[0]!, mod[1]!));
  const [q, k, v] = ctx.b.split(qkv, 2, [ctx.c.hidden, ctx.c.hidden, ctx.c.hidden]) as [Value, Value, Value];
  return { mod, q, k, v, preOnly };
}

function postAttention(ctx: Ctx, p: string, x: Value, attn: Value, mod: Value[]): Value {
  const { b, w } = ctx;
  x = b.add(x, b.mul(mod[2]!, linear(b, w, `${p}.attn.proj`, attn)));
  const h = geluTanh(b, linear(b, w, `${p}.mlp.fc1`, modulate(ctx, x, mod[3]!, mod[4]!)));
  return b.add(x, b.mul(mod[5]!, linear(b, w, `${p}.mlp.fc2`, h)));
}

/** block_mixing: joint attention over [context, x]; a pre-only context block ends the context stream. */
function jointBlock(ctx: Ctx, p: string, context: Value, x: Value): [Value, Value] {
  const { b } = ctx;
  const cb = preAttention(ctx, `${p}.context_block`, context);
  const xb = preAttention(ctx, `${p}.x_block`, x);
  const attn = b.attention(b.concat([cb.q, xb.q], 1), b.concat([cb.k, xb.k], 1), b.concat([cb.v, xb.v], 1), {
    heads: ctx.c.heads,
    headDim: HEAD_DIM,
    kind: ctx.kind,
  });
  // The context length is dynamic: split at the context's own token count.
  const tokens = b.sliceDims(b.shapeOf(context), 1, 2);
  const contextAttn = b.op('Slice', [attn, b.constInt64([0]), tokens, b.constInt64([1])]);
  const xAttn = b.op('Slice', [attn, tokens, b.constInt64([Number.MAX_SAFE_INTEGER]), b.constInt64([1])]);
  const nextContext = cb.preOnly ? context : postAttention(ctx, `${p}.context_block`, context, contextAttn, cb.mod);
  return [nextContext, postAttention(ctx, `${p}.x_block`, x, xAttn, xb.mod)];
}
