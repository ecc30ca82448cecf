// CodeFormer (sczhou; A1111 >= 1.8 runs spandrel's copy) as an ONNX graph: a VQGAN encoder, a 9-layer transformer
// that predicts one codebook entry per 16x16 token, the codebook lookup (hard arg-max) renormalised to the encoder
// features (AdaIN, always on in A1111), and the VQGAN generator with the controllable feature fusion
// `x + w (x scale + shift)` at 32..256 px. `weight` (A1111's code_former_weight, 0 = maximum effect) is a graph input,
// so one graph serves every weight. Layer widths, depths and the block layout come from the weights; the VQGAN's
// GroupNorm keeps two channels per group at every width (32 groups at the released nf 64).
import { float, type GraphBuilder, type Value } from '../onnx/graph.ts';
import type { Tensor } from '../tensor.ts';
import { FaceNetFormatError } from './parsenet.ts';
import type { TensorSource } from './upscaler-weights.ts';

/** The encoder and generator blocks whose features the fusion uses, by feature size (CodeFormer's tables). */
const FUSE_ENCODER_BLOCK: Record<string, number> = { '512': 2, '256': 5, '128': 8, '64': 11, '32': 14, '16': 18 };
const FUSE_GENERATOR_BLOCK: Record<string, number> = { '16': 6, '32': 9, '64': 12, '128': 15, '256': 18, '512': 21 };
const GN_EPS = 1e-6;
const HEADS = 8;

interface Ctx {
  b: GraphBuilder;
  src: TensorSource;
  names: Set<string>;
  groups: number;
}

const has = (c: Ctx, n: string) => c.names.has(n);
const t = (c: Ctx, n: string): Tensor => c.src.get(n);

function conv(c: Ctx, x: Value, name: string, opts: { pad?: number; pads?: number[]; stride?: number } = {}): Value {
  return c.b.conv(x, t(c, `${name}.weight`), has(c, `${name}.bias`) ? t(c, `${name}.bias`) : undefined, name, opts);
}

function groupNorm(c: Ctx, x: Value, name: string): Value {
  return c.b.groupNorm(x, c.groups, t(c, `${name}.weight`), t(c, `${name}.bias`), GN_EPS, name);
}

function resBlock(c: Ctx, x: Value, name: string): Value {
  let h = conv(c, c.b.silu(groupNorm(c, x, `${name}.norm1`)), `${name}.conv1`, { pad: 1 });
  h = conv(c, c.b.silu(groupNorm(c, h, `${name}.norm2`)), `${name}.conv2`, { pad: 1 });
  return c.b.add(h, has(c, `${name}.conv_out.weight`) ? conv(c, x, `${name}.conv_out`) : x);
}

function attnBlock(c: Ctx, x: Value, name: string): Value {
  const { b } = c;
  const h = groupNorm(c, x, `${name}.norm`);
  const channels = t(c, `${name}.q.weight`).shape[0]!;
  const flat = (v: Value) => b.reshape(v, [0, channels, -1]); // [1, c, hw]
  const q = b.transpose(flat(conv(c, h, `${name}.q`)), [0, 2, 1]); // [1, hw, c]
  const k = flat(conv(c, h, `${name}.k`)); // [1, c, hw]
  const v = flat(conv(c, h, `${name}.v`));
  const weights = b.softmax(b.scale(b.matmul(q, k), channels ** -0.5), -1); // [1, hw(q), hw(k)]
  const out = b.matmul(v, b.transpose(weights, [0, 2, 1])); // [1, c, hw]
  return b.add(x, conv(c, b.reshape(out, b.shapeOf(x)), `${name}.proj_out`));
}

