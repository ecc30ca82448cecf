// The engine's public contract: what a pipeline takes and gives back. The server, queue and CLI only
// ever talk to the engine through these types, so they stay free of ONNX, tensors and samplers.

/** Where the networks run. `cpu` works everywhere; the others need onnxruntime-node's GPU binaries. */
export type Device = 'cpu' | 'cuda' | 'tensorrt' | 'webgpu';

/** Noise generator: `cpu` = PyTorch CPU torch.randn (mt19937), `philox` = CUDA torch.randn. */
export type RngSource = 'cpu' | 'philox';

/** Which model to run. `path` is a diffusers folder or a single .safetensors checkpoint. */
export interface ModelRef {
  path: string;
  /** Optional separate VAE (.safetensors file or diffusers vae/ folder). */
  vae?: string;
  /** Diffusers-style folder holding tokenizer/ (and tokenizer_2/ for SDXL), for single-file checkpoints. */
  tokenizerDir?: string;
}

/** An 8-bit image, interleaved channels, row-major. */
export interface RawImage {
  data: Uint8Array;
  width: number;
  height: number;
  channels: 3 | 4;
}

/**
 * One generation: prompts x imagesPerPrompt images. Features that add a stage or a denoise pass get their own
 * sub-object (init, refiner; later hires, mask, loras, control) rather than loose fields.
 */
/**
 * DeepCache-style step reuse: every `interval`-th UNet evaluation runs the whole network and keeps its deep
 * features; the evaluations between run only the shallow layers on them. `branch` (default 0, the fastest) is where
 * the UNet is cut, as DeepCache's cache_branch_id.
 */
export interface DeepCacheSettings {
  interval: number;
  branch?: number;
}

/** Step reuse: the largest interval accepted (DeepCache's published settings go up to 10 or so). */
export const MAX_DEEP_CACHE_INTERVAL = 10;

