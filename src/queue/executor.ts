// Runs one job: resolve the model and input, call the engine, encode and store the images.
import type { Device, ModelRef, ProgressEvent, TransparentSettings } from '../engine/index.ts';
import type { ImageStore } from '../storage/image-store.ts';
import { encodeImage, EXTENSIONS } from '../storage/encode.ts';
import type { Engine } from './engine.ts';
import type { Job, JobResult, StoredImage } from './job.ts';
import { type FaceRestoreFiles, type RestoreFacesSpec, SpecError, toGenerateRequest } from './job-spec.ts';
import { loadInputImage, loadMaskImage } from './inputs.ts';
import { runVisionJob, type VisionDeps } from './vision-jobs.ts';

export interface RunContext {
  signal: AbortSignal;
  onProgress: (e: ProgressEvent) => void;
}

export type JobRunner = (job: Job, ctx: RunContext) => Promise<JobResult>;

export interface ExecutorDeps extends Pick<VisionDeps, 'resolveClipModel' | 'interrogateCategories' | 'hasModel'> {
  engine: Engine;
  storage: ImageStore;
  /** Model name or label (undefined = default) and the VAE choice -> files; throws SpecError('model'/'vae', ...) when unknown. */
  resolveModel: (name: string | undefined, vae?: string) => Promise<ModelRef>;
  /** LoRA name -> file path; throws SpecError('loras', ...) when unknown. */
  resolveLora?: (name: string) => string;
  /** The textual-inversion embeddings available (readable files in models/embeddings), by prompt word. */
  embeddings?: () => Array<{ name: string; path: string }>;
  device?: Device;
  /** A model upscaler's name -> its weights file; undefined for the built-in and latent ones (checked at submission). */
  resolveUpscaler?: (name: string) => string | undefined;
  /** A transparent spec's LayerDiffuse files (throws when they are missing; checked at submission too). */
  transparent?: (spec: Job['spec']) => TransparentSettings | undefined;
  /** A face restorer ('CodeFormer' | 'GFPGAN') -> its weight files; throws SpecError('restore_faces', ...) naming missing files. */
  resolveFaceRestorer?: (model: RestoreFacesSpec['model']) => FaceRestoreFiles;
  /** Ask the engine for a live preview every this many model evaluations (0 or absent: none). */
  previewEvery?: number;
  /** TAESD decoder files by latent space name: full-size previews (absent or empty: "Approx cheap"), and `vae: "taesd"`. */
  taesdDecoders?: () => Partial<Record<string, string>>;
}

export function createExecutor(deps: ExecutorDeps): JobRunner {
  return async (job, ctx) => {
    const spec = job.spec;
    if (spec.kind === 'upscale') return runUpscale(job, ctx, deps);
    if (spec.kind === 'embed-image' || spec.kind === 'interrogate') return runVisionJob(job, ctx, deps);
    // vae "taesd" replaces only the final decode; the model keeps the VAE it would have without a choice (img2img, hires).
    const taesdFinal = spec.vae?.toLowerCase() === 'taesd';
    const model = await deps.resolveModel(spec.model, taesdFinal ? undefined : spec.vae);
    const refiner = spec.refiner ? await deps.resolveModel(spec.refiner) : undefined;
    const init = spec.initImage ? await loadInputImage(spec.initImage, deps.storage) : undefined;
    const mask = spec.mask?.image ? await loadMaskImage(spec.mask.image, deps.storage) : undefined;
    const everyEvals = deps.previewEvery ?? 0;
    const taesd = everyEvals > 0 ? deps.taesdDecoders?.() : undefined;
    const opts = everyEvals > 0 ? { ...ctx, preview: { everyEvals, ...(taesd && Object.keys(taesd).length ? { taesd } : {}) } } : ctx;
    const loraPaths = new Map((spec.loras ?? []).map((l) => [l.name, deps.resolveLora ? deps.resolveLora(l.name) : l.name]));
    const upscalerPath = spec.hires?.upscaler ? deps.resolveUpscaler?.(spec.hires.upscaler) : undefined;
    const faceFiles = spec.restoreFaces ? faceRestorerFiles(deps, spec.restoreFaces) : undefined;
    const transparent = deps.transparent?.(spec);
    const request = toGenerateRequest(spec, model, init, deps.device, refiner, { loraPaths, hiresUpscalerPath: upscalerPath, mask, transparent, faceFiles });
    // Only the embeddings a prompt names travel (each one used is a text-encoder graph variant).
    const texts = [...spec.prompts, ...spec.negativePrompts];
    const embeddings = deps.embeddings?.().filter((e) => texts.some((t) => t.includes(e.name)));
    if (embeddings?.length) request.embeddings = embeddings;
    if (taesdFinal) request.taesdDecode = deps.taesdDecoders?.() ?? {};
    const result = await deps.engine.generate(request, opts);
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
        if (g.preview) {
          // The transparent image's checkerboard preview: always an RGB PNG, beside the image.
          const preview = `${job.id}-${i}-preview.png`;
          await deps.storage.write(preview, await encodeImage(g.preview, { format: 'png', infotext: g.infotext }));
          images[images.length - 1]!.preview = preview;
        }
      }
    } catch (e) {
      // A job that fails part-way (disk full on image 2 of 4) leaves no orphan files behind.
      for (const img of images) for (const n of [img.name, img.preview]) if (n) await deps.storage.remove(n).catch(() => undefined);
      throw e;
    }
    return { images, timings: result.timings, ...(result.warnings ? { warnings: result.warnings } : {}) };
  };
}

