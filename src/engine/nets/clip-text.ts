// CLIP text encoder (transformers CLIPTextModel / CLIPTextModelWithProjection) as an ONNX graph: token +
// position embeddings, pre-LN transformer layers with a causal mask, final_layer_norm, argmax pooling and the
// optional text projection. Only the layers the requested outputs depend on are built.
import { float, type AttentionKind, type GraphBuilder, type Value } from '../onnx/graph.ts';
import { OnnxDType } from '../onnx/proto.ts';
import type { ClipTextConfig, WeightSource } from '../weights/types.ts';
import { LORA_BRANCH_SITES_VERSION, LoraBranchSites } from './lora-branch.ts';

/** The config.json fields the graph depends on (hidden_act: "quick_gelu" for SD1's OpenAI CLIP, "gelu" for OpenCLIP). */
export type ClipTextNetConfig = Pick<
  ClipTextConfig,
  'hidden_size' | 'num_hidden_layers' | 'num_attention_heads' | 'hidden_act' | 'layer_norm_eps' | 'max_position_embeddings'
>;

export interface ClipTextOptions {
  /**
   * A1111 clip skip: 1 = last layer (= last_hidden_state); k > 1 = final_layer_norm(hidden_states[-k]), i.e. the
   * final norm applied to an earlier layer's output as A1111 does. Note diffusers' `clip_skip=n` is A1111's n+1.
   */
  clipSkip?: number;
  /**
   * SDXL conditioning: `hidden` = hidden_states[-(clipSkip+1)] with NO final_layer_norm (default clipSkip 1 gives
   * hidden_states[-2], the penultimate layer SDXL's prompt_embeds use).
   */
  penultimateWithoutNorm?: boolean;
  /** Emit `hidden` [batch, seq, hidden_size] (default true). */
  hidden?: boolean;
  /** Emit `pooled` [batch, hidden_size] = final_layer_norm(last layer) at the first EOS token. */
  pooled?: boolean;
  /** Emit `text_embeds` [batch, projection_dim] = pooled @ text_projection (CLIPTextModelWithProjection). */
  textEmbeds?: boolean;
  /** Debug/test aid: emit every `hidden_states.i` (0 = embeddings, i = after layer i, before final norm). */
  allHiddenStates?: boolean;
  /** Token sequence length (default 77); at most max_position_embeddings. */
  sequenceLength?: number;
  attention?: AttentionKind;
  /**
   * The end-of-text token id: `pooled` is taken at its first position, as transformers does with eos_token_id
   * (the pipeline passes its tokenizer's). Without it, at argmax(input_ids) (transformers' legacy rule), which is
   * the same token only while no id exceeds EOS's; textual-inversion tokens do.
   */
  eosTokenId?: number;
  /** LoRA branches (graph inputs) at the q/k/v/out projections and the MLP of every layer (nets/lora-branch.ts). */
  loraBranches?: boolean;
}

/** Graph input/output names. */
export const CLIP_TEXT_IO = {
  inputIds: 'input_ids',
  hidden: 'hidden',
  pooled: 'pooled',
  textEmbeds: 'text_embeds',
  hiddenState: (i: number) => `hidden_states.${i}`,
} as const;

type Resolved = Required<Omit<ClipTextOptions, 'eosTokenId'>> & Pick<ClipTextOptions, 'eosTokenId'>;

function resolve(opts: ClipTextOptions): Resolved {
  return {
    clipSkip: opts.clipSkip ?? 1,
    penultimateWithoutNorm: opts.penultimateWithoutNorm ?? false,
    hidden: opts.hidden ?? true,
    pooled: opts.pooled ?? false,
    textEmbeds: opts.textEmbeds ?? false,
    allHiddenStates: opts.allHiddenStates ?? false,
    sequenceLength: opts.sequenceLength ?? 77,
    attention: opts.attention ?? 'contrib',
    loraBranches: opts.loraBranches ?? false,
    eosTokenId: opts.eosTokenId,
  };
}

