// loadModel: turns a ModelRef (diffusers folder or A1111-style single .safetensors) into configs + lazily-read
// weights under diffusers names, so the network builders never see where or how the weights were stored.
//
// Single-file checkpoints carry no configs, so they are inferred from the weights (see configs.ts). A few
// fields are not in the weights at all (text-encoder head count and activation, norm groups of toy models);
// when ModelRef.tokenizerDir (or options.configDir) is a diffusers folder whose component configs agree with
// the weights' structure, those configs are used as they are. Otherwise family conventions fill the gaps and
// `warnings` says which fields were guessed.
//
// Prediction type: single files do not record it. SD2 defaults to v_prediction (the 768-px SD2.x models;
// pass options.prediction = 'epsilon' for SD2-base 512 models). A1111 instead probes with a test forward pass.
// A checkpoint holding a `v_pred` marker tensor (some SDXL v-prediction fine-tunes) is read as v_prediction.
import { existsSync, readFileSync, statSync } from 'node:fs';
import { basename, join } from 'node:path';
import { ModelFileError, type ModelRef } from '../api.ts';
import {
  CLIP_STRUCTURE,
  CLIP_TEXT_DEFAULTS,
  UNET_DEFAULTS,
  UNET_STRUCTURE,
  VAE_DEFAULTS,
  VAE_STRUCTURE,
  inferClipTextConfig,
  inferUnetConfig,
  inferVaeConfig,
  standardSchedulerConfig,
  structuralMismatches,
  withSchedulerDefaults,
  type Prediction,
} from './configs.ts';
import { FAMILIES, checkpointLayouts, detectCheckpointFamily, detectFolderFamily, getFamily } from '../families/index.ts';
import type { FamilyName, FolderFacts, ModelPrediction, TextEncoderComponent } from '../families/types.ts';
import { findT5Tokenizer, flowModelName, isFlowFolder, loadFlowFolder, loadFlowSingleFile, type FlowModelParts, type LoadedFlowParts } from './flow-model.ts';
import { fileSha256, filesIdentity } from './hash.ts';
import { mapDiffusersVae, mapLdmUnet, mapLdmVae } from './ldm-keys.ts';
import { openTensorFile, type TensorFile } from './tensor-file.ts';
import { MappedWeights, storedWeights } from './sources.ts';
import {
  cachedTokenizer,
  hasTokenizerFiles,
  hfHubCacheDir,
  STANDARD_TOKENIZERS,
  standardTokenizerDir,
  type HubFolder,
  type TokenizerLookupOptions,
  type TokenizerRole,
} from './tokenizers.ts';
import type { ClipTextConfig, SchedulerConfig, UnetConfig, VaeConfig, WeightSource } from './types.ts';

export type { Prediction } from './configs.ts';
export type { FamilyName } from '../families/types.ts';

export interface TextEncoderPart {
  /** The diffusers component name: "text_encoder" (CLIP-L / SD2's OpenCLIP-H) or "text_encoder_2" (bigG). */
  component: TextEncoderComponent;
  tokenizerRole: TokenizerRole;
  config: ClipTextConfig;
  weights: WeightSource;
}

export interface LoadedModel {
  name: string;
  path: string;
  format: 'diffusers' | 'single-file';
  /** The family's name; getFamily() (families/index.ts) gives its definition. */
  family: FamilyName;
  /** eps / v for UNets; 'flow' for the flow transformers (Flux, SD3). */
  prediction: ModelPrediction;
  /** The UNet's config; absent for flow models (their transformer's config is in `flow`). */
  unetConfig?: UnetConfig;
  vaeConfig: VaeConfig;
  schedulerConfig: SchedulerConfig;
  /** The diffusion network's weights: the UNet, or a flow model's transformer (under BFL / original SD3 names). */
  unet: WeightSource;
  vae: WeightSource;
  /** SD1/SD2: [text_encoder]; SDXL: [CLIP-L, bigG with projection]; refiner: [bigG with projection]. */
  textEncoders: TextEncoderPart[];
  /** One folder (vocab.json + merges.txt, maybe special_tokens_map.json) per text encoder, same order. */
  tokenizerDirs: string[];
  /** Cheap, stable key for caches of built graphs: weight files' real paths, sizes, mtimes and the configs. */
  identity: string;
  /** A1111's short model hash (modelHashes: the checkpoint's sha256, or its UNet file's for folders). Streams and caches. */
  hash(): Promise<string>;
  /** Config fields that had to be guessed, and config/weight disagreements worth knowing about. */
  warnings: string[];
  /** Flux / SD3: the transformer's config, the T5 encoder and tokenizer, the flow schedule. */
  flow?: FlowModelParts;
}

