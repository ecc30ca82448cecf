// The T5 v1.1 encoder (transformers T5EncoderModel, as Flux and SD3 use T5-XXL) as an ONNX graph: token
// embeddings without scaling, pre-RMS-norm blocks of unscaled self-attention with a learned relative-position
// bias (computed once from block 0's table and shared by every block) and a gated-GELU feed-forward, then the
// final RMS norm. Weights by transformers names (`encoder.block.0.layer.0.SelfAttention.q.weight`).
import { ModelFileError } from '../api.ts';
import type { AttentionKind, GraphBuilder, Value } from '../onnx/graph.ts';
import type { WeightSource } from '../weights/types.ts';
import { geluTanh, NetWeights, rmsNormalize } from './blocks.ts';
import { quantizedLinear } from './quantized-linear.ts';

/** The transformers T5Config fields the encoder graph depends on. */
export interface T5EncoderConfig {
  d_model: number;
  d_kv: number;
  num_heads: number;
  num_layers: number;
  relative_attention_num_buckets: number;
  relative_attention_max_distance: number;
  layer_norm_epsilon: number;
  /** "gated-gelu" (T5 v1.1, FLAN-T5, T5-XXL of Flux/SD3); "relu" (original T5) is refused. */
  feed_forward_proj: string;
}

export interface T5EncoderOptions {
  /** Tokens per prompt, fixed per graph (Flux: 512 dev / 256 schnell; SD3: 256). */
  sequenceLength: number;
  /**
   * Take an `attention_mask` input [batch, seq] (1 = token, 0 = padding) and keep padding out of attention. Flux and
   * SD3 call T5 without one (pads are attended), so the default is false.
   */
  attentionMask?: boolean;
  /** Debug/test aid: emit every `hidden_states.i` (0 = embeddings, i = after block i; the last is final-normed). */
  allHiddenStates?: boolean;
  attention?: AttentionKind;
}

export const T5_IO = {
  inputIds: 'input_ids',
  attentionMask: 'attention_mask',
  hidden: 'last_hidden_state',
  hiddenState: (i: number) => `hidden_states.${i}`,
} as const;

const E = 'encoder';

/** transformers T5Attention._relative_position_bucket (bidirectional), float32 steps rounded as torch does. */
export function relativePositionBucket(relative: number, numBuckets: number, maxDistance: number): number {
  const half = numBuckets / 2;
  const offset = relative > 0 ? half : 0;
  const n = Math.abs(relative);
  const maxExact = half / 2;
  if (n < maxExact) return offset + n;
  const f = Math.fround;
  const scaled = f(f(f(Math.log(f(n / maxExact))) / f(Math.log(maxDistance / maxExact))) * (half - maxExact));
  return offset + Math.min(maxExact + Math.trunc(scaled), half - 1);
}

/**
 * Adds the T5 encoder to `b`. Input `input_ids` int64 [batch, seq] (and `attention_mask` int64 when asked for);
 * output `last_hidden_state` [batch, seq, d_model].
 */
export function buildT5Encoder(b: GraphBuilder, weights: WeightSource, config: T5EncoderConfig, opts: T5EncoderOptions): void {
  const w = new NetWeights(weights, 'T5 encoder');
  if (config.feed_forward_proj !== 'gated-gelu') {
    throw new ModelFileError('feed_forward_proj', `T5 feed-forward "${config.feed_forward_proj}" is not supported (expected gated-gelu, T5 v1.1)`);
  }
  const seq = opts.sequenceLength;
  const heads = config.num_heads;
  const inner = heads * config.d_kv;
  const eps = config.layer_norm_epsilon;
  const ids = b.input(T5_IO.inputIds, ['batch', seq], 'int64');
  const embedName = w.has(`${E}.embed_tokens.weight`) ? `${E}.embed_tokens.weight` : 'shared.weight';
  let x = b.op('Gather', [b.weight(embedName, w.param(embedName)), ids], { axis: 0 });

  // Position bias [1, heads, seq, seq]: block 0's learned table gathered at each (query, key) bucket.
  const buckets: number[] = [];
  for (let i = 0; i < seq; i++) {
    for (let j = 0; j < seq; j++) buckets.push(relativePositionBucket(j - i, config.relative_attention_num_buckets, config.relative_attention_max_distance));
  }
  const tableName = `${E}.block.0.layer.0.SelfAttention.relative_attention_bias.weight`;
  const table = b.weight(tableName, w.param(tableName)); // [buckets, heads]
  const gathered = b.op('Gather', [table, b.constInt64(buckets, [seq, seq])], { axis: 0 }); // [seq, seq, heads]
  let bias = b.op('Unsqueeze', [b.transpose(gathered, [2, 0, 1]), b.constInt64([0])]);
  if (opts.attentionMask) {
    const mask = b.cast(b.input(T5_IO.attentionMask, ['batch', seq], 'int64'), b.computeType);
    // (1 - mask) * lowest, [batch, 1, 1, seq]: as transformers' get_extended_attention_mask.
    const lowest = b.precision === 'fp16' ? -65504 : -3.4028234663852886e38;
    const additive = b.mul(b.sub(b.constFloat(1), mask), b.constFloat(lowest));
    bias = b.add(bias, b.op('Unsqueeze', [additive, b.constInt64([1, 2])]));
  }

  const norm = (h: Value, name: string) => b.mul(rmsNormalize(b, h, eps), b.weight(name, w.param(name)));
  const lin = (h: Value, name: string) => quantizedLinear(b, w, name, h)?.y ?? b.linear(h, w.param(`${name}.weight`), undefined, name);
  const states: Value[] = [x];
  for (let i = 0; i < config.num_layers; i++) {
    const p = `${E}.block.${i}.layer`;
    const h = norm(x, `${p}.0.layer_norm.weight`);
    const a = `${p}.0.SelfAttention`;
    // T5 does not scale the scores by 1/sqrt(d_kv): the initialisation folds it into q.
    const attn = b.attention(lin(h, `${a}.q`), lin(h, `${a}.k`), lin(h, `${a}.v`), {
      heads,
      headDim: inner / heads,
      scale: 1,
      bias,
      kind: opts.attention,
    });
    x = b.add(x, lin(attn, `${a}.o`));
    const f = norm(x, `${p}.1.layer_norm.weight`);
    const d = `${p}.1.DenseReluDense`;
    x = b.add(x, lin(b.mul(geluTanh(b, lin(f, `${d}.wi_0`)), lin(f, `${d}.wi_1`)), `${d}.wo`));
    states.push(x);
  }
  const last = norm(x, `${E}.final_layer_norm.weight`);
  states[states.length - 1] = last;
  const shape = ['batch', seq, config.d_model];
  b.output(last, T5_IO.hidden, shape);
  if (opts.allHiddenStates) states.forEach((s, i) => b.output(s, T5_IO.hiddenState(i), shape));
}