export interface GenerateRequest {
  model: ModelRef;
  /** One entry per prompt; the batch is prompts x imagesPerPrompt. */
  prompts: string[];
  /** One negative prompt for all, or one per prompt. */
  negativePrompt?: string | string[];
  imagesPerPrompt?: number;
  /** Image size in pixels; 0 = the model's native size. */
  width: number;
  height: number;
  steps: number;
  cfgScale: number;
  /**
   * FLUX.1 dev's distilled guidance (Forge's "Distilled CFG Scale"), fed to the transformer instead of a CFG batch;
   * default 3.5 (or cfgScale with guidanceFromCfg). Used by models whose transformer takes it, ignored by the others
   * (as Forge does with its default).
   */
  guidance?: number;
  /** diffusers-style callers: cfgScale is the distilled guidance on guidance-distilled models (FluxPipeline's guidance_scale). */
  guidanceFromCfg?: boolean;
  /** A1111 sampler name ("Euler a", "DPM++ 2M") or legacy combined name ("DPM++ 2M Karras"). */
  sampler: string;
  /** A1111 schedule name ("Automatic", "Karras", ...); "Automatic" when absent. */
  schedule?: string;
  /** Stochastic sampler settings; absent fields take the sampler's defaults. */
  samplerOptions?: SamplerSettings;
  /** Seed of the first image; image i uses seed + i. Must already be resolved (no -1) by the caller or engine. */
  seed?: number;
  /**
   * A1111 variation seed: the noise is blended towards this seed's by `strength`. Image i uses seed + i; with a
   * strength above 0 every image keeps `seed` and only the variation seed counts up. Absent: a random one, strength 0.
   */
  variation?: { seed: number; strength: number };
  /** A1111 "seed resize from": the noise is made at this size, then fitted to width x height. */
  seedResizeFrom?: { width: number; height: number };
  rng?: RngSource;
  /**
   * Whose numerical conventions sampling follows where the reference tools differ: 'diffusers' (default) or
   * 'a1111' (k-diffusion as A1111 drives it: LDM's float64 noise schedule, float32 Karras/exponential sigmas,
   * x = noise * sigma0, fractional timesteps, the discarded penultimate sigma of DPM2 / DPM++ 3M SDE, Brownian-tree
   * SDE noise, pixels truncated to 8 bits). A1111-style API surfaces ask for 'a1111'.
   */
  flavour?: SamplingFlavour;
  /**
   * Noise of DPM++ SDE / 2M SDE / 2M SDE Heun / 3M SDE: 'brownian' (A1111's Brownian tree, seeded per image) or
   * 'gaussian' (fresh draws from the image generators, as diffusers). Default: brownian with the 'a1111' flavour.
   */
  sdeNoise?: SdeNoise;
  /** A1111 "Restore faces": every decoded image is replaced by its face-restored version. */
  restoreFaces?: FaceRestoreSettings;
  /** A1111 clip skip: 1 = last layer, 2 = penultimate, ... */
  clipSkip?: number;
  /** img2img: start from this image. */
  init?: InitImage;
  /** SDXL refiner: takes over the denoising after a fraction of the steps. */
  refiner?: RefinerSettings;
  /** Seamless tiling: the image wraps around on these axes (every padded convolution pads circularly there). */
  tiling?: Tiling;
  /** Step reuse (DeepCache): faster, approximate; off when absent (docs/step-reuse.md). UNet models only. */
  deepCache?: DeepCacheSettings;
  /**
   * Final decode with a TAESD decoder instead of the VAE (the request's `vae: "taesd"`): decoder files by latent
   * space name ("sd", "sdxl"); the model's space must have one. Faster and rougher than the full VAE.
   */
  taesdDecode?: Partial<Record<string, string>>;
  /** LoRA / LyCORIS files merged into the base model, in order (see weights/lora/). */
  loras?: LoraSettings[];
  /** Textual-inversion embeddings whose names the prompts may use (A1111: every file in models/embeddings). */
  embeddings?: EmbeddingSettings[];
  /** Hires fix (txt2img): upscale the first pass, then a second denoise pass at the larger size. */
  hires?: HiresRequest;
  /** Inpainting: regenerate only where the mask is white (needs `init`). */
  mask?: MaskSettings;
  /**
   * Outpainting: grow the init image (fitted to width x height) by these margins and paint the new area through the
   * inpaint path. The output is (width + left + right) x (height + top + bottom), each rounded up to the latent factor.
   */
  outpaint?: OutpaintSettings;
  /** LayerDiffuse transparency: the UNet patched into the transparent latent space, RGBA out (pipelines/transparent.ts). */
  transparent?: TransparentSettings;
  /**
   * Generate only images start..start+count-1 of the batch, each exactly as in the whole batch (a chunk of a job
   * split over workers; pipelines/batch-window.ts). `start` is a multiple of BATCH_WINDOW_ALIGN.
   */
  batchWindow?: { start: number; count: number };
  device?: Device;
}

/** LayerDiffuse's files (resolved by the caller) and how the alpha is decoded. */
export interface TransparentSettings {
  /** The transparent VAE decoder (vae_transparent_decoder.safetensors, "UNet1024"). */
  decoder: string;
  /** The UNet patch (layer_xl_transparent_attn / _conv.safetensors, frozen-patcher format), applied at weight 1. */
  patch: string;
  /** The model family the files are for ('sdxl'); another family's model is refused. */
  family: string;
  /** The patch's multiplier (Forge's "Weight", default 1). */
  weight?: number;
  /** 8 augmented decoder passes and their median (default true); false: 1 pass, about 8x faster, rougher edges. */
  tta?: boolean;
  /** Also return each image's checkerboard preview (GeneratedImage.preview), as the reference tools show it. */
  preview?: boolean;
}

/** A textual-inversion embedding: the word that stands for it in prompts, and its file. */
export interface EmbeddingSettings {
  name: string;
  path: string;
}

/** One LoRA: its file (resolved by the caller) and separate text-encoder and UNet multipliers (negative allowed). */
export interface LoraSettings {
  /** The name the client used (warnings, infotext "Lora hashes"). */
  name: string;
  path: string;
  te: number;
  unet: number;
}