/** A UNet model's config (UNet code never runs on a flow model: the pipeline branches on the family first). */
export function requireUnetConfig(model: LoadedModel): UnetConfig {
  if (!model.unetConfig) throw new Error(`internal error: ${model.name} (${model.family}) has no UNet`);
  return model.unetConfig;
}

export interface LoadOptions extends TokenizerLookupOptions {
  /** Overrides the prediction type from the folder's scheduler config or the single-file default. */
  prediction?: Prediction;
  /** Diffusers folder whose component configs to use for a single file; default ModelRef.tokenizerDir. */
  configDir?: string;
  /** Where A1111 hashes are cached; null disables the disk cache. */
  hashCacheFile?: string | null;
  /** Only inspect the model (family, configs): leave tokenizerDirs empty instead of finding or downloading them. */
  skipTokenizers?: boolean;
}

export async function loadModel(ref: ModelRef, opts: LoadOptions = {}): Promise<LoadedModel> {
  if (!existsSync(ref.path)) throw new ModelFileError(ref.path, 'model not found (expected a diffusers folder or a .safetensors file)');
  const base = statSync(ref.path).isDirectory() ? loadFolder(ref.path, opts) : loadSingleFile(ref.path, ref, opts);
  if (ref.vae) replaceVae(base, ref.vae);
  if (base.flow && !opts.skipTokenizers) base.flow.t5TokenizerFile = findT5Tokenizer(base.flow, ref.path);

  const tokenizerDirs = opts.skipTokenizers ? [] : await resolveTokenizers(base, ref, opts);
  const t5Weights = base.flow?.t5 ? [base.flow.t5.weights] : [];
  const weightFiles = [...new Set([base.unet, base.vae, ...base.textEncoders.map((t) => t.weights), ...t5Weights].flatMap((w) => sourceFiles(w)))];
  const flowKey = base.flow ? [[base.flow.transformer, base.flow.t5?.config ?? null]] : [];
  const identity = filesIdentity(
    weightFiles,
    JSON.stringify([base.family, base.prediction, base.unetConfig, base.vaeConfig, base.textEncoders.map((t) => t.config), ...flowKey]),
  );
  const { ownTokenizerDirs: _own, ...model } = base;
  return {
    ...model,
    tokenizerDirs,
    identity,
    hash: async () => (await modelHashes(ref.path, opts.hashCacheFile)).shortHash,
  };
}

interface PartialModel extends Omit<LoadedModel, 'tokenizerDirs' | 'identity' | 'hash'> {
  /** A diffusers folder's own tokenizer folders (tokenizer/, tokenizer_2/), when it has them. */
  ownTokenizerDirs: (string | undefined)[];
}

function sourceFiles(w: WeightSource): string[] {
  return w instanceof MappedWeights ? w.files().map((f) => f.file) : [];
}

// ---------------------------------------------------------------- single files