/** An upscale job: the stored input through the engine's `upscale` operation, stored like a generated image. */
async function runUpscale(job: Job, ctx: RunContext, deps: ExecutorDeps): Promise<JobResult> {
  const spec = job.spec;
  const u = spec.upscale!;
  const image = await loadInputImage(spec.initImage!, deps.storage);
  const choice = (name: string) => ({ name, path: deps.resolveUpscaler?.(name) });
  const started = Date.now();
  const result = await deps.engine.run(
    'upscale',
    {
      image,
      mode: u.mode,
      scale: u.scale,
      width: u.width,
      height: u.height,
      crop: u.crop,
      upscaler1: choice(u.upscaler1),
      upscaler2: u.upscaler2 ? choice(u.upscaler2) : undefined,
      upscaler2Visibility: u.upscaler2Visibility,
    },
    ctx,
  );
  // Extras face restoration after the upscale, each pass blended over its input by its visibility (A1111's order).
  let restored = result.image;
  const info: Record<string, string | number> = { ...result.info };
  for (const faces of u.restoreFaces ?? []) {
    const settings = { ...faces, ...faceRestorerFiles(deps, faces) };
    restored = (await deps.engine.run('restore-faces', { image: restored, settings }, ctx)).image;
    info[`${faces.model} visibility`] = round3(faces.visibility ?? 1);
    if (faces.model === 'CodeFormer') info['CodeFormer weight'] = round3(faces.weight ?? 0.5);
  }
  // A1111 writes the postprocessing parameters as the image's text ("Postprocess upscale by: 4, ...").
  const infotext = Object.entries(info)
    .map(([k, v]) => `${k}: ${v}`)
    .join(', ');
  const name = `${job.id}-0.${EXTENSIONS[spec.output.format]}`;
  await deps.storage.write(name, await encodeImage(restored, { format: spec.output.format, quality: spec.output.quality, infotext }));
  const image0: StoredImage = {
    name,
    format: spec.output.format,
    width: restored.width,
    height: restored.height,
    seed: 0,
    subseed: 0,
    prompt: '',
    negativePrompt: '',
    infotext,
  };
  const totalMs = Date.now() - started;
  return { images: [image0], timings: { loadMs: 0, encodeMs: 0, sampleMs: totalMs, decodeMs: 0, totalMs } };
}

const round3 = (v: number) => Math.round(v * 1000) / 1000;

function faceRestorerFiles(deps: ExecutorDeps, spec: RestoreFacesSpec): FaceRestoreFiles {
  if (!deps.resolveFaceRestorer) throw new SpecError('restore_faces', 'this server has no face-restoration models folder');
  return deps.resolveFaceRestorer(spec.model);
}