/** One VQGAN block by what its weights are: conv, ResBlock, AttnBlock, down/upsample, or the final GroupNorm. */
function block(c: Ctx, x: Value, name: string, side: 'encoder' | 'generator'): Value {
  if (has(c, `${name}.norm1.weight`)) return resBlock(c, x, name);
  if (has(c, `${name}.q.weight`)) return attnBlock(c, x, name);
  if (has(c, `${name}.conv.weight`)) {
    if (side === 'encoder') return conv(c, x, `${name}.conv`, { stride: 2, pads: [0, 0, 1, 1] });
    const up = c.b.op('Resize', [x, null, c.b.constFloat([1, 1, 2, 2])], {
      mode: 'nearest',
      coordinate_transformation_mode: 'asymmetric',
      nearest_mode: 'floor',
    });
    return conv(c, up, `${name}.conv`, { pad: 1 });
  }
  const w = c.src.shape(`${name}.weight`);
  if (w.length === 4) return conv(c, x, name, { pad: 1 });
  return groupNorm(c, x, name);
}

function blockCount(c: Ctx, prefix: string): number {
  return new Set([...c.names].flatMap((n) => (n.startsWith(prefix) ? [Number(n.slice(prefix.length).split('.')[0])] : []))).size;
}

/** calc_mean_std: per-channel mean and sqrt(unbiased variance + 1e-5) over the spatial positions. */
function meanStd(b: GraphBuilder, x: Value, count: number): { mean: Value; std: Value } {
  const axes = b.constInt64([2, 3]);
  // Opset 17: ReduceMean takes its axes as an attribute, ReduceSum as an input.
  const mean = b.op('ReduceMean', [x], { axes: [2, 3], keepdims: 1 });
  const d = b.sub(x, mean);
  const ss = b.op('ReduceSum', [b.mul(d, d), axes], { keepdims: 1 });
  const std = b.op('Sqrt', [b.add(b.scale(ss, 1 / (count - 1)), b.constFloat(1e-5))]);
  return { mean, std };
}

function transformerLayer(c: Ctx, x: Value, pos: Value, name: string, dim: number): Value {
  const { b } = c;
  const h = b.layerNorm(x, t(c, `${name}.norm1.weight`), t(c, `${name}.norm1.bias`), 1e-5, `${name}.norm1`);
  const qk = b.add(h, pos);
  const inW = t(c, `${name}.self_attn.in_proj_weight`); // [3 dim, dim]
  const inB = t(c, `${name}.self_attn.in_proj_bias`);
  const part = (i: number, v: Value) =>
    b.linear(
      v,
      { shape: [dim, dim], data: inW.data.subarray(i * dim * dim, (i + 1) * dim * dim) },
      { shape: [dim], data: inB.data.subarray(i * dim, (i + 1) * dim) },
      `${name}.self_attn.in_proj.${i}`,
    );
  const attn = b.attention(part(0, qk), part(1, qk), part(2, h), { heads: HEADS, headDim: dim / HEADS, kind: 'onnx' });
  x = b.add(x, b.linear(attn, t(c, `${name}.self_attn.out_proj.weight`), t(c, `${name}.self_attn.out_proj.bias`), `${name}.self_attn.out_proj`));
  const h2 = b.layerNorm(x, t(c, `${name}.norm2.weight`), t(c, `${name}.norm2.bias`), 1e-5, `${name}.norm2`);
  const mlp = b.linear(
    b.gelu(b.linear(h2, t(c, `${name}.linear1.weight`), t(c, `${name}.linear1.bias`), `${name}.linear1`)),
    t(c, `${name}.linear2.weight`),
    t(c, `${name}.linear2.bias`),
    `${name}.linear2`,
  );
  return b.add(x, mlp);
}

/**
 * Inputs `image` [1, 3, 512, 512] RGB in [-1, 1] and `weight` [1] (fidelity, 0..1); outputs `restored`
 * [1, 3, 512, 512] RGB (nominally [-1, 1]), `logits` [1, 256, codebook] and `lq_feat` [1, 256, 16, 16].
 */
