// Runs one job: resolve the model and input, call the engine, encode and store the images.
import type { Device, ModelRef, ProgressEvent } from '../engine/index.ts';
import type { ImageStore } from '../storage/image-store.ts';
import { encodeImage, EXTENSIONS } from '../storage/encode.ts';
import type { Engine } from './engine.ts';
import type { Job, JobResult, StoredImage } from './job.ts';
import { toGenerateRequest } from './job-spec.ts';
import { loadInputImage, loadMaskImage } from './inputs.ts';

export interface RunContext {
  signal: AbortSignal;
  onProgress: (e: ProgressEvent) => void;
}

export type JobRunner = (job: Job, ctx: RunContext) => Promise<JobResult>;

export interface ExecutorDeps {
  engine: Engine;
  storage: ImageStore;
  /** Model name or label (undefined = default) -> files; throws SpecError('model', ...) when unknown. */
  resolveModel: (name: string | undefined) => Promise<ModelRef>;
  device?: Device;
  /** Ask the engine for a live preview every this many model evaluations (0 or absent: none). */
  previewEvery?: number;
}

export function createExecutor(deps: ExecutorDeps): JobRunner {
  return async (job, ctx) => {
    const spec = job.spec;
    const model = await deps.resolveModel(spec.model);
    const refiner = spec.refiner ? await deps.resolveModel(spec.refiner) : undefined;
    const init = spec.initImage ? await loadInputImage(spec.initImage, deps.storage) : undefined;
    const mask = spec.mask?.image ? await loadMaskImage(spec.mask.image, deps.storage) : undefined;
    const everyEvals = deps.previewEvery ?? 0;
    const opts = everyEvals > 0 ? { ...ctx, preview: { everyEvals } } : ctx;
    const result = await deps.engine.generate(toGenerateRequest(spec, model, init, deps.device, refiner, mask), opts);
    const images: StoredImage[] = [];
    try {
      for (const [i, g] of result.images.entries()) {
        const name = `${job.id}-${i}.${EXTENSIONS[spec.output.format]}`;
        const bytes = await encodeImage(g.image, { format: spec.output.format, quality: spec.output.quality, infotext: g.infotext });
        // Resolves once the image is durably stored (see ImageStore.write); the job is marked done only after.
        await deps.storage.write(name, bytes);
        images.push({
          name,
          format: spec.output.format,
          width: g.image.width,
          height: g.image.height,
          seed: g.seed,
          subseed: g.subseed,
          prompt: g.prompt,
          negativePrompt: g.negativePrompt,
          infotext: g.infotext,
        });
      }
    } catch (e) {
      // A job that fails part-way (disk full on image 2 of 4) leaves no orphan files behind.
      for (const img of images) await deps.storage.remove(img.name).catch(() => undefined);
      throw e;
    }
    return { images, timings: result.timings };
  };
}