function loadSingleFile(path: string, ref: ModelRef, opts: LoadOptions): PartialModel {
  // .safetensors, or a pickled .ckpt/.pt read by the restricted (no-code) reader: chosen by the file's first bytes.
  const file = openTensorFile(path);
  const keyNames = file.names();
  const keys = { hasPrefix: (p: string) => keyNames.some((k) => k.startsWith(p)), has: (n: string) => file.has(n) };
  const family = detectCheckpointFamily(keys);
  if (family?.kind === 'flow') {
    const companion = opts.configDir ?? ref.tokenizerDir;
    return flowPartial(path, 'single-file', loadFlowSingleFile(path, file, companion, openComponentFiles));
  }
  const unetPrefixes = family ? [family.checkpoint.unetPrefix] : [...new Set(FAMILIES.map((f) => f.checkpoint.unetPrefix))];
  if (!unetPrefixes.some((p) => keys.hasPrefix(p))) {
    throw new ModelFileError(
      path,
      `no UNet weights (${unetPrefixes.map((p) => `${p}*`).join(' or ')}): this is not a full Stable Diffusion checkpoint (a LoRA, VAE or embedding?)`,
    );
  }
  if (!family) throw new ModelFileError(path, `unknown text encoder layout: expected ${checkpointLayouts()}`);
  const { unetPrefix, vaePrefix } = family.checkpoint;
  const prediction: Prediction = opts.prediction ?? family.defaultPrediction(keys);
  const warnings: string[] = [];
  const companion = readCompanionConfigs(opts.configDir ?? ref.tokenizerDir);

  const encoders = family.textEncoders.map((spec) => ({ spec, map: spec.checkpoint.rename(file, spec.checkpoint.prefix) }));
  const textEncoders: TextEncoderPart[] = encoders.map(({ spec, map }) => {
    const weights = new MappedWeights(`${path} (${spec.component})`, map);
    const inferred = inferClipTextConfig(weights, spec.openclip);
    const config = chooseConfig(spec.component, inferred, companion[spec.component], CLIP_STRUCTURE, warnings);
    return { component: spec.component, tokenizerRole: spec.tokenizerRole, config, weights };
  });

  const unet = new MappedWeights(`${path} (unet)`, mapLdmUnet(file, unetPrefix));
  const pooled = textEncoders.find((t) => t.weights.has('text_projection.weight'));
  const unetInferred = inferUnetConfig(unet, {
    family,
    prediction,
    pooledTextDim: pooled ? pooled.weights.shape('text_projection.weight')[0] : undefined,
  });
  const unetConfig = chooseConfig('unet', unetInferred, companion.unet, UNET_STRUCTURE, warnings);

  if (!keys.hasPrefix(vaePrefix)) {
    throw new ModelFileError(path, `no VAE weights (${vaePrefix}*) in this checkpoint; pass a separate VAE file or folder`);
  }
  const vae = new MappedWeights(`${path} (vae)`, mapLdmVae(file, vaePrefix));
  const vaeConfig = chooseConfig('vae', inferVaeConfig(vae, family), companion.vae, VAE_STRUCTURE, warnings);

  return {
    name: basename(path).replace(/\.(safetensors|ckpt|pt|pth|bin)$/i, ''),
    path,
    format: 'single-file',
    family: family.name,
    prediction,
    unetConfig,
    vaeConfig,
    schedulerConfig: standardSchedulerConfig(prediction),
    unet,
    vae,
    textEncoders,
    warnings,
    ownTokenizerDirs: [],
  };
}

type ConfigRecord = Record<string, unknown>;

function readCompanionConfigs(dir: string | undefined): Record<string, ConfigRecord | undefined> {
  const out: Record<string, ConfigRecord | undefined> = {};
  if (!dir) return out;
  for (const component of ['unet', 'vae', 'text_encoder', 'text_encoder_2']) {
    const f = join(dir, component, 'config.json');
    if (existsSync(f)) out[component] = readJson(f);
  }
  return out;
}

