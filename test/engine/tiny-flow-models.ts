// Tiny Flux and SD3 pipelines for the end-to-end tests, assembled from the fixtures: the transformers and the T5
// encoder are the fixtures' (checked against diffusers/BFL/transformers in nets/flux.test.ts, mmdit.test.ts and
// t5.test.ts); the parts the fixtures do not have are made here from seeded random weights: CLIP text encoders of
// the widths the tiny transformers take (Flux: CLIP-L pooled 24; SD3: CLIP-L and CLIP-G with 16-wide projections),
// a 16-channel VAE (x8, 32 channels per level), CLIP tokenizers (tiny-sd1's) and a hand-made Unigram tokenizer.json
// for the 1000-token T5 vocabulary. Written once per folder; deterministic.
import { copyFileSync, existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { vaeParameterShapes } from '../../src/engine/nets/vae.ts';
import { SafetensorsFile, writeSafetensors, type TensorToWrite } from '../../src/engine/weights/safetensors.ts';
import { clipTextParameterShapes, RandomWeights } from '../../bench/random-weights.ts';
import { FIXTURES } from './nets/fixture-io.ts';

const VAE_CONFIG = {
  _class_name: 'AutoencoderKL',
  in_channels: 3,
  out_channels: 3,
  latent_channels: 16,
  block_out_channels: [32, 32, 32, 32],
  layers_per_block: 1,
  norm_num_groups: 32,
  act_fn: 'silu',
  down_block_types: Array(4).fill('DownEncoderBlock2D'),
  up_block_types: Array(4).fill('UpDecoderBlock2D'),
  sample_size: 64,
};

function tensorsOf(weights: RandomWeights, keep: (name: string) => boolean = () => true): Record<string, TensorToWrite> {
  const out: Record<string, TensorToWrite> = {};
  for (const name of weights.names()) {
    if (!keep(name)) continue;
    const t = weights.get(name);
    if (weights.dtype(name) === 'I64') {
      out[name] = { dtype: 'I64', shape: t.shape, bytes: new Uint8Array(BigInt64Array.from(t.data, (v) => BigInt(v)).buffer) };
    } else out[name] = { dtype: 'F32', shape: t.shape, bytes: new Uint8Array(Float32Array.from(t.data).buffer) };
  }
  return out;
}

function json(file: string, value: unknown): void {
  writeFileSync(file, JSON.stringify(value, null, 1));
}

function copyDir(from: string, to: string, files: string[]): void {
  mkdirSync(to, { recursive: true });
  for (const f of files) copyFileSync(join(from, f), join(to, f));
}

/** A CLIP text encoder folder with seeded weights. */
function writeClip(dir: string, c: { hidden: number; heads: number; projection?: number; act: 'quick_gelu' | 'gelu'; seed: number }): void {
  mkdirSync(dir, { recursive: true });
  const shape = {
    hidden_size: c.hidden,
    intermediate_size: 37,
    num_hidden_layers: 2,
    vocab_size: 1000,
    max_position_embeddings: 77,
    projection_dim: c.projection,
  };
  writeSafetensors(join(dir, 'model.safetensors'), tensorsOf(new RandomWeights('clip', clipTextParameterShapes(shape), c.seed)));
  json(join(dir, 'config.json'), {
    architectures: [c.projection ? 'CLIPTextModelWithProjection' : 'CLIPTextModel'],
    model_type: 'clip_text_model',
    ...shape,
    projection_dim: c.projection ?? c.hidden,
    num_attention_heads: c.heads,
    hidden_act: c.act,
    layer_norm_eps: 1e-5,
    bos_token_id: 0,
    eos_token_id: 2,
    pad_token_id: 1,
  });
}

/** A 16-channel AutoencoderKL folder with seeded weights; Flux's has no quant convs. */
function writeVae(dir: string, scale: { scaling_factor: number; shift_factor: number }, quantConvs: boolean, seed: number): void {
  mkdirSync(dir, { recursive: true });
  const shapes = vaeParameterShapes(VAE_CONFIG as never);
  writeSafetensors(
    join(dir, 'diffusion_pytorch_model.safetensors'),
    tensorsOf(new RandomWeights('vae', shapes, seed), (n) => quantConvs || !n.includes('quant_conv')),
  );
  json(join(dir, 'config.json'), { ...VAE_CONFIG, ...scale, use_quant_conv: quantConvs, use_post_quant_conv: quantConvs });
}

/** Words the tiny T5 vocabulary knows as whole pieces (the rest falls back to letters). */
export const T5_WORDS = ['a', 'photo', 'of', 'cat', 'dog', 'red', 'blue', 'on', 'the', 'lake', 'mountain', 'sitting', 'fox'];

/** A Unigram tokenizer.json for the 1000-id tiny T5 (pad 0, eos 1, unk 2 as T5's). */
export function t5TokenizerJson(): unknown {
  const vocab: [string, number][] = [
    ['<pad>', 0],
    ['</s>', 0],
    ['<unk>', 0],
  ];
  for (const w of T5_WORDS) vocab.push([`\u2581${w}`, -5 - w.length * 0.1]);
  vocab.push(['\u2581', -8]);
  for (const ch of 'abcdefghijklmnopqrstuvwxyz0123456789,.') vocab.push([ch, -10]);
  for (let i = 0; vocab.length < 1000; i++) vocab.push([`\u2581filler${i}`, -20]);
  return { version: '1.0', model: { type: 'Unigram', unk_id: 2, vocab } };
}

function writeT5Tokenizer(dir: string): void {
  mkdirSync(dir, { recursive: true });
  json(join(dir, 'tokenizer.json'), t5TokenizerJson());
}

const CLIP_TOKENIZER_FILES = ['vocab.json', 'merges.txt', 'special_tokens_map.json', 'tokenizer_config.json'];

/** The tiny FLUX.1 (dev-style: guidance input) diffusers folder. Returns `dir`. */
export function writeTinyFluxFolder(dir: string): string {
  if (existsSync(join(dir, 'model_index.json'))) return dir;
  const src = join(FIXTURES, 'tiny-flux');
  copyDir(join(src, 'transformer'), join(dir, 'transformer'), ['config.json', 'diffusion_pytorch_model.safetensors']);
  writeFluxCompanion(dir);
  json(join(dir, 'model_index.json'), {
    _class_name: 'FluxPipeline',
    scheduler: ['diffusers', 'FlowMatchEulerDiscreteScheduler'],
    text_encoder: ['transformers', 'CLIPTextModel'],
    text_encoder_2: ['transformers', 'T5EncoderModel'],
    tokenizer: ['transformers', 'CLIPTokenizer'],
    tokenizer_2: ['transformers', 'T5TokenizerFast'],
    transformer: ['diffusers', 'FluxTransformer2DModel'],
    vae: ['diffusers', 'AutoencoderKL'],
  });
  return dir;
}

/** Everything of the tiny Flux but its transformer: the companion folder of a transformer-only single file. */
export function writeFluxCompanion(dir: string): string {
  const src = join(FIXTURES, 'tiny-flux');
  // Only the transformer's config (its RoPE axes, which a non-FLUX.1 head width cannot imply).
  copyDir(join(src, 'transformer'), join(dir, 'transformer'), ['config.json']);
  copyDir(join(src, 'text_encoder_2'), join(dir, 'text_encoder_2'), ['config.json', 'model.safetensors']);
  copyDir(join(src, 'scheduler'), join(dir, 'scheduler'), ['scheduler_config.json']);
  writeClip(join(dir, 'text_encoder'), { hidden: 24, heads: 2, act: 'quick_gelu', seed: 7101 });
  copyDir(join(FIXTURES, 'tiny-sd1', 'tokenizer'), join(dir, 'tokenizer'), CLIP_TOKENIZER_FILES);
  writeT5Tokenizer(join(dir, 'tokenizer_2'));
  writeVae(join(dir, 'vae'), { scaling_factor: 0.3611, shift_factor: 0.1159 }, false, 7102);
  return dir;
}

/** The tiny SD3 diffusers folder. Returns `dir`. */
export function writeTinySd3Folder(dir: string): string {
  if (existsSync(join(dir, 'model_index.json'))) return dir;
  const src = join(FIXTURES, 'tiny-sd3');
  copyDir(join(src, 'transformer'), join(dir, 'transformer'), ['config.json', 'diffusion_pytorch_model.safetensors']);
  copyDir(join(src, 'scheduler'), join(dir, 'scheduler'), ['scheduler_config.json']);
  copyDir(join(FIXTURES, 'tiny-flux', 'text_encoder_2'), join(dir, 'text_encoder_3'), ['config.json', 'model.safetensors']);
  writeClip(join(dir, 'text_encoder'), { hidden: 16, heads: 2, projection: 16, act: 'quick_gelu', seed: 7201 });
  writeClip(join(dir, 'text_encoder_2'), { hidden: 16, heads: 2, projection: 16, act: 'gelu', seed: 7202 });
  copyDir(join(FIXTURES, 'tiny-sd1', 'tokenizer'), join(dir, 'tokenizer'), CLIP_TOKENIZER_FILES);
  copyDir(join(FIXTURES, 'tiny-sd1', 'tokenizer'), join(dir, 'tokenizer_2'), CLIP_TOKENIZER_FILES);
  writeT5Tokenizer(join(dir, 'tokenizer_3'));
  writeVae(join(dir, 'vae'), { scaling_factor: 1.5305, shift_factor: 0.0609 }, true, 7203);
  json(join(dir, 'model_index.json'), {
    _class_name: 'StableDiffusion3Pipeline',
    scheduler: ['diffusers', 'FlowMatchEulerDiscreteScheduler'],
    text_encoder: ['transformers', 'CLIPTextModelWithProjection'],
    text_encoder_2: ['transformers', 'CLIPTextModelWithProjection'],
    text_encoder_3: ['transformers', 'T5EncoderModel'],
    tokenizer: ['transformers', 'CLIPTokenizer'],
    tokenizer_2: ['transformers', 'CLIPTokenizer'],
    tokenizer_3: ['transformers', 'T5TokenizerFast'],
    transformer: ['diffusers', 'SD3Transformer2DModel'],
    vae: ['diffusers', 'AutoencoderKL'],
  });
  return dir;
}

/**
 * The tiny SD3 as one all-in-one file (Stability's prefixes; the transformer in the original layout, the encoders in
 * transformers' names, the VAE in diffusers' names under first_stage_model.). Needs the folder for its parts.
 */
export function writeTinySd3SingleFile(file: string, folder: string, transformer = join(FIXTURES, 'tiny-sd3', 'sd3-original.safetensors')): string {
  const tensors: Record<string, TensorToWrite> = {};
  const add = (path: string, prefix: string) => {
    const f = SafetensorsFile.open(path);
    for (const n of f.names()) tensors[prefix + n] = { dtype: f.entry(n).dtype, shape: [...f.entry(n).shape], bytes: f.readBytes(n) };
  };
  add(transformer, 'model.diffusion_model.');
  add(join(folder, 'text_encoder', 'model.safetensors'), 'text_encoders.clip_l.transformer.');
  add(join(folder, 'text_encoder_2', 'model.safetensors'), 'text_encoders.clip_g.transformer.');
  add(join(folder, 'text_encoder_3', 'model.safetensors'), 'text_encoders.t5xxl.transformer.');
  add(join(folder, 'vae', 'diffusion_pytorch_model.safetensors'), 'first_stage_model.');
  writeSafetensors(file, tensors);
  return file;
}
