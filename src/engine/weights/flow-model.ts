// Loading Flux.1 and SD3 models: a diffusers folder (transformer/, text_encoder*/, vae/, scheduler/, tokenizer*/), a
// single file holding everything (ComfyUI/Stability all-in-one: `model.diffusion_model.`, `text_encoders.clip_l.`,
// `text_encoders.clip_g.`, `text_encoders.t5xxl.`, `vae.` / `first_stage_model.`), or a transformer-only file (BFL's
// flux1-dev.safetensors) whose other parts come from a companion diffusers folder (LoadOptions.configDir or
// ModelRef.tokenizerDir: text_encoder*/, vae/, tokenizer*/) and ModelRef.vae. The transformer is always read under
// BFL (Flux) or original SD3 names (flux-keys.ts, sd3-keys.ts).
import { existsSync, readFileSync, statSync } from 'node:fs';
import { basename, join } from 'node:path';
import { ModelFileError } from '../api.ts';
import { detectCheckpointFamily, FLOW_FAMILIES } from '../families/index.ts';
import type { FlowFamily, TextEncoderComponent } from '../families/types.ts';
import { fluxConfigFromWeights, type FluxConfig } from '../nets/flux.ts';
import { mmditConfigFromWeights, type MmditConfig } from '../nets/mmdit.ts';
import type { T5EncoderConfig } from '../nets/t5.ts';
import type { FlowScheduleConfig } from '../samplers/flow.ts';
import { CLIP_STRUCTURE, CLIP_TEXT_DEFAULTS, VAE_DEFAULTS, VAE_STRUCTURE, inferClipTextConfig, inferVaeConfig, structuralMismatches } from './configs.ts';
import { DIFFUSION_MODEL_PREFIX, fluxLayoutOf, fluxWeightsAsBfl, transformerTensors } from './flux-keys.ts';
import { mapDiffusersVae, mapLdmVae } from './ldm-keys.ts';
import { sd3LayoutOf, sd3WeightsAsOriginal } from './sd3-keys.ts';
import { MappedWeights, storedWeights } from './sources.ts';
import { openTensorFile, type TensorFile } from './tensor-file.ts';
import type { ClipTextConfig, VaeConfig, WeightSource } from './types.ts';

/** The flow transformer's kind and config. */
export type FlowTransformerConfig = { kind: 'flux'; config: FluxConfig } | { kind: 'mmdit'; config: MmditConfig };

/** What a flow model has beyond the common parts (LoadedModel.flow). */
export interface FlowModelParts {
  transformer: FlowTransformerConfig;
  /** The T5 encoder; absent only for SD3 without T5 (zeros stand in, as diffusers does). */
  t5?: { config: T5EncoderConfig; weights: WeightSource };
  /** The T5 tokenizer's tokenizer.json or spiece.model (resolved by loadModel; absent when only inspecting). */
  t5TokenizerFile?: string;
  /** A folder where the T5 tokenizer is looked for (the model's own tokenizer_N/ or the companion's). */
  t5TokenizerDirs: string[];
  schedule: FlowScheduleConfig;
}

export interface FlowTextEncoderPart {
  component: TextEncoderComponent;
  config: ClipTextConfig;
  weights: WeightSource;
}

/** The common parts of a loaded flow model (weights/model.ts assembles the LoadedModel). */
export interface LoadedFlowParts {
  family: FlowFamily;
  transformer: WeightSource;
  vae: WeightSource;
  vaeConfig: VaeConfig;
  textEncoders: FlowTextEncoderPart[];
  ownTokenizerDirs: (string | undefined)[];
  flow: FlowModelParts;
  warnings: string[];
}

type ConfigRecord = Record<string, unknown>;

function readJson(file: string): ConfigRecord {
  try {
    const v = JSON.parse(readFileSync(file, 'utf8')) as unknown;
    if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new Error('not a JSON object');
    return v as ConfigRecord;
  } catch (e) {
    throw new ModelFileError(file, `cannot read JSON: ${(e as Error).message}`);
  }
}

/** A diffusers folder of a flow pipeline: model_index.json names a transformer. */
export function isFlowFolder(dir: string): boolean {
  const index = join(dir, 'model_index.json');
  if (!existsSync(index)) return false;
  const entry = readJson(index).transformer;
  return Array.isArray(entry) && entry[0] !== null && existsSync(join(dir, 'transformer'));
}