/** A1111's hires fix (`enable_hr` + `hr_*`); see pipelines/hires.ts for the exact algorithm. */
export interface HiresRequest {
  /** Upscale factor (A1111 hr_scale), used when neither resizeX nor resizeY is set. */
  scale?: number;
  /** Target width/height (hr_resize_x/y); one alone keeps the aspect ratio, both cover then crop. */
  resizeX?: number;
  resizeY?: number;
  /** A latent mode ("Latent", "Latent (bicubic)", ...), "None", "Lanczos", "Nearest", or a model upscaler's name. */
  upscaler: string;
  /** The weights file of a model upscaler (resolved by the caller from `upscaler`). */
  upscalerPath?: string;
  /** Second-pass steps (hr_second_pass_steps); 0 or absent = the first pass's steps. */
  steps?: number;
  denoisingStrength: number;
  /** hr_sampler_name / hr_scheduler; absent = the first pass's. */
  sampler?: string;
  schedule?: string;
  /** hr_prompt / hr_negative_prompt; absent = the first pass's prompts. */
  prompt?: string;
  negativePrompt?: string;
  /** hr_cfg; absent = cfgScale. */
  cfgScale?: number;
}

export interface OutpaintSettings {
  left?: number;
  right?: number;
  top?: number;
  bottom?: number;
  /** A1111 inpainting_fill for the new area (default 0, "fill": the edge colours smeared outwards). */
  fill?: 0 | 1 | 2 | 3;
  /** Mask blur in pixels (default 4); the mask reaches 2 x blur into the original so the seam blends. */
  blur?: number;
}

/**
 * An inpainting mask and how to apply it. 'a1111' (default) follows A1111 img2img: blur, masked content, x0 blend
 * at every step and paste-back onto the original. 'diffusers' follows StableDiffusionInpaintPipeline: a binarized
 * mask, noised re-injection of the original for 4-channel UNets, no paste-back.
 */
export interface MaskSettings {
  /** White = repaint (luminance; for RGBA with a non-opaque alpha, the alpha). Resized to the image when sizes differ. */
  image: RawImage;
  mode?: 'a1111' | 'diffusers';
  /** Gaussian blur sigma in pixels, horizontally and vertically (A1111 mask_blur_x/y, default 4). */
  blurX?: number;
  blurY?: number;
  /** A1111 inpainting_fill: 0 fill (default), 1 original, 2 latent noise, 3 latent nothing. */
  fill?: 0 | 1 | 2 | 3;
  /** A1111 inpaint_full_res ("Only masked"): process a crop around the mask at width x height, paste it back. */
  fullResolution?: boolean;
  /** Pixels added around the mask's box in "Only masked" mode. */
  padding?: number;
  /** Repaint where the mask is black instead. */
  invert?: boolean;
  /** Round the latent mask to 0/1 (A1111 mask_round, default true). */
  round?: boolean;
}

/**
 * Which axes a tiled image wraps around: 'xy' both (A1111 `tiling`), 'x' left-right only, 'y' top-bottom only.
 * Every spatially padded convolution of the UNet and VAE pads circularly on these axes and with zeros on the other.
 */
export type Tiling = 'xy' | 'x' | 'y';

/** A1111 "Restore faces": the restorer and the weight files the caller resolved (models folder). */
export interface FaceRestoreSettings {
  /** A1111's names: 'CodeFormer' (its default) or 'GFPGAN' (v1.3/v1.4, GFPGANv1Clean). */
  model: 'CodeFormer' | 'GFPGAN';
  /** CodeFormer's fidelity (A1111 code_former_weight: 0 = strongest effect, 1 = weakest); default 0.5. */
  weight?: number;
  /** Extras only: blend of the restored image over the original; 1 (default) replaces it. */
  visibility?: number;
  /** The restorer's weights (codeformer.pth / GFPGANv1.4.pth or .safetensors). */
  restorerPath: string;
  /** RetinaFace (detection_Resnet50_Final.pth) and ParseNet (parsing_parsenet.pth). */
  detectorPath: string;
  parserPath: string;
}

export type SamplingFlavour = 'diffusers' | 'a1111';
export type SdeNoise = 'brownian' | 'gaussian';

/** k-diffusion's stochastic sampling knobs (A1111 eta, s_churn, s_tmin, s_tmax, s_noise). */
export interface SamplerSettings {
  eta?: number;
  sChurn?: number;
  sTmin?: number;
  sTmax?: number;
  sNoise?: number;
}

export type InitResizeMode = 0 | 1 | 2 | 3;

