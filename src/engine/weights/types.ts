// How networks see weights: by their diffusers/transformers parameter name, whatever file layout they came from.
import type { NBitsWeight } from '../onnx/matmul-nbits.ts';
import type { Tensor } from '../tensor.ts';

export type WeightDType = 'F32' | 'F16' | 'BF16' | 'F8_E4M3' | 'F8_E5M2' | 'F64' | 'I64' | 'I32' | 'I16' | 'I8' | 'U8' | 'BOOL';

export interface WeightSource {
  /** Diffusers-style names ("down_blocks.0.resnets.0.conv1.weight", "text_model.encoder.layers.0..."). */
  names(): string[];
  has(name: string): boolean;
  shape(name: string): number[];
  /** Stored dtype, before conversion. */
  dtype(name: string): WeightDType;
  /** The tensor converted to float32 (F16/BF16 widened exactly). Throws ModelFileError naming the file if missing. */
  get(name: string): Tensor;
  /**
   * A Linear weight [out, in] in block-quantised MatMulNBits form, when this source has one (a GGUF file's
   * quantised blocks, or --quantize); undefined: use get(). Networks ask before reading a Linear's weight.
   */
  nbits?(name: string): NBitsWeight | undefined;
}

/** A diffusers UNet2DConditionModel config (fields the networks use; a folder's config.json may carry more). */
export interface UnetConfig {
  in_channels: number;
  out_channels: number;
  block_out_channels: number[];
  layers_per_block: number;
  down_block_types: string[];
  up_block_types: string[];
  mid_block_type: string | null;
  /** diffusers' historical name: for SD1 a head *count* (8); SD2/SDXL list per-level head counts (channels/64). */
  attention_head_dim: number | number[];
  num_attention_heads: number | number[] | null;
  cross_attention_dim: number;
  use_linear_projection: boolean;
  transformer_layers_per_block: number | number[];
  norm_num_groups: number;
  norm_eps: number;
  upcast_attention: boolean;
  addition_embed_type: string | null;
  addition_time_embed_dim: number | null;
  projection_class_embeddings_input_dim: number | null;
  sample_size: number;
  flip_sin_to_cos: boolean;
  freq_shift: number;
  act_fn: string;
  [extra: string]: unknown;
}

/** A diffusers AutoencoderKL config. */
export interface VaeConfig {
  in_channels: number;
  out_channels: number;
  latent_channels: number;
  block_out_channels: number[];
  layers_per_block: number;
  down_block_types: string[];
  up_block_types: string[];
  norm_num_groups: number;
  act_fn: string;
  scaling_factor: number;
  sample_size: number;
  force_upcast?: boolean;
  [extra: string]: unknown;
}

/** A transformers CLIPTextConfig. */
export interface ClipTextConfig {
  architectures?: string[];
  hidden_size: number;
  intermediate_size: number;
  num_hidden_layers: number;
  num_attention_heads: number;
  max_position_embeddings: number;
  vocab_size: number;
  hidden_act: string;
  layer_norm_eps: number;
  projection_dim?: number;
  bos_token_id?: number;
  eos_token_id?: number;
  pad_token_id?: number;
  [extra: string]: unknown;
}

/** The training noise schedule (diffusers scheduler_config.json fields). */
export interface SchedulerConfig {
  beta_start: number;
  beta_end: number;
  beta_schedule: string;
  num_train_timesteps: number;
  prediction_type: 'epsilon' | 'v_prediction';
  timestep_spacing?: string;
  steps_offset?: number;
  clip_sample?: boolean;
  set_alpha_to_one?: boolean;
  trained_betas?: number[] | null;
  [extra: string]: unknown;
}