/** The companion folder's config when its structure matches the weights, else the inferred one. */
function chooseConfig<T extends object>(
  component: string,
  inferred: { config: T; guesses: string[] },
  companion: ConfigRecord | undefined,
  structure: readonly string[],
  warnings: string[],
): T {
  if (companion) {
    const full = { ...(inferred.config as ConfigRecord), ...companion };
    const bad = structuralMismatches(full, inferred.config as ConfigRecord, structure);
    if (bad.length === 0) return full as T;
    warnings.push(`${component}: ignored the companion config.json, it disagrees with the weights on ${bad.join(', ')}`);
  }
  for (const g of inferred.guesses) warnings.push(`${component}: guessed ${g}`);
  return inferred.config;
}

// ---------------------------------------------------------------- diffusers folders

function readJson(file: string): ConfigRecord {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new ModelFileError(file, `cannot read: ${(e as Error).message}`);
  }
  try {
    const v = JSON.parse(text) as unknown;
    if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new Error('not a JSON object');
    return v as ConfigRecord;
  } catch (e) {
    throw new ModelFileError(file, `invalid JSON: ${(e as Error).message}`);
  }
}

/**
 * The files of a component's weights, safetensors first: `<base>.safetensors`, its fp16 variant, or a sharded set
 * listed in `<base>[.fp16].safetensors.index.json` (shards in index order). Failing those, PyTorch pickles (older
 * diffusers/transformers saves): `<stem>.bin`, `<stem>.fp16.bin` or a sharded `<stem>[.fp16].bin.index.json`,
 * where the stem is `pytorch_model` for transformers' `model` (text encoders) and the base itself otherwise. They
 * are read by the restricted reader (openTensorFile), never by a plain unpickle.
 */
export function componentWeightPaths(dir: string, base: string): string[] {
  const pickledStem = base === 'model' ? 'pytorch_model' : base;
  const candidates = [`${base}.safetensors`, `${base}.fp16.safetensors`, `${pickledStem}.bin`, `${pickledStem}.fp16.bin`];
  for (const name of candidates) {
    const f = join(dir, name);
    if (existsSync(f)) return [f];
    const index = `${f}.index.json`;
    if (existsSync(index)) return shardPaths(dir, index);
  }
  throw new ModelFileError(
    dir,
    `no weights: expected ${base}.safetensors (or ${base}.fp16.safetensors, or a sharded .index.json; or PyTorch's ${pickledStem}.bin)`,
  );
}

/** Most shards one index may list (the largest real checkpoints use a few dozen). */
const MAX_SHARDS = 1000;

/** The distinct shard files an `*.index.json` weight_map names, in index order; each must be a file in `dir`. */
function shardPaths(dir: string, index: string): string[] {
  const weightMap = readJson(index).weight_map;
  if (!weightMap || typeof weightMap !== 'object' || Array.isArray(weightMap)) throw new ModelFileError(index, 'has no weight_map');
  const shards = [...new Set(Object.values(weightMap as Record<string, unknown>))];
  if (shards.length > MAX_SHARDS) throw new ModelFileError(index, `lists ${shards.length} shard files, more than the ${MAX_SHARDS} allowed`);
  return shards.map((shard) => {
    // A shard sits beside its index: a path elsewhere would read files the folder does not own.
    if (typeof shard !== 'string' || !/^[^/\\]+$/.test(shard) || shard === '.' || shard === '..') {
      throw new ModelFileError(index, `weight_map names ${JSON.stringify(shard)}, expected a file name in the same folder`);
    }
    return join(dir, shard);
  });
}

/** Opens a component's weights (see componentWeightPaths): safetensors, or pickles through the restricted reader. */
export function openComponentFiles(dir: string, base: string): TensorFile[] {
  return componentWeightPaths(dir, base).map((f) => openTensorFile(f));
}

/**
 * The file whose sha256 is a model's A1111 hash: the checkpoint itself, or the UNet weights a diffusers folder
 * is loaded from (its first shard). Only file names are read.
 */
export function modelHashFile(path: string): string {
  if (!existsSync(path)) throw new ModelFileError(path, 'model not found (expected a diffusers folder or a .safetensors file)');
  // A flow model's (Flux, SD3) diffusion network is its transformer/.
  const network = statSync(path).isDirectory() && isFlowFolder(path) ? 'transformer' : 'unet';
  return statSync(path).isDirectory() ? componentWeightPaths(join(path, network), 'diffusion_pytorch_model')[0]! : path;
}

