// Real SD1.5 and SDXL architectures (the configs of runwayml/stable-diffusion-v1-5 and
// stabilityai/stable-diffusion-xl-base-1.0) for the benchmark's random-weight models.
import type { ClipTextNetConfig, ClipTextOptions } from '../src/engine/nets/clip-text.ts';
import type { VaeNetConfig } from '../src/engine/nets/vae.ts';
import type { ClipShapeConfig } from './random-weights.ts';

export interface TextEncoderSpec {
  config: ClipTextNetConfig & ClipShapeConfig;
  opts: ClipTextOptions;
}

export interface ModelSpec {
  name: string;
  unet: Record<string, unknown>;
  textEncoders: TextEncoderSpec[];
  vae: VaeNetConfig & { in_channels: number; out_channels: number };
  /** Image size in pixels (square). */
  size: number;
}

const CLIP_L: ClipTextNetConfig & ClipShapeConfig = {
  hidden_size: 768,
  intermediate_size: 3072,
  num_hidden_layers: 12,
  num_attention_heads: 12,
  hidden_act: 'quick_gelu',
  layer_norm_eps: 1e-5,
  max_position_embeddings: 77,
  vocab_size: 49408,
};

const SD_VAE = { block_out_channels: [128, 256, 512, 512], layers_per_block: 2, norm_num_groups: 32, latent_channels: 4, in_channels: 3, out_channels: 3 };

export const SD15: ModelSpec = {
  name: 'sd15',
  unet: {
    block_out_channels: [320, 640, 1280, 1280],
    layers_per_block: 2,
    down_block_types: ['CrossAttnDownBlock2D', 'CrossAttnDownBlock2D', 'CrossAttnDownBlock2D', 'DownBlock2D'],
    up_block_types: ['UpBlock2D', 'CrossAttnUpBlock2D', 'CrossAttnUpBlock2D', 'CrossAttnUpBlock2D'],
    attention_head_dim: 8,
    cross_attention_dim: 768,
    norm_num_groups: 32,
    norm_eps: 1e-5,
    in_channels: 4,
    out_channels: 4,
    use_linear_projection: false,
  },
  textEncoders: [{ config: CLIP_L, opts: {} }],
  vae: SD_VAE,
  size: 512,
};

export const SDXL: ModelSpec = {
  name: 'sdxl',
  unet: {
    block_out_channels: [320, 640, 1280],
    layers_per_block: 2,
    down_block_types: ['DownBlock2D', 'CrossAttnDownBlock2D', 'CrossAttnDownBlock2D'],
    up_block_types: ['CrossAttnUpBlock2D', 'CrossAttnUpBlock2D', 'UpBlock2D'],
    attention_head_dim: [5, 10, 20],
    transformer_layers_per_block: [1, 2, 10],
    cross_attention_dim: 2048,
    use_linear_projection: true,
    addition_embed_type: 'text_time',
    addition_time_embed_dim: 256,
    projection_class_embeddings_input_dim: 2816,
    norm_num_groups: 32,
    norm_eps: 1e-5,
    in_channels: 4,
    out_channels: 4,
  },
  textEncoders: [
    { config: { ...CLIP_L, hidden_act: 'quick_gelu' }, opts: { penultimateWithoutNorm: true } },
    {
      config: {
        hidden_size: 1280,
        intermediate_size: 5120,
        num_hidden_layers: 32,
        num_attention_heads: 20,
        hidden_act: 'gelu',
        layer_norm_eps: 1e-5,
        max_position_embeddings: 77,
        vocab_size: 49408,
        projection_dim: 1280,
      },
      opts: { penultimateWithoutNorm: true, textEmbeds: true },
    },
  ],
  vae: SD_VAE,
  size: 1024,
};