/** Every option with its default filled in: the part of a graph-cache key that describes this graph. */
export function clipTextGraphOptions(opts: ClipTextOptions): Record<string, unknown> {
  const { loraBranches, eosTokenId, ...rest } = resolve(opts);
  // Each only present when set, so the key of a graph without them is what it was before they existed.
  return { ...rest, ...(eosTokenId !== undefined ? { eosTokenId } : {}), ...(loraBranches ? { loraBranches: LORA_BRANCH_SITES_VERSION } : {}) };
}

/** Which text-encoder layers get LoRA branches in a branch graph (what kohya and PEFT train: attention and MLP linears). */
export function isClipTextBranchSite(path: string): boolean {
  return /\.encoder\.layers\.\d+\.(self_attn\.(q|k|v|out)_proj|mlp\.fc[12])$/.test(path);
}

const P = 'text_model';

/** Index into hidden_states (0 = embeddings, N = last layer) that `hidden` comes from. */
export function clipHiddenLayerIndex(layers: number, opts: ClipTextOptions): number {
  const o = resolve(opts);
  const idx = o.penultimateWithoutNorm ? layers - o.clipSkip : layers - o.clipSkip + 1;
  if (!Number.isInteger(o.clipSkip) || o.clipSkip < 1 || idx < 0) {
    throw new RangeError(`clipSkip ${o.clipSkip} is out of range for a text encoder with ${layers} layers`);
  }
  return idx;
}

/**
 * Adds the text encoder to `b`. Input `input_ids` int64 [batch, seq]; outputs as chosen by `opts`
 * (names in CLIP_TEXT_IO). Weights use transformers names (`text_model.encoder.layers.0.self_attn.q_proj.weight`).
 */
export function buildClipTextEncoder(b: GraphBuilder, weights: WeightSource, config: ClipTextNetConfig, opts: ClipTextOptions = {}): void {
  const o = resolve(opts);
  const layers = config.num_hidden_layers;
  const dim = config.hidden_size;
  const heads = config.num_attention_heads;
  if (dim % heads !== 0) throw new RangeError(`hidden_size ${dim} is not divisible by num_attention_heads ${heads}`);
  const act = activation(b, config.hidden_act);
  const seq = o.sequenceLength;
  if (seq > config.max_position_embeddings) {
    throw new RangeError(`sequenceLength ${seq} exceeds max_position_embeddings ${config.max_position_embeddings}`);
  }
  if (!o.hidden && !o.pooled && !o.textEmbeds && !o.allHiddenStates) throw new RangeError('clip text encoder: no output requested');
  if (o.textEmbeds && !weights.has('text_projection.weight')) {
    throw new RangeError('textEmbeds requested but the weights have no text_projection.weight (not a CLIPTextModelWithProjection)');
  }

  const hiddenIdx = o.hidden ? clipHiddenLayerIndex(layers, o) : 0;
  const needed = o.allHiddenStates || o.pooled || o.textEmbeds ? layers : hiddenIdx;

  const ids = b.input(CLIP_TEXT_IO.inputIds, ['batch', seq], 'int64');
  const tokens = b.op('Gather', [b.weight(`${P}.embeddings.token_embedding.weight`, weights.get(`${P}.embeddings.token_embedding.weight`)), ids], { axis: 0 });
  const posTable = weights.get(`${P}.embeddings.position_embedding.weight`);
  const positions = b.weight(`${P}.embeddings.position_embedding.weight`, { shape: [seq, dim], data: posTable.data.subarray(0, seq * dim) });
  let x = b.add(tokens, positions);

  const states: Value[] = [x];
  const mask = causalMask(b, seq);
  const branches = o.loraBranches ? new LoraBranchSites(isClipTextBranchSite) : undefined;
  for (let i = 0; i < needed; i++) {
    x = encoderLayer(b, weights, `${P}.encoder.layers.${i}`, x, { dim, heads, eps: config.layer_norm_eps, act, mask, kind: o.attention, branches });
    states.push(x);
  }

  const finalNorm = layerNormWith(b, weights, `${P}.final_layer_norm`, config.layer_norm_eps);
  const shape = ['batch', seq, dim];
  if (o.hidden) {
    const h = states[hiddenIdx]!;
    b.output(o.penultimateWithoutNorm ? h : finalNorm(h), CLIP_TEXT_IO.hidden, shape);
  }
  if (o.allHiddenStates) states.forEach((s, i) => b.output(s, CLIP_TEXT_IO.hiddenState(i), shape));
  if (o.pooled || o.textEmbeds) {
    // The first EOS by position (transformers: (input_ids == eos_token_id).int().argmax(-1)). argmax(input_ids)
    // finds the same token only while no id exceeds EOS's, which textual-inversion tokens do.
    const isEos = o.eosTokenId === undefined ? ids : b.cast(b.op('Equal', [ids, b.constInt64([o.eosTokenId])]), OnnxDType.INT32);
    const eos = b.op('ArgMax', [isEos], { axis: 1, keepdims: 1 }); // [batch, 1], the first maximum
    const pooled = b.op('GatherND', [finalNorm(states[layers]!), eos], { batch_dims: 1 }); // [batch, dim]
    if (o.pooled) b.output(pooled, CLIP_TEXT_IO.pooled, ['batch', dim]);
    if (o.textEmbeds) {
      const proj = weights.get('text_projection.weight');
      b.output(b.linear(pooled, proj, undefined, 'text_projection'), CLIP_TEXT_IO.textEmbeds, ['batch', proj.shape[0]!]);
    }
  }
}