/** A model's full sha256 and A1111's short "Model hash" (its first 10 hex digits): what infotext and /sd-models show. */
export async function modelHashes(path: string, cacheFile?: string | null): Promise<{ sha256: string; shortHash: string }> {
  const sha256 = await fileSha256(modelHashFile(path), cacheFile);
  return { sha256, shortHash: sha256.slice(0, 10) };
}

function componentPresent(index: ConfigRecord, dir: string, component: string): boolean {
  const entry = index[component];
  return Array.isArray(entry) && entry[0] !== null && existsSync(join(dir, component));
}

/** A flow model's parts as the common model shape. */
function flowPartial(path: string, format: 'diffusers' | 'single-file', p: LoadedFlowParts): PartialModel {
  return {
    name: flowModelName(path),
    path,
    format,
    family: p.family.name,
    prediction: 'flow',
    vaeConfig: p.vaeConfig,
    // Not used by the flow pipeline (its schedule is flow.schedule); kept for the common shape.
    schedulerConfig: standardSchedulerConfig('epsilon'),
    unet: p.transformer,
    vae: p.vae,
    textEncoders: p.textEncoders.map((t, i) => ({ ...t, tokenizerRole: p.family.textEncoders[i]!.tokenizerRole })),
    warnings: p.warnings,
    ownTokenizerDirs: p.ownTokenizerDirs,
    flow: p.flow,
  };
}

function loadFolder(dir: string, opts: LoadOptions): PartialModel {
  const indexFile = join(dir, 'model_index.json');
  if (!existsSync(indexFile)) {
    throw new ModelFileError(dir, 'not a diffusers model folder: model_index.json is missing');
  }
  if (isFlowFolder(dir)) return flowPartial(dir, 'diffusers', loadFlowFolder(dir, openComponentFiles));
  const index = readJson(indexFile);
  const warnings: string[] = [];
  const check = (component: string, config: ConfigRecord, inferred: ConfigRecord, structure: readonly string[]) => {
    const bad = structuralMismatches(config, inferred, structure);
    if (bad.length) warnings.push(`${component}: config.json disagrees with its weights on ${bad.join(', ')}`);
  };

  const present = (['text_encoder', 'text_encoder_2'] as const).filter((c) => componentPresent(index, dir, c));
  if (present.length === 0) throw new ModelFileError(dir, 'no text_encoder or text_encoder_2 folder');
  const textEncoderConfigs: FolderFacts['textEncoderConfigs'] = {};
  for (const component of present)
    textEncoderConfigs[component] = { ...CLIP_TEXT_DEFAULTS, ...readJson(join(dir, component, 'config.json')) } as ClipTextConfig;

  const unetDir = join(dir, 'unet');
  const unetFiles = openComponentFiles(unetDir, 'diffusion_pytorch_model');
  const unet = storedWeights(unetDir, unetFiles);
  const unetConfig = { ...UNET_DEFAULTS, ...readJson(join(unetDir, 'config.json')) } as UnetConfig;
  const vaeDir = join(dir, 'vae');
  const vae = storedWeights(vaeDir, openComponentFiles(vaeDir, 'diffusion_pytorch_model'));
  const vaeConfig = { ...VAE_DEFAULTS, ...readJson(join(vaeDir, 'config.json')) } as VaeConfig;

  const family = detectFolderFamily(dir, { textEncoders: new Set(present), unetConfig, textEncoderConfigs });
  const textEncoders: TextEncoderPart[] = [];
  const ownTokenizerDirs: (string | undefined)[] = [];
  for (const spec of family.textEncoders) {
    const config = textEncoderConfigs[spec.component];
    if (!config) throw new ModelFileError(dir, `no ${spec.component} folder (a ${family.label} model needs one)`);
    const cdir = join(dir, spec.component);
    const weights = storedWeights(`${cdir}`, openComponentFiles(cdir, 'model'));
    check(spec.component, config, inferClipTextConfig(weights, config.hidden_act === 'gelu').config as ConfigRecord, CLIP_STRUCTURE);
    textEncoders.push({ component: spec.component, tokenizerRole: spec.tokenizerRole, config, weights });
    const tok = join(dir, spec.component === 'text_encoder' ? 'tokenizer' : 'tokenizer_2');
    ownTokenizerDirs.push(hasTokenizerFiles(tok) ? tok : undefined);
  }

  const schedulerFile = join(dir, 'scheduler', 'scheduler_config.json');
  const rawScheduler = existsSync(schedulerFile) ? withSchedulerDefaults(readJson(schedulerFile)) : standardSchedulerConfig('epsilon');
  const prediction: Prediction = opts.prediction ?? (rawScheduler.prediction_type === 'v_prediction' ? 'v_prediction' : 'epsilon');
  if (!['epsilon', 'v_prediction'].includes(String(rawScheduler.prediction_type))) {
    warnings.push(`scheduler: prediction_type ${JSON.stringify(rawScheduler.prediction_type)} is not supported, using ${prediction}`);
  }
  const pooled = textEncoders.find((t) => t.weights.has('text_projection.weight'));
  check(
    'unet',
    unetConfig,
    inferUnetConfig(unet, {
      family,
      prediction,
      pooledTextDim: pooled?.weights.shape('text_projection.weight')[0],
    }).config,
    UNET_STRUCTURE,
  );
  check('vae', vaeConfig, inferVaeConfig(vae, family).config, VAE_STRUCTURE);

  return {
    name: basename(dir.replace(/[\\/]+$/, '')),
    path: dir,
    format: 'diffusers',
    family: family.name,
    prediction,
    unetConfig,
    vaeConfig,
    schedulerConfig: { ...rawScheduler, prediction_type: prediction },
    unet,
    vae,
    textEncoders,
    warnings,
    ownTokenizerDirs,
  };
}