/** The flow family whose transformer `weights` (prefix already stripped) are, with them under its own names. */
function identifyTransformer(
  label: string,
  weights: WeightSource,
  axesDim?: number[],
): { family: FlowFamily; weights: WeightSource; transformer: FlowTransformerConfig } {
  const byName = (name: string) => FLOW_FAMILIES.find((f) => f.name === name)!;
  if (fluxLayoutOf(weights)) {
    const bfl = fluxWeightsAsBfl(weights);
    return { family: byName('flux'), weights: bfl, transformer: { kind: 'flux', config: fluxConfigFromWeights(bfl, axesDim) } };
  }
  if (sd3LayoutOf(weights)) {
    const original = sd3WeightsAsOriginal(weights);
    return { family: byName('sd3'), weights: original, transformer: { kind: 'mmdit', config: mmditConfigFromWeights(original) } };
  }
  throw new ModelFileError(label, 'is neither a FLUX.1 nor an SD3 transformer');
}

/** diffusers' FlowMatchEulerDiscreteScheduler config, or the family's default when the folder has none. */
function flowSchedule(file: string | undefined, family: FlowFamily, hasGuidance: boolean): FlowScheduleConfig {
  const base = family.flow.defaultSchedule(hasGuidance);
  if (!file || !existsSync(file)) return base;
  const c = readJson(file);
  const num = (k: string, d: number | undefined) => (typeof c[k] === 'number' ? (c[k] as number) : d);
  return {
    num_train_timesteps: num('num_train_timesteps', base.num_train_timesteps)!,
    shift: num('shift', base.shift)!,
    use_dynamic_shifting: typeof c.use_dynamic_shifting === 'boolean' ? c.use_dynamic_shifting : base.use_dynamic_shifting,
    base_shift: num('base_shift', base.base_shift),
    max_shift: num('max_shift', base.max_shift),
    base_image_seq_len: num('base_image_seq_len', base.base_image_seq_len),
    max_image_seq_len: num('max_image_seq_len', base.max_image_seq_len),
  };
}

/** A T5 v1.1 encoder config from its weights (heads from the relative-attention table, standard buckets/distance). */
export function inferT5Config(w: WeightSource): T5EncoderConfig {
  const table = 'encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight';
  if (!w.has(table)) throw new ModelFileError(table, 'missing: not a T5 encoder');
  const [buckets, heads] = w.shape(table) as [number, number];
  const embed = w.has('encoder.embed_tokens.weight') ? 'encoder.embed_tokens.weight' : 'shared.weight';
  let layers = 0;
  for (const n of w.names()) {
    const m = /^encoder\.block\.(\d+)\./.exec(n);
    if (m) layers = Math.max(layers, Number(m[1]) + 1);
  }
  return {
    d_model: w.shape(embed)[1]!,
    d_kv: w.shape('encoder.block.0.layer.0.SelfAttention.q.weight')[0]! / heads,
    num_heads: heads,
    num_layers: layers,
    relative_attention_num_buckets: buckets,
    relative_attention_max_distance: 128,
    layer_norm_epsilon: 1e-6,
    feed_forward_proj: w.has('encoder.block.0.layer.1.DenseReluDense.wi_0.weight') ? 'gated-gelu' : 'relu',
  };
}

function componentFiles(dir: string, open: Opener, base: string): TensorFile[] {
  return open(dir, base);
}

/** A CLIP text encoder folder (config.json + weights), checked against its weights. */
function clipFolder(dir: string, component: TextEncoderComponent, openclip: boolean, open: Opener, warnings: string[]): FlowTextEncoderPart {
  const cdir = join(dir, component);
  const config = { ...CLIP_TEXT_DEFAULTS, ...readJson(join(cdir, 'config.json')) } as ClipTextConfig;
  const weights = storedWeights(cdir, componentFiles(cdir, open, 'model'));
  const bad = structuralMismatches(config as unknown as ConfigRecord, inferClipTextConfig(weights, openclip).config as unknown as ConfigRecord, CLIP_STRUCTURE);
  if (bad.length) warnings.push(`${component}: config.json disagrees with its weights on ${bad.join(', ')}`);
  return { component, config, weights };
}

function t5Folder(dir: string, open: Opener): { config: T5EncoderConfig; weights: WeightSource } {
  const weights = storedWeights(dir, componentFiles(dir, open, 'model'));
  const cfgFile = join(dir, 'config.json');
  const config = existsSync(cfgFile) ? ({ ...inferT5Config(weights), ...readJson(cfgFile) } as T5EncoderConfig) : inferT5Config(weights);
  return { config, weights };
}

function vaeFolder(dir: string, family: FlowFamily, open: Opener, warnings: string[]): { vae: WeightSource; vaeConfig: VaeConfig } {
  const vae = storedWeights(dir, componentFiles(dir, open, 'diffusion_pytorch_model'));
  const vaeConfig = { ...VAE_DEFAULTS, ...readJson(join(dir, 'config.json')) } as VaeConfig;
  const bad = structuralMismatches(vaeConfig as ConfigRecord, inferVaeConfig(vae, family).config as ConfigRecord, VAE_STRUCTURE);
  if (bad.length) warnings.push(`vae: config.json disagrees with its weights on ${bad.join(', ')}`);
  return { vae, vaeConfig: withLatentScale(vaeConfig, family) };
}

