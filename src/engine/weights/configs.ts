// Component configs: diffusers/transformers defaults, inference from weight shapes (for single-file
// checkpoints, which carry no config), and checks that a config agrees with the weights it comes with.
// What the weights cannot tell comes from the family's conventions (families/<name>.ts).
import type { ModelFamily, Prediction, UnetFamily } from '../families/types.ts';
import type { ClipTextConfig, SchedulerConfig, UnetConfig, VaeConfig, WeightSource } from './types.ts';

export type { Prediction } from '../families/types.ts';

/** UNet2DConditionModel.__init__ defaults (diffusers 0.27), so configs that omit fields read the same. */
export const UNET_DEFAULTS: UnetConfig = {
  sample_size: 64,
  in_channels: 4,
  out_channels: 4,
  center_input_sample: false,
  flip_sin_to_cos: true,
  freq_shift: 0,
  down_block_types: ['CrossAttnDownBlock2D', 'CrossAttnDownBlock2D', 'CrossAttnDownBlock2D', 'DownBlock2D'],
  mid_block_type: 'UNetMidBlock2DCrossAttn',
  up_block_types: ['UpBlock2D', 'CrossAttnUpBlock2D', 'CrossAttnUpBlock2D', 'CrossAttnUpBlock2D'],
  only_cross_attention: false,
  block_out_channels: [320, 640, 1280, 1280],
  layers_per_block: 2,
  downsample_padding: 1,
  mid_block_scale_factor: 1,
  dropout: 0,
  act_fn: 'silu',
  norm_num_groups: 32,
  norm_eps: 1e-5,
  cross_attention_dim: 1280,
  transformer_layers_per_block: 1,
  reverse_transformer_layers_per_block: null,
  encoder_hid_dim: null,
  encoder_hid_dim_type: null,
  attention_head_dim: 8,
  num_attention_heads: null,
  dual_cross_attention: false,
  use_linear_projection: false,
  class_embed_type: null,
  addition_embed_type: null,
  addition_time_embed_dim: null,
  num_class_embeds: null,
  upcast_attention: false,
  resnet_time_scale_shift: 'default',
  resnet_skip_time_act: false,
  resnet_out_scale_factor: 1.0,
  time_embedding_type: 'positional',
  time_embedding_dim: null,
  time_embedding_act_fn: null,
  timestep_post_act: null,
  time_cond_proj_dim: null,
  conv_in_kernel: 3,
  conv_out_kernel: 3,
  projection_class_embeddings_input_dim: null,
  attention_type: 'default',
  class_embeddings_concat: false,
  mid_block_only_cross_attention: null,
  cross_attention_norm: null,
  addition_embed_type_num_heads: 64,
};

export const VAE_DEFAULTS: VaeConfig = {
  in_channels: 3,
  out_channels: 3,
  down_block_types: ['DownEncoderBlock2D'],
  up_block_types: ['UpDecoderBlock2D'],
  block_out_channels: [64],
  layers_per_block: 1,
  act_fn: 'silu',
  latent_channels: 4,
  norm_num_groups: 32,
  sample_size: 32,
  scaling_factor: 0.18215,
  force_upcast: true,
  latents_mean: null,
  latents_std: null,
};

export const CLIP_TEXT_DEFAULTS: ClipTextConfig = {
  vocab_size: 49408,
  hidden_size: 512,
  intermediate_size: 2048,
  projection_dim: 512,
  num_hidden_layers: 12,
  num_attention_heads: 8,
  max_position_embeddings: 77,
  hidden_act: 'quick_gelu',
  layer_norm_eps: 1e-5,
  attention_dropout: 0,
  dropout: 0,
  initializer_range: 0.02,
  initializer_factor: 1,
  pad_token_id: 1,
  bos_token_id: 49406,
  eos_token_id: 49407,
};

/**
 * The noise schedule every SD1/SD2/SDXL model was trained with (as diffusers' from_single_file sets it up):
 * scaled_linear 0.00085..0.012 over 1000 steps.
 */
export function standardSchedulerConfig(prediction: Prediction): SchedulerConfig {
  return {
    _class_name: 'DDIMScheduler',
    beta_start: 0.00085,
    beta_end: 0.012,
    beta_schedule: 'scaled_linear',
    num_train_timesteps: 1000,
    prediction_type: prediction,
    timestep_spacing: 'leading',
    steps_offset: 1,
    clip_sample: false,
    set_alpha_to_one: false,
    trained_betas: null,
  };
}

export function withSchedulerDefaults(raw: Record<string, unknown>): SchedulerConfig {
  return {
    beta_start: 0.0001,
    beta_end: 0.02,
    beta_schedule: 'linear',
    num_train_timesteps: 1000,
    prediction_type: 'epsilon',
    steps_offset: 0,
    trained_betas: null,
    ...raw,
  } as SchedulerConfig;
}

// ---------------------------------------------------------------- inference from diffusers-named weights

