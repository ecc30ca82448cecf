// The engine's one door: everything outside src/engine imports from here, and only from here.
export { createEngine, type Engine, type EngineOptions, type LocalRunOptions } from './engine.ts';
export {
  KilnInputError,
  MAX_DEEP_CACHE_INTERVAL,
  type DeepCacheSettings,
  ModelFileError,
  type Device,
  type GenerateOptions,
  type GenerateRequest,
  type GenerateResult,
  type GeneratedImage,
  type HiresRequest,
  type InitImage,
  type InitResizeMode,
  type LoadedModelInfo,
  type MaskSettings,
  type OutpaintSettings,
  type ModelRef,
  type Phase,
  type ProgressEvent,
  type GraphBuildProgress,
  type RawImage,
  type RefinerSettings,
  type RngSource,
  type RunOptions,
  type SamplerSettings,
  type SamplingFlavour,
  type FaceRestoreSettings,
  type SdeNoise,
  type Tiling,
  type TransparentSettings,
} from './api.ts';
export type { OpInput, OpName, OpOutput } from './ops/index.ts';
export { listSamplers, listSchedules } from './samplers/index.ts';
export { parseInfotext } from './infotext.ts';
export { resolveSeed } from './rng.ts';
export { inspectModel, type ModelSummary } from './inspect.ts';
/** A family's latent space name: which TAESD decoder (taesd / taesdxl) fits it. */
export { latentSpaceOf } from './families/index.ts';
export { resolveFlowSampling } from './pipelines/flow-plan.ts';
/** A1111's checkpoint hash (the same file the infotext's "Model hash" comes from). */
export { modelHashes } from './weights/model.ts';
/** Which standard tokenizers a model still needs in the HF cache, and the files to fetch (the server downloads them). */
export { missingTokenizers } from './weights/model.ts';
export {
  cachedTokenizer,
  missingTokenizerMessage,
  OPTIONAL_TOKENIZER_FILES,
  REQUIRED_TOKENIZER_FILES,
  STANDARD_TOKENIZERS,
  type TokenizerRole,
} from './weights/tokenizers.ts';
export { inspectLora, type LoraSummary } from './weights/lora/index.ts';
export { inspectEmbedding } from './weights/embeddings.ts';
/** Hires fix and upscalers: A1111's target-size rule and the upscaler names every server lists. */
export { BUILTIN_IMAGE_UPSCALERS, hiresTarget, type HiresTarget } from './pipelines/hires.ts';
export { LATENT_UPSCALE_MODES } from './pipelines/latent-upscale.ts';
/** Splitting a batch over workers: windows start on a multiple of BATCH_WINDOW_ALIGN; some samplers refuse. */
export { BATCH_WINDOW_ALIGN, batchSplitRefusal } from './pipelines/batch-window.ts';
export { inspectUpscaler } from './pipelines/upscaler-model.ts';
export type { UpscaleRequest, UpscaleResult, UpscalerChoice } from './pipelines/extras-upscale.ts';
/** Image understanding: CLIP models (models/clip_vision/), image embeddings and the CLIP interrogator. */
export { inspectClipModel, type ClipModelSummary } from './pipelines/clip-model.ts';
export type { EmbedImageRequest, EmbedImageResult } from './pipelines/embed-image.ts';
export { categoryFromFile, INTERROGATE_LIMITS, type InterrogateRequest, type InterrogateResult, type PhraseCategory } from './pipelines/interrogate.ts';