export function buildCodeFormer(b: GraphBuilder, src: TensorSource): void {
  const names = new Set(src.names());
  for (const k of ['encoder.blocks.0.weight', 'quantize.embedding.weight', 'position_emb', 'idx_pred_layer.1.weight']) {
    if (!names.has(k)) throw new FaceNetFormatError(`not a CodeFormer checkpoint: ${k} is missing`);
  }
  const nf = src.shape('encoder.blocks.0.weight')[0]!;
  const c: Ctx = { b, src, names, groups: Math.max(1, nf / 2) };
  const [tokens, dim] = src.shape('position_emb') as [number, number];
  const [codebook, embDim] = src.shape('quantize.embedding.weight') as [number, number];
  const connect = [...new Set([...names].flatMap((n) => (n.startsWith('fuse_convs_dict.') ? [n.split('.')[1]!] : [])))];
  const side = Math.round(Math.sqrt(tokens));

  const input = b.input('image', [1, 3, 512, 512]);
  const weight = b.input('weight', [1]);

  // Encoder, keeping the features the fusion needs (by spatial size).
  const encFeat = new Map<string, Value>();
  const encoderOut = new Set(connect.map((s) => FUSE_ENCODER_BLOCK[s]));
  let x: Value = input;
  let size = 512;
  const encoderBlocks = blockCount(c, 'encoder.blocks.');
  for (let i = 0; i < encoderBlocks; i++) {
    if (has(c, `encoder.blocks.${i}.conv.weight`)) size /= 2;
    x = block(c, x, `encoder.blocks.${i}`, 'encoder');
    if (encoderOut.has(i)) encFeat.set(String(size), x);
  }
  const lqFeat = x; // [1, embDim, 16, 16]

  // Transformer over the 16x16 tokens.
  let q = b.linear(b.transpose(b.reshape(lqFeat, [1, embDim, tokens]), [0, 2, 1]), t(c, 'feat_emb.weight'), t(c, 'feat_emb.bias'), 'feat_emb'); // [1, hw, dim]
  const pos = b.weight('position_emb', t(c, 'position_emb'), [1, tokens, dim]);
  const layers = blockCount(c, 'ft_layers.');
  for (let i = 0; i < layers; i++) q = transformerLayer(c, q, pos, `ft_layers.${i}`, dim);
  q = b.layerNorm(q, t(c, 'idx_pred_layer.0.weight'), t(c, 'idx_pred_layer.0.bias'), 1e-5, 'idx_pred_layer.0');
  const logits = b.linear(q, t(c, 'idx_pred_layer.1.weight'), undefined, 'idx_pred_layer.1'); // [1, hw, codebook]

  // Codebook lookup (hard arg-max) and AdaIN onto the encoder features.
  const indices = b.op('ArgMax', [logits], { axis: 2, keepdims: 0 }); // [1, hw]
  const codes = b.op('Gather', [b.weight('quantize.embedding.weight', t(c, 'quantize.embedding.weight')), indices], { axis: 0 }); // [1, hw, emb]
  let quant = b.reshape(b.transpose(codes, [0, 2, 1]), [1, embDim, side, side]);
  const style = meanStd(b, lqFeat, tokens);
  const content = meanStd(b, quant, tokens);
  quant = b.add(b.mul(b.div(b.sub(quant, content.mean), content.std), style.std), style.mean);

  // Generator with the fusion after its fuse blocks.
  const fuseAfter = new Map(connect.map((s) => [FUSE_GENERATOR_BLOCK[s]!, s]));
  x = quant;
  const generatorBlocks = blockCount(c, 'generator.blocks.');
  for (let i = 0; i < generatorBlocks; i++) {
    x = block(c, x, `generator.blocks.${i}`, 'generator');
    const s = fuseAfter.get(i);
    if (s === undefined) continue;
    const f = `fuse_convs_dict.${s}`;
    const enc = resBlock(c, b.concat([encFeat.get(s)!, x], 1), `${f}.encode_enc`);
    const branch = (kind: string) =>
      conv(c, b.op('LeakyRelu', [conv(c, enc, `${f}.${kind}.0`, { pad: 1 })], { alpha: float(0.2) }), `${f}.${kind}.2`, { pad: 1 });
    x = b.add(x, b.mul(weight, b.add(b.mul(x, branch('scale')), branch('shift'))));
  }
  b.output(x, 'restored', [1, 3, 512, 512]);
  b.output(logits, 'logits', [1, tokens, codebook]);
  b.output(lqFeat, 'lq_feat', [1, embDim, side, side]);
}