/** The family's latent scale and shift unless the config gives its own (diffusers' FLUX.1 and SD3 configs do). */
function withLatentScale(config: VaeConfig, family: FlowFamily): VaeConfig {
  const space = family.latentSpace;
  if (config.latent_channels !== space.channels) {
    throw new ModelFileError('vae', `has ${config.latent_channels} latent channels; a ${family.label} model needs its ${space.channels}-channel VAE`);
  }
  return {
    ...config,
    scaling_factor:
      typeof config.scaling_factor === 'number' && config.scaling_factor !== VAE_DEFAULTS.scaling_factor ? config.scaling_factor : space.scalingFactor,
    shift_factor: typeof config.shift_factor === 'number' ? config.shift_factor : (space.shiftFactor ?? 0),
  };
}

type Opener = (dir: string, base: string) => TensorFile[];

/** A diffusers FluxPipeline / StableDiffusion3Pipeline folder. */
export function loadFlowFolder(dir: string, open: Opener): LoadedFlowParts {
  const warnings: string[] = [];
  const tdir = join(dir, 'transformer');
  const tconfig = existsSync(join(tdir, 'config.json')) ? readJson(join(tdir, 'config.json')) : {};
  const axes = Array.isArray(tconfig.axes_dims_rope) ? (tconfig.axes_dims_rope as number[]) : undefined;
  const { family, weights, transformer } = identifyTransformer(tdir, transformerTensors(tdir, componentFiles(tdir, open, 'diffusion_pytorch_model')), axes);
  const textEncoders = family.textEncoders.map((spec) => {
    if (!existsSync(join(dir, spec.component))) throw new ModelFileError(dir, `no ${spec.component} folder (a ${family.label} model needs one)`);
    return clipFolder(dir, spec.component, spec.openclip, open, warnings);
  });
  const ownTokenizerDirs = family.textEncoders.map((spec) => {
    const tok = join(dir, spec.component === 'text_encoder' ? 'tokenizer' : 'tokenizer_2');
    return existsSync(join(tok, 'vocab.json')) ? tok : undefined;
  });
  const t5Dir = join(dir, family.flow.t5.component);
  const t5 = existsSync(t5Dir) ? t5Folder(t5Dir, open) : undefined;
  if (!t5 && family.flow.transformer === 'flux') throw new ModelFileError(dir, `no ${family.flow.t5.component} folder (FLUX.1 needs its T5 encoder)`);
  const { vae, vaeConfig } = vaeFolder(join(dir, 'vae'), family, open, warnings);
  const hasGuidance = transformer.kind === 'flux' && transformer.config.guidanceEmbed;
  return {
    family,
    transformer: weights,
    vae,
    vaeConfig,
    textEncoders,
    ownTokenizerDirs,
    flow: {
      transformer,
      t5,
      t5TokenizerDirs: [join(dir, family.flow.t5.tokenizerFolder)],
      schedule: flowSchedule(join(dir, 'scheduler', 'scheduler_config.json'), family, hasGuidance),
    },
    warnings,
  };
}

/**
 * A flow model from a single file: everything it holds, the rest from `companion` (a diffusers folder with the missing
 * text encoder and vae folders) or, for the VAE, `separateVae` (checked by the caller's replaceVae).
 */