// ---------------------------------------------------------------- separate VAE

/** Swaps in a VAE from a diffusers vae/ folder or a .safetensors file (diffusers or LDM layout). */
function replaceVae(model: PartialModel, vaePath: string): void {
  const loaded = loadVae(vaePath, model.family, model.vaeConfig);
  model.vae = loaded.weights;
  model.vaeConfig = loaded.config;
}

/** A separate VAE's weights and the config it runs with beside a model of `family` whose own VAE config is `base`. */
export interface SeparateVae {
  weights: MappedWeights;
  config: VaeConfig;
}

/**
 * Reads a VAE from a diffusers vae/ folder or a .safetensors file (diffusers or LDM layout). Throws ModelFileError
 * when it is not a VAE, or when its latent channels differ from the model's (a VAE of another model family).
 */
export function loadVae(vaePath: string, family: FamilyName, base: VaeConfig): SeparateVae {
  if (!existsSync(vaePath)) throw new ModelFileError(vaePath, 'VAE not found');
  let weights: MappedWeights;
  let folderConfig: ConfigRecord | undefined;
  if (statSync(vaePath).isDirectory()) {
    weights = storedWeights(vaePath, openComponentFiles(vaePath, 'diffusion_pytorch_model'));
    const cfg = join(vaePath, 'config.json');
    if (existsSync(cfg)) folderConfig = readJson(cfg);
    // Old diffusers VAE folders use query/key/value names; remap through the file-level mapper.
    const files = weights.files();
    if (files.length === 1 && files[0]!.names().some((k) => /\.attentions\.\d+\.(query|key|value|proj_attn)\./.test(k))) {
      weights = new MappedWeights(vaePath, mapDiffusersVae(files[0]!, ''));
    }
  } else {
    const file = openTensorFile(vaePath);
    const keys = file.names();
    const prefix = keys.some((k) => k.startsWith('first_stage_model.')) ? 'first_stage_model.' : keys.some((k) => k.startsWith('vae.')) ? 'vae.' : '';
    const inner = keys.filter((k) => k.startsWith(prefix)).map((k) => k.slice(prefix.length));
    if (inner.some((k) => k.startsWith('encoder.down.') || k.startsWith('decoder.up.'))) weights = new MappedWeights(vaePath, mapLdmVae(file, prefix));
    else if (inner.some((k) => k.startsWith('decoder.up_blocks.'))) weights = new MappedWeights(vaePath, mapDiffusersVae(file, prefix));
    else throw new ModelFileError(vaePath, 'not a VAE: no encoder/decoder weights in LDM (decoder.up.*) or diffusers (decoder.up_blocks.*) layout');
  }
  const inferred = inferVaeConfig(weights, getFamily(family)).config;
  if (inferred.latent_channels !== base.latent_channels) {
    throw new ModelFileError(
      vaePath,
      `this VAE has ${inferred.latent_channels} latent channels but the ${family} model uses ${base.latent_channels}: it belongs to another model family`,
    );
  }
  // Structure comes from the new weights; the latent scaling belongs to the diffusion model it is used with.
  const config = { ...base, ...(folderConfig ?? {}) } as VaeConfig;
  for (const k of VAE_STRUCTURE) (config as ConfigRecord)[k] = (inferred as ConfigRecord)[k];
  config.down_block_types = inferred.down_block_types;
  config.up_block_types = inferred.up_block_types;
  if (folderConfig && folderConfig.scaling_factor !== base.scaling_factor) {
    config.scaling_factor = base.scaling_factor;
  }
  return { weights, config };
}

