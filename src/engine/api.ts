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

export interface GenerateRequest {
  model: ModelRef;
  /** One entry per prompt; the batch is prompts x imagesPerPrompt. */
  prompts: string[];
  /** One negative prompt for all, or one per prompt. */
  negativePrompt?: string | string[];
  imagesPerPrompt?: number;
  width: number;
  height: number;
  steps: number;
  cfgScale: number;
  /** A1111 sampler name ("Euler a", "DPM++ 2M") or legacy combined name ("DPM++ 2M Karras"). */
  sampler: string;
  /** A1111 schedule name ("Automatic", "Karras", ...); "Automatic" when absent. */
  schedule?: string;
  /** Seed of the first image; image i uses seed + i. Must already be resolved (no -1) by the caller or engine. */
  seed?: number;
  subseed?: number;
  subseedStrength?: number;
  seedResizeFromW?: number;
  seedResizeFromH?: number;
  rng?: RngSource;
  eta?: number;
  sChurn?: number;
  sTmin?: number;
  sTmax?: number;
  sNoise?: number;
  /** A1111 clip skip: 1 = last layer, 2 = penultimate, ... */
  clipSkip?: number;
  /** img2img: the init image (resized to width x height by the pipeline) and how much to change it. */
  initImage?: RawImage;
  denoisingStrength?: number;
  /** SDXL refiner: model and the fraction of steps after which it takes over. */
  refiner?: ModelRef;
  refinerSwitchAt?: number;
  device?: Device;
}

export interface GeneratedImage {
  image: RawImage;
  seed: number;
  subseed: number;
  prompt: string;
  negativePrompt: string;
  /** A1111 "parameters" text, embedded in PNG/JPEG/WebP metadata. */
  infotext: string;
}

export interface GenerateResult {
  images: GeneratedImage[];
  timings: { loadMs: number; encodeMs: number; sampleMs: number; decodeMs: number; totalMs: number };
}

export type Phase = 'loading' | 'encoding' | 'sampling' | 'decoding';

export interface ProgressEvent {
  phase: Phase;
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

export interface GenerateOptions {
  onProgress?: (e: ProgressEvent) => void;
  /** Checked between sampling steps; an aborted job rejects with an AbortError. */
  signal?: AbortSignal;
  /**
   * Live previews in progress events: every `everyEvals` model evaluations (and after the last one).
   * Absent or everyEvals <= 0: no previews and no extra work.
   */
  preview?: { everyEvals: number };
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
