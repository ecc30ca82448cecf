// One model family = one definition: how to recognise its files, which text encoders and tokenizers it has,
// how a prompt becomes conditioning, its latent space, its defaults, and how its diffusion network is fed.
// The rest of the engine asks the family object and never branches on a family's name (the shape of
// stable-diffusion.cpp's model runners: one interface, one file per family).
import type { ClipTextOptions } from '../nets/clip-text.ts';
import type { UnetBuildOptions } from '../nets/unet.ts';
import type { ClipTokenizer } from '../prompt/index.ts';
import type { Feed, Session } from '../runtime.ts';
import type { Denoiser, DenoiserOptions, ModelFn, ModelSchedule } from '../samplers/index.ts';
import type { Tensor } from '../tensor.ts';
import type { TensorFile } from '../weights/tensor-file.ts';
import type { Recipe } from '../weights/sources.ts';
import type { TokenizerRole } from '../weights/tokenizers.ts';
import type { FlowConventions } from './flow-types.ts';
import type { ClipTextConfig, SchedulerConfig, UnetConfig, VaeConfig } from '../weights/types.ts';

/** The registered families (families/index.ts); a new family adds its name here and its file beside this one. */
export type FamilyName = 'sd1' | 'sd2' | 'sdxl' | 'sdxl-refiner' | 'flux' | 'sd3';

/** What a UNet predicts (the discrete-time families). */
export type Prediction = 'epsilon' | 'v_prediction';

/** What a model's network predicts: a UNet's eps/v, or a flow transformer's velocity (Flux, SD3). */
export type ModelPrediction = Prediction | 'flow';

/** The key names of a single-file checkpoint, for detection. */
export interface CheckpointKeys {
  hasPrefix(prefix: string): boolean;
  has(name: string): boolean;
}

/** What a diffusers folder shows before its family is known. */
export interface FolderFacts {
  /** Text-encoder components present (model_index.json entry and folder). */
  textEncoders: ReadonlySet<TextEncoderComponent>;
  unetConfig: UnetConfig;
  /** config.json of each present text encoder. */
  textEncoderConfigs: Partial<Record<TextEncoderComponent, ClipTextConfig>>;
}

export type TextEncoderComponent = 'text_encoder' | 'text_encoder_2';

/** Where a single-file checkpoint keeps a text encoder, and how its keys become transformers' names. */
export interface CheckpointTextEncoder {
  prefix: string;
  /** The weights under `prefix`, renamed (weights/ldm-keys.ts). */
  rename(file: TensorFile, prefix: string): Map<string, Recipe>;
}

export interface TextEncoderSpec {
  /** The diffusers component name (and tokenizer/ or tokenizer_2/ beside it). */
  component: TextEncoderComponent;
  tokenizerRole: TokenizerRole;
  /** OpenCLIP-trained (gelu) rather than OpenAI CLIP (quick_gelu): the activation weights cannot tell. */
  openclip: boolean;
  checkpoint: CheckpointTextEncoder;
}

/** [latent channel][R, G, B] coefficients of A1111's "Approx cheap" preview; the result is about [-1, 1]. */
export type PreviewCoefficients = readonly (readonly [number, number, number])[];

/** A VAE latent space; families with the same VAE share one (SD1 and SD2; SDXL and its refiner). */
export interface LatentSpace {
  name: string;
  channels: number;
  /** The VAE's scaling_factor when a checkpoint has no config to say it. */
  scalingFactor: number;
  /** Flow VAEs (Flux, SD3): network latents = scalingFactor * (vae latents - shiftFactor); 0 or absent elsewhere. */
  shiftFactor?: number;
  previewCoefficients: PreviewCoefficients;
}

/** One prompt's conditioning. */
export interface Conditioning {
  /** [1, tokens, dim] */
  hidden: Tensor;
  /** [1, dim] pooled text embedding, for families whose network takes one (SDXL). */
  pooled?: Tensor;
}

/** A loaded model's text encoders, in the order of ModelFamily.textEncoders. */
export interface TextEncoders {
  readonly textEncoderCount: number;
  tokenizer(index: number): ClipTokenizer;
  textEncoder(index: number, opts: ClipTextOptions): Promise<Session>;
}

export interface ConditioningOptions {
  /** A1111 clip skip (1 = last layer). */
  clipSkip: number;
  /** The request field the prompt came from, for error messages. */
  field: string;
}

export interface ConditioningScheme {
  encode(encoders: TextEncoders, prompt: string, opts: ConditioningOptions): Promise<Conditioning>;
  /** An empty negative prompt is zeros rather than the encoding of '' (diffusers' force_zeros_for_empty_prompt). */
  zeroEmptyNegative: boolean;
}

