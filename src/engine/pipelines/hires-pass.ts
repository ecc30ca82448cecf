// Stage 3b, hires fix's second pass (A1111 sample_hr_pass): upscale the first pass, fresh noise from the same seeds
// at the new size, and a second denoise pass; progress continues in seed 004's "upscaling" phase.
import type { GenerateOptions, GenerateRequest, ProgressEvent } from '../api.ts';
import { addNoise } from '../samplers/index.ts';
import type { ImageBatch } from './batch.ts';
import { conditionBatch, type BatchConditioning } from './conditioning.ts';
import { toDecoderSpace } from './decode.ts';
import { runDenoisePasses, type DenoisePass } from './denoise.ts';
import { cfgDenoiser, type GuidanceSettings } from './denoisers/cfg.ts';
import { refinerSwitch, switchSigma } from './denoisers/refiner-switch.ts';
import { type hiresSigmas, hiresTarget, upscaleFirstPass } from './hires.ts';
import { batchNoise } from './initial-latent.ts';
import { samplerNoise } from './sampler-noise.ts';
import type { ModelSessions } from './model-sessions.ts';
import { abortError } from './progress.ts';

/** Stage 3b, hires fix: upscale the first pass, fresh noise from the same seeds at the new size, a second pass. */
export async function runHiresPass(
  base: ModelSessions,
  req: GenerateRequest,
  batch: ImageBatch,
  firstPass: Float32Array,
  shape: [number, number, number],
  hires: ReturnType<typeof hiresSigmas>,
  guidance: GuidanceSettings,
  baseCond: BatchConditioning,
  opts: GenerateOptions,
  firstEvals: number,
  totalEvals: number,
  progress: (e: ProgressEvent) => void,
  /** The SDXL refiner, which takes over inside this pass (A1111 hires_fix_refiner_pass "second pass"). */
  refiner?: { ms: ModelSessions; cond: BatchConditioning; switchAt: number },
): Promise<{ latents: Float32Array; shape: [number, number, number] }> {
  const h = req.hires!;
  const { count } = batch;
  if (opts.signal?.aborted) throw abortError();
  const upscaleProgress = (f: number) => progress({ phase: 'upscaling', step: firstEvals, totalSteps: totalEvals, fraction: 0.5 + 0.05 * f });
  upscaleProgress(0);
  const settings = { device: base.settings.device, cacheDir: base.settings.cacheDir, threads: base.settings.threads };
  const up = await upscaleFirstPass(base, req, firstPass, count, shape, settings, upscaleProgress);
  const target = hiresTarget(req.width, req.height, h, base.latentFactor);
  // hr_prompt / hr_negative_prompt: the first pass's conditioning unless they differ.
  const hrPrompts = (b: ImageBatch): ImageBatch => ({
    ...b,
    prompts: b.prompts.map((p) => h.prompt ?? p),
    negatives: b.negatives.map((n) => h.negativePrompt ?? n),
  });
  // A window of a larger batch (batch-window.ts) is conditioned through its whole batch: map that one too.
  const hrBatch = { ...hrPrompts(batch), ...(batch.window ? { window: { ...batch.window, whole: hrPrompts(batch.window.whole) } } : {}) };
  const cond = h.prompt !== undefined || h.negativePrompt !== undefined ? await conditionBatch(base, hrBatch, req.clipSkip ?? 1) : baseCond;
  const noise = batchNoise(req, batch, up.shape, base.latentFactor);
  const x = addNoise(up.latents, noise.initial, hires.sigmas[0]!);
  const hrGuidance: GuidanceSettings = {
    ...guidance,
    cfgScale: h.cfgScale ?? req.cfgScale,
    shape: up.shape,
    timestepMode: hires.plan.timestepMode,
    // SDXL's size conditioning sees the hires size, as A1111's calculate_hr_conds.
    extras: { width: target.width, height: target.height },
  };
  const pass: DenoisePass = { model: cfgDenoiser(base, cond, hrGuidance), sigmas: hires.sigmas, wrappers: [] };
  if (refiner) {
    // A1111 switches by its own rule inside the hires pass; Kiln's rule, as in the first pass: the step index
    // switchAt of the way through this pass's sigmas. hr prompts are the refiner's prompts too.
    const refinerCond = cond === baseCond ? refiner.cond : await conditionBatch(refiner.ms, hrBatch, req.clipSkip ?? 1);
    pass.wrappers.push(refinerSwitch(cfgDenoiser(refiner.ms, refinerCond, { ...hrGuidance, concat: undefined }), switchSigma(hires.sigmas, refiner.switchAt)));
  }
  const sampled = await runDenoisePasses([pass], x, {
    sampler: hires.plan.sampler,
    noise: samplerNoise(req, hires.plan, hires.plan.sigmas, batch.seeds, up.shape, noise),
    options: req.samplerOptions ?? {},
    signal: opts.signal,
    onEval: (done, total) => {
      const all = Math.max(totalEvals, firstEvals + total);
      progress({ phase: 'upscaling', step: firstEvals + done, totalSteps: all, fraction: 0.55 + 0.35 * (done / Math.max(total, 1)) });
    },
  });
  return { latents: toDecoderSpace(sampled, hires.sigmas[hires.sigmas.length - 1]!), shape: up.shape };
}
