// A CLIP model file or folder (the vision tower, and the text tower when the file has one) as transformers-named
// weights plus the configs the graphs need. Layouts:
//  - transformers: CLIPVisionModelWithProjection (`vision_model.*`, `visual_projection.weight`) or CLIPModel
//    (also `text_model.*`, `text_projection.weight`), a folder with config.json or a single file (ComfyUI's
//    models/clip_vision files are this layout);
//  - OpenCLIP (open_clip_pytorch_model): `visual.conv1`, `visual.class_embedding`, `visual.positional_embedding`,
//    `visual.ln_pre`, `visual.transformer.resblocks.N.*` (fused in_proj), `visual.ln_post`, `visual.proj`
//    [width, embed], and the text tower at the top level (mapped by ldm-keys.ts mapOpenClip).
// Without a config.json the configs come from the tensor shapes; see clipActivation for the one guess.
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { ModelFileError } from '../api.ts';
import type { ClipVisionConfig } from '../nets/clip-vision.ts';
import { mapOpenClip } from './ldm-keys.ts';
import { MappedWeights, type Recipe, storedWeights } from './sources.ts';
import { openTensorFile, type TensorFile } from './tensor-file.ts';
import type { ClipTextConfig, WeightSource } from './types.ts';

export interface ClipModelWeights {
  /** The files the weights come from (for the graph-cache identity). */
  files: TensorFile[];
  /** The folder holding config.json / preprocessor_config.json / vocab.json, if the model is a folder. */
  dir?: string;
  layout: 'transformers' | 'openclip';
  weights: { vision: WeightSource; text?: WeightSource };
  config: { vision: ClipVisionConfig; text?: ClipTextConfig & { projection_dim: number } };
  /** preprocessor_config.json, when the folder has one. */
  preprocessor?: Record<string, unknown>;
}

const WEIGHT_FILES = ['model.safetensors', 'pytorch_model.bin', 'open_clip_pytorch_model.bin', 'open_clip_model.safetensors'];

/** Opens a CLIP model folder or file; throws ModelFileError naming it and what is wrong. */
export function openClipModelWeights(path: string): ClipModelWeights {
  let dir: string | undefined;
  let file: TensorFile;
  let configJson: Record<string, unknown> | undefined;
  let preprocessor: Record<string, unknown> | undefined;
  if (statSync(path).isDirectory()) {
    dir = path;
    const weightsFile = WEIGHT_FILES.map((f) => join(path, f)).find((f) => existsSync(f));
    if (!weightsFile) throw new ModelFileError(path, `has no weights file (expected one of ${WEIGHT_FILES.join(', ')})`);
    file = openTensorFile(weightsFile);
    // OpenCLIP folders carry open_clip_config.json ({model_cfg: {vision_cfg, quick_gelu, ...}}).
    configJson = readJson(join(path, 'config.json')) ?? (readJson(join(path, 'open_clip_config.json'))?.model_cfg as Record<string, unknown> | undefined);
    preprocessor = readJson(join(path, 'preprocessor_config.json'));
  } else {
    file = openTensorFile(path);
  }
  const names = file.names();
  if (names.some((n) => n.startsWith('vision_model.'))) return transformersLayout(file, dir, configJson, preprocessor);
  if (names.some((n) => n.startsWith('visual.'))) return openClipLayout(file, dir, configJson, preprocessor);
  throw new ModelFileError(file.file, 'is not a CLIP vision model (no vision_model.* or visual.* tensors)');
}

function readJson(file: string): Record<string, unknown> | undefined {
  if (!existsSync(file)) return undefined;
  try {
    return JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>;
  } catch (e) {
    throw new ModelFileError(file, `invalid JSON: ${(e as Error).message}`);
  }
}

/**
 * The MLP activation when no config.json says: OpenAI's CLIPs (ViT-B/32, B/16, L/14, the towers SD1 and
 * A1111's interrogator use) were trained with quick_gelu; LAION's OpenCLIP trainings (ViT-H/14, bigG/14, the
 * IP-Adapter image encoders) with exact gelu. They differ in width: OpenAI's vision towers are 768 or 1024 wide.
 */
function clipActivation(visionWidth: number, layout: 'transformers' | 'openclip'): string {
  return layout === 'transformers' && (visionWidth === 768 || visionWidth === 1024) ? 'quick_gelu' : 'gelu';
}

/** Attention heads of the released CLIPs by width (head size 64, except ViT-g/bigG with 16 wider heads). */
function headsFor(width: number, what: string, file: string): number {
  const known: Record<number, number> = { 768: 12, 1024: 16, 1280: 16, 1408: 16, 1664: 16 };
  const heads = known[width] ?? (width % 64 === 0 ? width / 64 : undefined);
  if (!heads) throw new ModelFileError(file, `cannot tell the ${what} attention heads of width ${width}; put the model's config.json beside it`);
  return heads;
}