/** Conditioning rows of one network batch (already gathered from the prompt batch). */
export interface ConditionRows {
  /** [rows, tokens, dim] */
  hidden: Tensor;
  /** [rows, dim] */
  pooled?: Tensor;
  /** Per row: the unconditional (negative) half of classifier-free guidance. */
  negative: boolean[];
}

/** What the network may need beyond x, t and the prompt: the generation's pixel size. */
export interface DiffusionExtras {
  width: number;
  height: number;
}

/** How the diffusion network is fed: stable-diffusion.cpp's compute(DiffusionParams). */
export interface DiffusionFeeds {
  /** Inputs that stay the same at every step for these rows (computed once per batch). */
  conditionFeeds(rows: ConditionRows, extras: DiffusionExtras): Record<string, Feed>;
  /** All inputs of one evaluation: x already scaled for the network, its timestep and sigma. */
  stepFeeds(x: Tensor, at: { timestep: number; sigma: number }, condition: Record<string, Feed>): Record<string, Feed>;
  /** The output holding the prediction. */
  output: string;
}

/** Family conventions for the UNet: what single-file checkpoints cannot say, and graph build options. */
export interface UnetConventions {
  /** SD1: a fixed number of heads at every level; SD2/SDXL: heads of a fixed width. */
  attentionHeads: { count: number } | { width: number };
  /** Added-condition ids beside the pooled embedding (SDXL 6 sizes/crop; refiner 5 with aesthetic score). */
  addedTimeIds?: number;
  upcastAttention(prediction: Prediction): boolean;
  /** Native latent size (UNet sample_size) when no config says. */
  sampleSize(prediction: Prediction): number;
  buildOptions: UnetBuildOptions;
}

/** What every family says: its name, how its files look, its CLIP text encoders, VAE and latent space. */
export interface FamilyBase {
  name: FamilyName;
  label: string;
  /** Recognises a single-file checkpoint by its key names. */
  matchesCheckpoint(keys: CheckpointKeys): boolean;
  /** Key prefixes of the diffusion network and VAE in single-file checkpoints. */
  checkpoint: { unetPrefix: string; vaePrefix: string };
  /**
   * How a LoRA file made for this family says so: kohya `ss_base_model_version` prefixes, a metadata flag
   * (`ss_v2: "True"`), or (no metadata) key names only its LoRAs have.
   */
  lora?: {
    baseModelVersions: string[];
    metadataFlag?: [string, string];
    keyPattern?: RegExp;
    /** This family's keyPattern singles it out among LoRAs that also match these families' patterns (refiner vs SDXL). */
    narrows?: string[];
  };
  /** The CLIP text encoders (a flow family's T5 is described in its `flow` part). */
  textEncoders: readonly TextEncoderSpec[];
  vae: {
    /** VAE sample_size (pixels) when no config says. */
    sampleSize: number;
    /** Keep the VAE in fp32 on every device (the SDXL VAE overflows in fp16). */
    needsFp32(config: VaeConfig): boolean;
  };
  latentSpace: LatentSpace;
}

/** A discrete-time UNet family (SD1, SD2, SDXL, the refiner). */
export interface UnetFamily extends FamilyBase {
  kind?: 'unet';
  /** Recognises a diffusers folder by its components and configs. */
  matchesFolder(facts: FolderFacts): boolean;
  /** Prediction of a single-file checkpoint, which does not record it. */
  defaultPrediction(keys: CheckpointKeys): Prediction;
  unet: UnetConventions;
  conditioning: ConditioningScheme;
  diffusion: DiffusionFeeds;
  /** The training noise schedule as sigmas over timesteps ('a1111': as LDM/SGM compute it, see ModelScheduleConfig). */
  modelSchedule(config: SchedulerConfig, flavour?: 'diffusers' | 'a1111'): ModelSchedule;
  /** The network as a k-diffusion denoiser D(x, sigma) -> x0. */
  denoiser(net: ModelFn, opts: DenoiserOptions): Denoiser;
  /** Which published tuned schedule tables fit (Align Your Steps has SD1 and SDXL tables). */
  scheduleTables: 'sd1' | 'sdxl';
}

/** A rectified-flow transformer family (Flux.1, SD3): see families/flow-types.ts. */
export interface FlowFamily extends FamilyBase {
  kind: 'flow';
  flow: FlowConventions;
}

export type ModelFamily = UnetFamily | FlowFamily;

/** The family as a UNet family; flow families never reach UNet code (the pipeline branches on `kind` first). */
export function unetFamily(f: ModelFamily): UnetFamily {
  if (f.kind === 'flow') throw new Error(`internal error: ${f.label} has no UNet`);
  return f;
}