function countIndexed(w: WeightSource, prefix: string): number {
  const ids = new Set<number>();
  for (const n of w.names()) {
    if (!n.startsWith(prefix)) continue;
    const m = /^(\d+)\./.exec(n.slice(prefix.length));
    if (m) ids.add(Number(m[1]));
  }
  return ids.size === 0 ? 0 : Math.max(...ids) + 1;
}

function firstWith(w: WeightSource, test: (n: string) => boolean): string | undefined {
  return w.names().find(test);
}

/** Per-level values as diffusers writes them: a scalar when all levels agree, else a list. */
function compact(values: number[]): number | number[] {
  return values.every((v) => v === values[0]) ? values[0]! : values;
}

export interface Inferred<T> {
  config: T;
  /** Fields that the weights cannot tell, filled from family conventions, and why they might be wrong. */
  guesses: string[];
}

export interface UnetInferenceHints {
  family: UnetFamily;
  prediction: Prediction;
  /** Output width of the pooled text embedding (bigG projection) for SDXL's added-condition input. */
  pooledTextDim?: number;
}

export function inferUnetConfig(w: WeightSource, hints: UnetInferenceHints): Inferred<UnetConfig> {
  const guesses: string[] = [];
  const levels = countIndexed(w, 'down_blocks.');
  const blockOut: number[] = [];
  const tlpb: number[] = [];
  const downTypes: string[] = [];
  const upTypes: string[] = [];
  for (let i = 0; i < levels; i++) {
    blockOut.push(w.shape(`down_blocks.${i}.resnets.0.conv1.weight`)[0]!);
    const hasAttn = w.has(`down_blocks.${i}.attentions.0.norm.weight`);
    downTypes.push(hasAttn ? 'CrossAttnDownBlock2D' : 'DownBlock2D');
    tlpb.push(hasAttn ? countIndexed(w, `down_blocks.${i}.attentions.0.transformer_blocks.`) : 1);
    upTypes.push(w.has(`up_blocks.${i}.attentions.0.norm.weight`) ? 'CrossAttnUpBlock2D' : 'UpBlock2D');
  }
  const attn2 = firstWith(w, (n) => n.endsWith('.attn2.to_k.weight'));
  const projIn = firstWith(w, (n) => n.endsWith('.proj_in.weight'));
  const hasAdd = w.has('add_embedding.linear_1.weight');
  const adm = hasAdd ? w.shape('add_embedding.linear_1.weight')[1]! : null;

  let headDim: number | number[];
  const heads = hints.family.unet.attentionHeads;
  if ('count' in heads) headDim = heads.count;
  else {
    // Fixed-width heads: diffusers lists the resulting head count per level.
    const perLevel = blockOut.map((c) => c / heads.width);
    if (perLevel.every((h) => Number.isInteger(h))) headDim = perLevel;
    else {
      headDim = blockOut.map(() => 1);
      guesses.push(`attention_head_dim: channels ${JSON.stringify(blockOut)} are not multiples of ${heads.width}, used 1 head per level`);
    }
  }
  const groups = guessNormGroups(blockOut, guesses);

  let addTimeDim: number | null = null;
  if (adm !== null) {
    // SDXL base conditions on 6 size/crop numbers, the refiner on 5 (sizes, crop, aesthetic score).
    const nIds = hints.family.unet.addedTimeIds ?? 6;
    const pooled = hints.pooledTextDim ?? 1280;
    addTimeDim = (adm - pooled) / nIds;
    if (!Number.isInteger(addTimeDim) || addTimeDim <= 0) {
      guesses.push(`addition_time_embed_dim: ${adm} added-condition inputs do not split as ${pooled} + ${nIds} x N`);
      addTimeDim = 256;
    }
  }

  const config: UnetConfig = {
    ...UNET_DEFAULTS,
    in_channels: w.shape('conv_in.weight')[1]!,
    out_channels: w.shape('conv_out.weight')[0]!,
    block_out_channels: blockOut,
    layers_per_block: countIndexed(w, 'down_blocks.0.resnets.'),
    down_block_types: downTypes,
    up_block_types: upTypes,
    mid_block_type: w.has('mid_block.attentions.0.norm.weight') ? 'UNetMidBlock2DCrossAttn' : 'UNetMidBlock2D',
    attention_head_dim: headDim,
    cross_attention_dim: attn2 ? w.shape(attn2)[1]! : UNET_DEFAULTS.cross_attention_dim,
    use_linear_projection: projIn ? w.shape(projIn).length === 2 : false,
    transformer_layers_per_block: compact(tlpb),
    norm_num_groups: groups,
    addition_embed_type: hasAdd ? 'text_time' : null,
    addition_time_embed_dim: addTimeDim,
    projection_class_embeddings_input_dim: adm,
    upcast_attention: hints.family.unet.upcastAttention(hints.prediction),
    sample_size: hints.family.unet.sampleSize(hints.prediction),
  };
  return { config, guesses };
}

/** Every released model uses 32 groups; toy models whose widths 32 does not divide get the largest divisor. */
function guessNormGroups(channels: number[], guesses: string[]): number {
  if (channels.every((c) => c % 32 === 0)) return 32;
  let g = 32;
  while (g > 1 && !channels.every((c) => c % g === 0)) g--;
  guesses.push(`norm_num_groups: 32 does not divide channels ${JSON.stringify(channels)}, used ${g} (the real value is not stored in the weights)`);
  return g;
}