// ---------------------------------------------------------------- tokenizers

/**
 * The standard tokenizers a model needs that are not in the HF cache (a single file without --tokenizer, a folder
 * missing its own), each with the Hub folder to fetch it from: the server and CLI download these before the model
 * loads (the engine itself never downloads). Reads only the model's headers.
 */
export function missingTokenizers(ref: ModelRef, opts: TokenizerLookupOptions = {}): Array<{ role: TokenizerRole } & HubFolder> {
  if (ref.tokenizerDir || !existsSync(ref.path)) return [];
  const base = statSync(ref.path).isDirectory() ? loadFolder(ref.path, opts) : loadSingleFile(ref.path, ref, opts);
  const cache = opts.hfCacheDir ?? hfHubCacheDir();
  const roles = new Set(base.textEncoders.filter((_, i) => !base.ownTokenizerDirs[i]).map((te) => te.tokenizerRole));
  return [...roles].filter((role) => !cachedTokenizer(role, cache)).map((role) => ({ role, ...STANDARD_TOKENIZERS[role][0]! }));
}

async function resolveTokenizers(model: PartialModel, ref: ModelRef, opts: LoadOptions): Promise<string[]> {
  const dirs: string[] = [];
  for (const [i, te] of model.textEncoders.entries()) {
    if (ref.tokenizerDir) {
      const sub = te.component === 'text_encoder' ? 'tokenizer' : 'tokenizer_2';
      // The refiner's only tokenizer may sit in tokenizer/ of a hand-made folder; a flat folder serves SD1/SD2.
      const candidates = [join(ref.tokenizerDir, sub), join(ref.tokenizerDir, 'tokenizer'), ref.tokenizerDir];
      const found = candidates.slice(0, model.textEncoders.length === 1 ? 3 : 1).find(hasTokenizerFiles);
      if (!found) {
        throw new ModelFileError(ref.tokenizerDir, `tokenizer folder has no ${sub}/vocab.json + ${sub}/merges.txt (needed for ${te.component})`);
      }
      dirs.push(found);
      continue;
    }
    const own = model.ownTokenizerDirs[i];
    dirs.push(own ?? (await standardTokenizerDir(te.tokenizerRole, opts)));
  }
  return dirs;
}