/** CLIP text towers use 64-wide heads at every size (512/8, 768/12, 1024/16, 1280/20). */
function textHeads(width: number, file: string): number {
  if (width % 64 !== 0) throw new ModelFileError(file, `cannot tell the text attention heads of width ${width}; put the model's config.json beside it`);
  return width / 64;
}

function layerCount(names: string[], pattern: RegExp): number {
  let n = 0;
  for (const k of names) {
    const m = pattern.exec(k);
    if (m) n = Math.max(n, Number(m[1]) + 1);
  }
  return n;
}

function num(v: unknown, fallback: number): number {
  return typeof v === 'number' && Number.isFinite(v) ? v : fallback;
}

function transformersLayout(
  file: TensorFile,
  dir: string | undefined,
  json: Record<string, unknown> | undefined,
  preprocessor: Record<string, unknown> | undefined,
): ClipModelWeights {
  const all = storedWeights(file.file, [file]);
  const names = file.names();
  if (!file.has('visual_projection.weight')) {
    throw new ModelFileError(file.file, 'has no visual_projection.weight: a CLIPVisionModel without projection cannot give image embeddings');
  }
  const shape = (n: string) => file.entry(n).shape;
  // CLIPModel configs nest vision_config/text_config; CLIPVisionModelWithProjection's is flat.
  const vj = (json?.vision_config as Record<string, unknown> | undefined) ?? (json?.model_type === 'clip' ? {} : (json ?? {}));
  const width = shape('vision_model.embeddings.class_embedding')[0]!;
  const patch = shape('vision_model.embeddings.patch_embedding.weight')[2]!;
  const tokens = shape('vision_model.embeddings.position_embedding.weight')[0]!;
  const act = typeof vj.hidden_act === 'string' ? vj.hidden_act : clipActivation(width, 'transformers');
  const vision: ClipVisionConfig = {
    hidden_size: width,
    intermediate_size: shape('vision_model.encoder.layers.0.mlp.fc1.weight')[0]!,
    num_hidden_layers: layerCount(names, /^vision_model\.encoder\.layers\.(\d+)\./),
    num_attention_heads: num(vj.num_attention_heads, 0) || headsFor(width, 'vision', file.file),
    image_size: Math.round(Math.sqrt(tokens - 1)) * patch,
    patch_size: patch,
    num_channels: shape('vision_model.embeddings.patch_embedding.weight')[1]!,
    hidden_act: act,
    layer_norm_eps: num(vj.layer_norm_eps, 1e-5),
    projection_dim: shape('visual_projection.weight')[0]!,
  };
  const out: ClipModelWeights = { files: [file], dir, layout: 'transformers', weights: { vision: all }, config: { vision }, preprocessor };
  if (file.has('text_model.embeddings.token_embedding.weight') && file.has('text_projection.weight')) {
    const tj = (json?.text_config as Record<string, unknown> | undefined) ?? {};
    const [vocab, textWidth] = shape('text_model.embeddings.token_embedding.weight') as [number, number];
    // position_ids is a buffer some files store damaged; the graph does not read it.
    out.weights.text = all;
    out.config.text = {
      hidden_size: textWidth,
      intermediate_size: shape('text_model.encoder.layers.0.mlp.fc1.weight')[0]!,
      num_hidden_layers: layerCount(names, /^text_model\.encoder\.layers\.(\d+)\./),
      num_attention_heads: num(tj.num_attention_heads, 0) || textHeads(textWidth, file.file),
      max_position_embeddings: shape('text_model.embeddings.position_embedding.weight')[0]!,
      vocab_size: vocab,
      hidden_act: typeof tj.hidden_act === 'string' ? tj.hidden_act : act,
      layer_norm_eps: num(tj.layer_norm_eps, 1e-5),
      projection_dim: shape('text_projection.weight')[0]!,
    };
  }
  return out;
}

const VISUAL_BLOCK_RENAMES: [string, string][] = [
  ['ln_1.', 'layer_norm1.'],
  ['ln_2.', 'layer_norm2.'],
  ['attn.out_proj.', 'self_attn.out_proj.'],
  ['mlp.c_fc.', 'mlp.fc1.'],
  ['mlp.c_proj.', 'mlp.fc2.'],
];