export function loadFlowSingleFile(path: string, file: TensorFile, companion: string | undefined, open: Opener): LoadedFlowParts {
  const warnings: string[] = [];
  const keys = file.names();
  const has = (prefix: string) => keys.some((k) => k.startsWith(prefix));
  const transformerSource = transformerTensors(path, [file]);
  const prefixed = has(DIFFUSION_MODEL_PREFIX);
  // Only the transformer's own names: an all-in-one file also holds encoders and the VAE.
  const transformerOnly = prefixed ? transformerSource : storedWeights(path, [file]);
  // FLUX.1's RoPE axes are known; another head width needs the companion's transformer/config.json (axes_dims_rope).
  const companionConfig = companion ? join(companion, 'transformer', 'config.json') : undefined;
  const axesValue = companionConfig && existsSync(companionConfig) ? readJson(companionConfig).axes_dims_rope : undefined;
  const { family, weights, transformer } = identifyTransformer(path, transformerOnly, Array.isArray(axesValue) ? (axesValue as number[]) : undefined);
  const missing = (what: string) =>
    new ModelFileError(
      path,
      `holds no ${what}: give a companion diffusers folder with it (the model's tokenizer folder / --tokenizer) or use the diffusers folder`,
    );

  const textEncoders = family.textEncoders.map((spec): FlowTextEncoderPart => {
    if (has(spec.checkpoint.prefix)) {
      const w = new MappedWeights(`${path} (${spec.component})`, spec.checkpoint.rename(file, spec.checkpoint.prefix));
      return { component: spec.component, config: inferClipTextConfig(w, spec.openclip).config, weights: w };
    }
    if (companion && existsSync(join(companion, spec.component))) return clipFolder(companion, spec.component, spec.openclip, open, warnings);
    throw missing(`${spec.component} (${spec.tokenizerRole})`);
  });

  const t5Prefix = family.flow.t5.checkpointPrefixes.find((p) => has(`${p}encoder.block.0.`));
  let t5: LoadedFlowParts['flow']['t5'];
  if (t5Prefix) {
    const w = storedWeights(`${path} (t5)`, [file], t5Prefix);
    t5 = { config: inferT5Config(w), weights: w };
  } else if (companion && existsSync(join(companion, family.flow.t5.component))) t5 = t5Folder(join(companion, family.flow.t5.component), open);
  else if (family.flow.transformer === 'flux') throw missing(`T5 encoder (${family.flow.t5.component})`);

  let vae: WeightSource;
  let vaeConfig: VaeConfig;
  const vaePrefix = family.checkpoint.vaePrefix;
  if (has(`${vaePrefix}decoder.`)) {
    const ldm = keys.some((k) => k.startsWith(`${vaePrefix}decoder.up.`));
    vae = new MappedWeights(`${path} (vae)`, ldm ? mapLdmVae(file, vaePrefix) : mapDiffusersVae(file, vaePrefix));
    vaeConfig = withLatentScale(inferVaeConfig(vae, family).config, family);
  } else if (companion && existsSync(join(companion, 'vae'))) ({ vae, vaeConfig } = vaeFolder(join(companion, 'vae'), family, open, warnings));
  else {
    // No VAE here: one chosen with the request (ModelRef.vae, a view of the loaded model) takes its place; without one
    // the pipeline refuses before any work (flow-generate.ts). This stands for its shape until then.
    vae = new MappedWeights(`${path} (no vae)`, new Map());
    vaeConfig = {
      ...VAE_DEFAULTS,
      latent_channels: family.latentSpace.channels,
      scaling_factor: family.latentSpace.scalingFactor,
      shift_factor: family.latentSpace.shiftFactor ?? 0,
    };
  }

  const hasGuidance = transformer.kind === 'flux' && transformer.config.guidanceEmbed;
  return {
    family,
    transformer: weights,
    vae,
    vaeConfig,
    textEncoders,
    ownTokenizerDirs: [],
    flow: {
      transformer,
      t5,
      t5TokenizerDirs: companion ? [join(companion, family.flow.t5.tokenizerFolder), companion] : [],
      // From the transformer, not the companion's scheduler/: a schnell file beside FLUX.1-dev's encoders (they are the
      // same) must not take dev's shifted schedule.
      schedule: family.flow.defaultSchedule(hasGuidance),
    },
    warnings,
  };
}

/** The T5 tokenizer of a flow model: tokenizer.json, else SentencePiece's spiece.model, in the first folder with one. */
export function findT5Tokenizer(flow: FlowModelParts, label: string): string {
  for (const dir of flow.t5TokenizerDirs) {
    for (const name of ['tokenizer.json', 'spiece.model']) {
      const f = join(dir, name);
      if (existsSync(f)) return f;
    }
  }
  const where = flow.t5TokenizerDirs.length ? flow.t5TokenizerDirs.join(' or ') : 'a companion folder (--tokenizer)';
  throw new ModelFileError(label, `no T5 tokenizer: expected tokenizer.json or spiece.model in ${where}`);
}

/** The model's name from its path (file stem or folder name). */
export function flowModelName(path: string): string {
  return basename(path.replace(/[\\/]+$/, '')).replace(/\.(safetensors|ckpt|pt|pth|bin|gguf)$/i, '');
}

/** The flow family ('flux' / 'sd3') a single file's keys show, or undefined (not a file, or not a flow model). */
export function flowFamilyOfFile(path: string): string | undefined {
  try {
    if (!statSync(path).isFile()) return undefined;
    const names = openTensorFile(path).names();
    const set = new Set(names);
    const family = detectCheckpointFamily({ hasPrefix: (p) => names.some((k) => k.startsWith(p)), has: (n) => set.has(n) });
    return family?.kind === 'flow' ? family.name : undefined;
  } catch {
    return undefined;
  }
}