/** What one CLIP encoder layer needs besides its weights (shared with the vision tower, nets/clip-vision.ts). */
export interface LayerParams {
  dim: number;
  heads: number;
  eps: number;
  act: (x: Value) => Value;
  /** The text tower's causal mask; the vision tower attends everywhere (none). */
  mask?: Value;
  kind: AttentionKind;
  branches?: LoraBranchSites;
}

/** One pre-LN transformer layer with transformers' CLIPEncoderLayer names under `p`. */
export function encoderLayer(b: GraphBuilder, w: WeightSource, p: string, x: Value, lp: LayerParams): Value {
  const lin = (h: Value, name: string) => {
    const weight = w.get(`${p}.${name}.weight`);
    const y = b.linear(h, weight, w.get(`${p}.${name}.bias`), `${p}.${name}`);
    return lp.branches ? lp.branches.linear(b, `${p}.${name}`, h, y, { in: weight.shape[1]!, out: weight.shape[0]! }) : y;
  };
  const h = layerNormWith(b, w, `${p}.layer_norm1`, lp.eps)(x);
  const q = lin(h, 'self_attn.q_proj');
  const k = lin(h, 'self_attn.k_proj');
  const v = lin(h, 'self_attn.v_proj');
  const attn = b.attention(q, k, v, { heads: lp.heads, headDim: lp.dim / lp.heads, bias: lp.mask, kind: lp.kind });
  x = b.add(x, lin(attn, 'self_attn.out_proj'));
  const m = layerNormWith(b, w, `${p}.layer_norm2`, lp.eps)(x);
  return b.add(x, lin(lp.act(lin(m, 'mlp.fc1')), 'mlp.fc2'));
}

/** A LayerNormalization whose weights are added once however often it is applied. */
export function layerNormWith(b: GraphBuilder, w: WeightSource, p: string, eps: number): (x: Value) => Value {
  let params: [Value, Value] | undefined;
  return (x) => {
    params ??= [b.weight(`${p}.weight`, w.get(`${p}.weight`)), b.weight(`${p}.bias`, w.get(`${p}.bias`))];
    return b.op('LayerNormalization', [x, ...params], { axis: -1, epsilon: float(eps) });
  };
}

export function activation(b: GraphBuilder, name: string): (x: Value) => Value {
  switch (name) {
    case 'quick_gelu':
      return (x) => b.quickGelu(x);
    case 'gelu':
      return (x) => b.gelu(x);
    default:
      throw new RangeError(`CLIP hidden_act "${name}" is not supported (expected quick_gelu or gelu)`);
  }
}

/** [1, 1, seq, seq] additive mask: 0 on and below the diagonal, the dtype's lowest finite value above it. */
function causalMask(b: GraphBuilder, seq: number): Value {
  const lowest = b.precision === 'fp16' ? -65504 : -3.4028234663852886e38;
  const m = new Array<number>(seq * seq).fill(0);
  for (let i = 0; i < seq; i++) for (let j = i + 1; j < seq; j++) m[i * seq + j] = lowest;
  return b.constFloat(m, [1, 1, seq, seq]);
}