function openClipLayout(
  file: TensorFile,
  dir: string | undefined,
  json: Record<string, unknown> | undefined,
  preprocessor: Record<string, unknown> | undefined,
): ClipModelWeights {
  const map = new Map<string, Recipe>();
  const tensor = (key: string, shape?: number[]): Recipe => (shape ? { kind: 'tensor', file, key, shape } : { kind: 'tensor', file, key });
  const unmapped: string[] = [];
  const P = 'vision_model.';
  for (const key of file.names()) {
    if (!key.startsWith('visual.')) continue;
    const k = key.slice('visual.'.length);
    const block = /^transformer\.resblocks\.(\d+)\.(.+)$/.exec(k);
    const norm = /^(ln_pre|ln_post)\.(weight|bias)$/.exec(k);
    if (k === 'conv1.weight') map.set(`${P}embeddings.patch_embedding.weight`, tensor(key));
    else if (k === 'class_embedding') map.set(`${P}embeddings.class_embedding`, tensor(key));
    else if (k === 'positional_embedding') map.set(`${P}embeddings.position_embedding.weight`, tensor(key));
    else if (k === 'proj') map.set('visual_projection.weight', { kind: 'transpose', file, key });
    else if (norm) map.set(`${P}${norm[1] === 'ln_pre' ? 'pre_layrnorm' : 'post_layernorm'}.${norm[2]}`, tensor(key));
    else if (block) {
      const base = `${P}encoder.layers.${block[1]}.`;
      const rest = block[2]!;
      const fused = /^attn\.in_proj_(weight|bias)$/.exec(rest);
      const rename = VISUAL_BLOCK_RENAMES.find(([from]) => rest.startsWith(from));
      if (fused) {
        ['q_proj', 'k_proj', 'v_proj'].forEach((proj, part) => map.set(`${base}self_attn.${proj}.${fused[1]}`, { kind: 'rows', file, key, part, parts: 3 }));
      } else if (rename) map.set(base + rename[1] + rest.slice(rename[0].length), tensor(key));
      else unmapped.push(key);
    } else unmapped.push(key);
  }
  if (unmapped.length) throw new ModelFileError(file.file, `unrecognised OpenCLIP vision tensors: ${unmapped.slice(0, 5).join(', ')}`);
  if (!map.has('visual_projection.weight')) throw new ModelFileError(file.file, 'has no visual.proj: the image embeddings need the projection');
  const vision = new MappedWeights(file.file, map);
  const vj = (json?.vision_cfg as Record<string, unknown> | undefined) ?? {};
  const width = vision.shape(`${P}embeddings.class_embedding`)[0]!;
  const patch = vision.shape(`${P}embeddings.patch_embedding.weight`)[2]!;
  const tokens = vision.shape(`${P}embeddings.position_embedding.weight`)[0]!;
  const act = json?.quick_gelu === true ? 'quick_gelu' : clipActivation(width, 'openclip');
  const config: ClipModelWeights['config'] = {
    vision: {
      hidden_size: width,
      intermediate_size: vision.shape(`${P}encoder.layers.0.mlp.fc1.weight`)[0]!,
      num_hidden_layers: layerCount([...map.keys()], /^vision_model\.encoder\.layers\.(\d+)\./),
      num_attention_heads: typeof vj.head_width === 'number' ? width / vj.head_width : headsFor(width, 'vision', file.file),
      image_size: Math.round(Math.sqrt(tokens - 1)) * patch,
      patch_size: patch,
      num_channels: vision.shape(`${P}embeddings.patch_embedding.weight`)[1]!,
      hidden_act: act,
      layer_norm_eps: 1e-5,
      projection_dim: vision.shape('visual_projection.weight')[0]!,
    },
  };
  const out: ClipModelWeights = { files: [file], dir, layout: 'openclip', weights: { vision }, config, preprocessor };
  if (file.has('token_embedding.weight') && file.has('text_projection')) {
    const text = new MappedWeights(file.file, mapOpenClip(file, '', { dropLastLayer: false, withProjection: true }));
    const [vocab, textWidth] = text.shape('text_model.embeddings.token_embedding.weight') as [number, number];
    out.weights.text = text;
    out.config.text = {
      hidden_size: textWidth,
      intermediate_size: text.shape('text_model.encoder.layers.0.mlp.fc1.weight')[0]!,
      num_hidden_layers: layerCount(text.names(), /^text_model\.encoder\.layers\.(\d+)\./),
      num_attention_heads: textHeads(textWidth, file.file),
      max_position_embeddings: text.shape('text_model.embeddings.position_embedding.weight')[0]!,
      vocab_size: vocab,
      hidden_act: act,
      layer_norm_eps: 1e-5,
      projection_dim: text.shape('text_projection.weight')[0]!,
    };
  }
  return out;
}
