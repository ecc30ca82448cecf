// CLIP vision tower (transformers CLIPVisionModelWithProjection, the vision half of CLIPModel) as an ONNX graph:
// patch-embedding convolution, class token, position embeddings, pre-LayerNorm, pre-LN encoder layers (no mask),
// post-LayerNorm on the class token, and the visual projection. Weights use transformers names
// (`vision_model.encoder.layers.0.self_attn.q_proj.weight`); OpenCLIP files are renamed by weights/clip-keys.ts.
import type { AttentionKind, GraphBuilder, Value } from '../onnx/graph.ts';
import type { WeightSource } from '../weights/types.ts';
import { activation, encoderLayer, layerNormWith } from './clip-text.ts';

/** A transformers CLIPVisionConfig (the fields the graph depends on) plus the projection width. */
export interface ClipVisionConfig {
  hidden_size: number;
  intermediate_size: number;
  num_hidden_layers: number;
  num_attention_heads: number;
  image_size: number;
  patch_size: number;
  num_channels: number;
  /** "quick_gelu" for OpenAI CLIP, "gelu" for most OpenCLIP trainings. */
  hidden_act: string;
  layer_norm_eps: number;
  /** Width of image_embeds (visual_projection's rows). */
  projection_dim: number;
}

export interface ClipVisionOptions {
  /** Test aid: also emit `last_hidden_state`, `pooler_output` and every `hidden_states.i`. */
  allOutputs?: boolean;
  attention?: AttentionKind;
}

/** Graph input/output names. */
export const CLIP_VISION_IO = {
  /** [batch, 3, image_size, image_size], CLIP-normalised (pipelines/clip-preprocess.ts). */
  pixels: 'pixel_values',
  /** [batch, projection_dim] = visual_projection(post_layernorm(class token)); not L2-normalised. */
  imageEmbeds: 'image_embeds',
  lastHidden: 'last_hidden_state',
  pooled: 'pooler_output',
  hiddenState: (i: number) => `hidden_states.${i}`,
} as const;

/** Every option with its default filled in: the part of a graph-cache key that describes this graph. */
export function clipVisionGraphOptions(opts: ClipVisionOptions): Record<string, unknown> {
  return { allOutputs: opts.allOutputs ?? false, attention: opts.attention ?? 'contrib' };
}

const P = 'vision_model';

export function buildClipVisionEncoder(b: GraphBuilder, w: WeightSource, config: ClipVisionConfig, opts: ClipVisionOptions = {}): void {
  const dim = config.hidden_size;
  const heads = config.num_attention_heads;
  if (dim % heads !== 0) throw new RangeError(`hidden_size ${dim} is not divisible by num_attention_heads ${heads}`);
  if (config.image_size % config.patch_size !== 0) throw new RangeError(`image_size ${config.image_size} is not a multiple of patch_size ${config.patch_size}`);
  const grid = config.image_size / config.patch_size;
  const tokens = grid * grid + 1;
  const act = activation(b, config.hidden_act);
  const eps = config.layer_norm_eps;
  const size = config.image_size;

  const pixels = b.input(CLIP_VISION_IO.pixels, ['batch', config.num_channels, size, size]);
  const patchWeight = w.get(`${P}.embeddings.patch_embedding.weight`);
  const patchBias = w.has(`${P}.embeddings.patch_embedding.bias`) ? w.get(`${P}.embeddings.patch_embedding.bias`) : undefined;
  const conv = b.conv(pixels, patchWeight, patchBias, `${P}.embeddings.patch_embedding`, { stride: config.patch_size });
  // [b, D, g, g] -> [b, g*g, D]: patches in row-major order, as torch's flatten(2).transpose(1, 2).
  const patches = b.transpose(b.reshape(conv, [0, dim, grid * grid]), [0, 2, 1]);
  const cls = b.weight(`${P}.embeddings.class_embedding`, w.get(`${P}.embeddings.class_embedding`), [1, 1, dim]);
  const clsShape = b.concat([b.sliceDims(b.shapeOf(patches), 0, 1), b.constInt64([1, dim])], 0);
  const withCls = b.concat([b.op('Expand', [cls, clsShape]), patches], 1);
  const positions = w.get(`${P}.embeddings.position_embedding.weight`);
  if (positions.shape[0] !== tokens)
    throw new RangeError(`position_embedding has ${positions.shape[0]} rows, the image needs ${tokens} (image ${size}, patch ${config.patch_size})`);
  const embeddings = b.add(withCls, b.weight(`${P}.embeddings.position_embedding.weight`, positions, [1, tokens, dim]));
  // transformers spells it pre_layrnorm.
  let x = layerNormWith(b, w, `${P}.pre_layrnorm`, eps)(embeddings);

  const shape = ['batch', tokens, dim];
  if (opts.allOutputs) b.output(x, CLIP_VISION_IO.hiddenState(0), shape);
  for (let i = 0; i < config.num_hidden_layers; i++) {
    x = encoderLayer(b, w, `${P}.encoder.layers.${i}`, x, { dim, heads, eps, act, kind: opts.attention ?? 'contrib' });
    if (opts.allOutputs) b.output(x, CLIP_VISION_IO.hiddenState(i + 1), shape);
  }
  const clsToken = b.reshape(b.slice(x, [0], [1], [1]), [-1, dim]);
  const pooled: Value = layerNormWith(b, w, `${P}.post_layernorm`, eps)(clsToken);
  if (opts.allOutputs) {
    b.output(x, CLIP_VISION_IO.lastHidden, shape);
    b.output(pooled, CLIP_VISION_IO.pooled, ['batch', dim]);
  }
  b.output(b.linear(pooled, w.get('visual_projection.weight'), undefined, 'visual_projection'), CLIP_VISION_IO.imageEmbeds, ['batch', config.projection_dim]);
}