export interface InitImage {
  /** Fitted to width x height by the pipeline as `resizeMode` says (default A1111 "Just resize"). */
  image: RawImage;
  /**
   * A1111 img2img resize_mode: 0 just resize (default), 1 crop and resize (cover, centre crop), 2 resize and fill
   * (fit, borders stretched from the edges), 3 just resize in latent space (encode at the image's size, then a
   * bilinear resize of the latent).
   */
  resizeMode?: InitResizeMode;
  /** Denoising strength 0..1: the fraction of the schedule that runs. */
  strength: number;
  /** A1111 initial_noise_multiplier: scales the noise added to the init latent (default 1). */
  noiseMultiplier?: number;
}

export interface RefinerSettings {
  model: ModelRef;
  /** Fraction of the steps after which the refiner takes over (A1111 refiner_switch_at); 1 = never. */
  switchAt: number;
}

export interface GeneratedImage {
  image: RawImage;
  seed: number;
  subseed: number;
  prompt: string;
  negativePrompt: string;
  /** A1111 "parameters" text, embedded in PNG/JPEG/WebP metadata. */
  infotext: string;
  /** Transparent images with `transparent.preview`: the RGBA over a grey checkerboard, as RGB. */
  preview?: RawImage;
}

export interface GenerateResult {
  images: GeneratedImage[];
  timings: { loadMs: number; encodeMs: number; sampleMs: number; decodeMs: number; totalMs: number };
  /** Things the client should know that did not stop the job (LoRA keys that matched no layer, ...). */
  warnings?: string[];
}

export type Phase = 'loading' | 'encoding' | 'sampling' | 'upscaling' | 'decoding';

/** A graph being built (first use of a model on this machine), reported during the operation that needs it. */
export interface GraphBuildProgress {
  /** The network: 'unet', 'text-encoder-0', 'vae-decoder', ... */
  network: string;
  /** The nth graph built by this operation (1-based). */
  index: number;
  /** Weight bytes written so far, of about totalBytes (an estimate from the weights' shapes). */
  bytes: number;
  totalBytes: number;
  /** 0..1 for this graph (below 1 until done). */
  fraction: number;
  elapsedMs: number;
  done: boolean;
}

export interface ProgressEvent {
  phase: Phase;
  /** A graph being built for this operation (the other fields stay where the operation was); jobs show it as phase 'loading'. */
  build?: GraphBuildProgress;
  /** Model evaluations done / planned in the sampling phase (0 elsewhere). */
  step: number;
  totalSteps: number;
  /** 0..1 over the whole job. */
  fraction: number;
  /**
   * Only with GenerateOptions.preview, on some sampling events: a cheap RGB approximation of the first image
   * of the batch at latent resolution (width / latent factor x height / latent factor), from the sampler's
   * current denoised estimate. Its buffer belongs to the listener (it may be transferred).
   */
  preview?: RawImage;
}

/** How any engine operation reports back and is cancelled. */
export interface RunOptions {
  onProgress?: (e: ProgressEvent) => void;
  /** Checked between steps; an aborted operation rejects with an AbortError. */
  signal?: AbortSignal;
  /**
   * Live previews in progress events: every `everyEvals` model evaluations (and after the last one).
   * Absent or everyEvals <= 0: no previews and no extra work.
   */
  preview?: {
    everyEvals: number;
    /** TAESD decoder files by latent space name ("sd", "sdxl"): previews decoded at full size instead of "Approx cheap". */
    taesd?: Partial<Record<string, string>>;
  };
}

export type GenerateOptions = RunOptions;

/** A model the engine holds in memory (what the `load` operation returns). */
export interface LoadedModelInfo {
  path: string;
  name: string;
  family: string;
  prediction: string;
  lastUsed: number;
}

/** A user-facing error in a request (bad field, unknown sampler, bad file): maps to HTTP 400. */
export class KilnInputError extends Error {
  constructor(
    message: string,
    readonly field?: string,
  ) {
    super(message);
    this.name = 'KilnInputError';
  }
}

/** A model file that cannot be used (missing, corrupt, pickled, unknown layout): maps to HTTP 400/422. */
export class ModelFileError extends Error {
  constructor(
    readonly file: string,
    message: string,
  ) {
    super(`${file}: ${message}`);
    this.name = 'ModelFileError';
  }
}