export function inferVaeConfig(w: WeightSource, family: ModelFamily): Inferred<VaeConfig> {
  const guesses: string[] = [];
  const levels = countIndexed(w, 'encoder.down_blocks.');
  const blockOut: number[] = [];
  for (let i = 0; i < levels; i++) blockOut.push(w.shape(`encoder.down_blocks.${i}.resnets.0.conv1.weight`)[0]!);
  const groups = guessNormGroups(blockOut, guesses);
  const config: VaeConfig = {
    ...VAE_DEFAULTS,
    in_channels: w.shape('encoder.conv_in.weight')[1]!,
    out_channels: w.shape('decoder.conv_out.weight')[0]!,
    // The Flux VAE has no post_quant_conv: the decoder's input conv says the latent width.
    latent_channels: w.has('post_quant_conv.weight') ? w.shape('post_quant_conv.weight')[0]! : w.shape('decoder.conv_in.weight')[1]!,
    block_out_channels: blockOut,
    layers_per_block: countIndexed(w, 'encoder.down_blocks.0.resnets.'),
    down_block_types: blockOut.map(() => 'DownEncoderBlock2D'),
    up_block_types: blockOut.map(() => 'UpDecoderBlock2D'),
    norm_num_groups: groups,
    scaling_factor: family.latentSpace.scalingFactor,
    sample_size: family.vae.sampleSize,
  };
  return { config, guesses };
}

/** `openclip`: SD2's OpenCLIP-H and SDXL's bigG use gelu; OpenAI's CLIP-L (SD1, SDXL encoder 1) quick_gelu. */
export function inferClipTextConfig(w: WeightSource, openclip: boolean): Inferred<ClipTextConfig> {
  const guesses: string[] = [];
  const [vocab, hidden] = w.shape('text_model.embeddings.token_embedding.weight') as [number, number];
  let heads = hidden / 64; // every released SD text encoder uses 64-dim heads
  if (!Number.isInteger(heads)) {
    heads = 1;
    guesses.push(`num_attention_heads: hidden size ${hidden} is not a multiple of 64, used 1 head`);
  }
  const withProjection = w.has('text_projection.weight');
  const config: ClipTextConfig = {
    ...CLIP_TEXT_DEFAULTS,
    architectures: [withProjection ? 'CLIPTextModelWithProjection' : 'CLIPTextModel'],
    model_type: 'clip_text_model',
    vocab_size: vocab,
    hidden_size: hidden,
    intermediate_size: w.shape('text_model.encoder.layers.0.mlp.fc1.weight')[0]!,
    num_hidden_layers: countIndexed(w, 'text_model.encoder.layers.'),
    num_attention_heads: heads,
    max_position_embeddings: w.shape('text_model.embeddings.position_embedding.weight')[0]!,
    hidden_act: openclip ? 'gelu' : 'quick_gelu',
    projection_dim: withProjection ? w.shape('text_projection.weight')[0]! : hidden,
    // diffusers' SD configs keep CLIP's small default ids; pipelines pool at argmax(input_ids) anyway.
    bos_token_id: 0,
    eos_token_id: 2,
    pad_token_id: 1,
  };
  return { config, guesses };
}

// ---------------------------------------------------------------- agreement between configs and weights

/** Config fields that the weights determine; a config that disagrees on one of these cannot drive them. */
export const UNET_STRUCTURE = [
  'in_channels',
  'out_channels',
  'block_out_channels',
  'layers_per_block',
  'down_block_types',
  'up_block_types',
  'cross_attention_dim',
  'use_linear_projection',
  'transformer_layers_per_block',
  'addition_embed_type',
  'projection_class_embeddings_input_dim',
] as const;
export const VAE_STRUCTURE = ['in_channels', 'out_channels', 'latent_channels', 'block_out_channels', 'layers_per_block'] as const;
export const CLIP_STRUCTURE = ['hidden_size', 'intermediate_size', 'num_hidden_layers', 'max_position_embeddings', 'vocab_size'] as const;

function normalise(key: string, value: unknown, config: Record<string, unknown>): unknown {
  if (key === 'transformer_layers_per_block') {
    // A scalar means "this many at every level"; a DownBlock2D level's count is irrelevant, so compare
    // attention levels only.
    const types = (config.down_block_types as string[] | undefined) ?? [];
    const perLevel = typeof value === 'number' ? types.map(() => value) : (value as number[]);
    return perLevel.map((v, i) => (types[i]?.startsWith('CrossAttn') ? v : 1));
  }
  return value ?? null;
}

/** Names of structural fields where `config` and `inferred` disagree. */
export function structuralMismatches(config: Record<string, unknown>, inferred: Record<string, unknown>, keys: readonly string[]): string[] {
  return keys.filter((k) => JSON.stringify(normalise(k, config[k], config)) !== JSON.stringify(normalise(k, inferred[k], inferred)));
}
