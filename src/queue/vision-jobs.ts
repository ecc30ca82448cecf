// Image-understanding jobs (kinds 'embed-image' and 'interrogate'): the stored input image through the engine's
// operation of the same name; the answer is data (JobResult.vision), not images.
import type { ModelRef, PhraseCategory } from '../engine/index.ts';
import type { Engine } from './engine.ts';
import type { RunContext } from './executor.ts';
import type { Job, JobResult, VisionOutput } from './job.ts';
import { loadInputImage } from './inputs.ts';
import type { ImageStore } from '../storage/image-store.ts';

export interface VisionDeps {
  engine: Engine;
  storage: ImageStore;
  resolveModel: (name: string | undefined) => Promise<ModelRef>;
  /** A CLIP model's name (undefined = the server's choice for the job kind) -> its name and path; throws SpecError('clip_model'). */
  resolveClipModel?: (
    name: string | undefined,
    kind: 'embed-image' | 'interrogate',
  ) => { name: string; path: string } | Promise<{ name: string; path: string }>;
  /** The operator's phrase lists (models/interrogate/*.txt), or undefined for the engine's built-in ones. */
  interrogateCategories?: () => PhraseCategory[] | undefined;
  /** Whether a checkpoint name (undefined = the default) is known; an unknown one is simply not used. */
  hasModel?: (name: string | undefined) => boolean;
}

/** float32 values as the shortest JSON numbers that read back to the same float32. */
function floats(data: Float32Array): number[] {
  return Array.from(data, (x) => Number(x.toPrecision(9)));
}

export async function runVisionJob(job: Job, ctx: RunContext, deps: VisionDeps): Promise<JobResult> {
  const spec = job.spec;
  const kind = spec.kind as 'embed-image' | 'interrogate';
  const v = spec.vision ?? {};
  if (!deps.resolveClipModel) throw new Error('internal error: no CLIP model resolver for an image-understanding job');
  const clip = await deps.resolveClipModel(v.clipModel, kind);
  const image = await loadInputImage(spec.initImage!, deps.storage);
  const started = Date.now();
  let vision: VisionOutput;
  if (kind === 'embed-image') {
    const model = v.vae === false ? undefined : await deps.resolveModel(spec.model);
    const r = await deps.engine.run('embed-image', { image, clip, model, vaeSize: v.vaeSize, squareResize: v.squareResize }, ctx);
    vision = { clipModel: clip.name, clipEmbedding: floats(r.clip), ...(r.vae ? { vaeLatent: floats(r.vae), vaeShape: r.vaeShape } : {}) };
  } else {
    // A checkpoint is only the fallback text tower (a vision-only CLIP file); a server without one still interrogates full CLIP models.
    const model = (deps.hasModel?.(spec.model) ?? true) ? await deps.resolveModel(spec.model) : undefined;
    const r = await deps.engine.run('interrogate', { image, clip, model, categories: deps.interrogateCategories?.(), returnRanks: v.returnRanks }, ctx);
    vision = { clipModel: clip.name, prompt: r.prompt, categories: r.categories, textTower: r.textTower };
  }
  const totalMs = Date.now() - started;
  return { images: [], vision, timings: { loadMs: 0, encodeMs: totalMs, sampleMs: 0, decodeMs: 0, totalMs } };
}
