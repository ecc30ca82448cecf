// txt2img and img2img as five stages: conditioning -> initial latent -> denoise passes -> decode ->
// post-process. New features are a stage or a denoiser wrapper in their own file (see denoise.ts).
import type { GenerateOptions, GenerateRequest, GenerateResult, RawImage } from '../api.ts';
import { KilnInputError } from '../api.ts';
import { expandBatch } from './batch.ts';
import { windowBatch } from './batch-window.ts';
import { outpaintRequest } from './outpaint.ts';
import { conditionBatch } from './conditioning.ts';
import { decodeLatents, toDecoderSpace } from './decode.ts';
import { plannedEvals, runDenoisePasses, type DenoisePass } from './denoise.ts';
import { cfgDenoiser, type GuidanceSettings } from './denoisers/cfg.ts';
import { PreviewTap } from './denoisers/preview-tap.ts';
import { openTaesdDecoder, taesdImages, type TaesdDecoder } from './taesd-model.ts';
import { refinerSwitch, switchSigma } from './denoisers/refiner-switch.ts';
import { x0Blend, noisedReinjection, blendWithInit } from './denoisers/inpaint-blend.ts';
import { isInpaintingUnet } from '../families/unet-feeds.ts';
import { finishInpaint, inpaintConcat, prepareInpaint } from './inpaint.ts';
import { runHiresPass } from './hires-pass.ts';
import { runFlowPipeline } from './flow-generate.ts';
import { batchNoise, initialLatent } from './initial-latent.ts';
import { samplerNoise } from './sampler-noise.ts';
import { restoreImageFaces, validateFaceRestore } from './face-restore.ts';
import type { ModelSessions } from './model-sessions.ts';
import type { NoiseOverrides } from './overrides.ts';
import { planRequest } from './plan.ts';
import { hiresSigmas, validateHires } from './hires.ts';
import { finishImages } from './post-process.ts';
import { decodeTransparent, validateTransparent } from './transparent.ts';
import { abortError, progressReporter } from './progress.ts';
import { validateRequest } from './validate.ts';
import { loraHashesText } from '../weights/lora/index.ts';
import { requireUnetConfig } from '../weights/model.ts';
import { checkStepReuseBranch } from '../nets/unet.ts';

export type { NoiseOverrides } from './overrides.ts';

export interface PipelineModels {
  base: ModelSessions;
  refiner?: ModelSessions;
}

export async function runPipeline(
  models: PipelineModels,
  req: GenerateRequest,
  opts: GenerateOptions = {},
  overrides: NoiseOverrides = {},
): Promise<GenerateResult> {
  const started = Date.now();
  const { base, refiner } = models;
  if (base.family.kind === 'flow') {
    if (refiner) throw new KilnInputError(`refiner: ${base.family.label} models take no refiner`, 'refiner');
    if ((req.deepCache?.interval ?? 1) > 1) {
      throw new KilnInputError(`deep_cache: step reuse cuts a UNet; ${base.family.label} models have none. Leave deep_cache out`, 'deep_cache');
    }
    return runFlowPipeline(base, req, opts, overrides);
  }
  if (req.outpaint) {
    if (req.mask) throw new KilnInputError('outpaint: send either a mask or outpaint margins, not both', 'outpaint');
    req = await outpaintRequest(req, base.latentFactor);
  }
  const encoderLayers = [base, refiner].flatMap((m) => m?.model.textEncoders.map((t) => t.config.num_hidden_layers) ?? []);
  validateRequest(req, base.latentFactor, Math.min(...encoderLayers));
  validateHires(req, base.latentFactor);
  if (req.restoreFaces) validateFaceRestore(req.restoreFaces);
  validateTransparent(base, req);
  if (req.deepCache) checkStepReuseBranch(requireUnetConfig(base.model) as unknown as Record<string, unknown>, req.deepCache.branch ?? 0);
  const progress = progressReporter(opts.onProgress);
  const timings = { loadMs: base.buildMs + (refiner?.buildMs ?? 0), encodeMs: 0, sampleMs: 0, decodeMs: 0, totalMs: 0 };
  // A split job's chunk generates only its window of the batch, each image as in the whole batch.
  const batch = windowBatch(expandBatch(req), req.batchWindow);
  const { count } = batch;

  // 1. Conditioning.
  progress({ phase: 'encoding', step: 0, totalSteps: 0, fraction: 0.01 });
  const t0 = Date.now();
  const clipSkip = req.clipSkip ?? 1;
  const baseCond = await conditionBatch(base, batch, clipSkip);
  const refinerCond = refiner ? await conditionBatch(refiner, batch, clipSkip) : undefined;
  timings.encodeMs = Date.now() - t0;

  // A TAESD final decode must fit this model: checked before any work.
  const taesdFinal = req.taesdDecode ? await openFinalTaesd(base, req.taesdDecode) : undefined;

  // 2. Initial latent.
  const plan = planRequest(base, req);
  const shape: [number, number, number] = [base.latentChannels, req.height / base.latentFactor, req.width / base.latentFactor];
  const noise = batchNoise(req, batch, shape, base.latentFactor);
  // Inpainting: the mask stage runs first; its (cropped, filled) image is what gets encoded.
  const inpaint = req.mask ? await prepareInpaint(req, base.latentFactor) : undefined;
  const initReq = inpaint && req.init ? { ...req, init: { ...req.init, image: inpaint.image } } : req;
  const initialNoise = overrides.initialNoise ?? noise.initial;
  const start = await initialLatent(base, initReq, plan, noise, count, overrides, {
    // A1111 "latent noise" / "latent nothing" replace the masked area of the clean init latent.
    adjust:
      inpaint && (inpaint.fill === 2 || inpaint.fill === 3)
        ? (l) => blendWithInit(inpaint.fill === 2 ? initialNoise : new Float32Array(l.length), l, inpaint.repaint)
        : undefined,
    pureNoiseAtFullStrength: inpaint?.mode === 'diffusers',
  });
  const inpaintUnet = isInpaintingUnet(requireUnetConfig(base.model).in_channels, base.latentChannels);
  // The hires pass would need the 9 channels rebuilt at its size; refuse before any work rather than fail after it.
  if (inpaintUnet && req.hires)
    throw new KilnInputError('hires: hires fix on an inpainting (9-channel) model is not supported yet; use an ordinary checkpoint', 'hires');

  // 3. Denoise passes.
  const t1 = Date.now();
  const guidance: GuidanceSettings = {
    cfgScale: req.cfgScale,
    count,
    shape,
    schedule: plan.modelSchedule,
    timestepMode: plan.timestepMode,
    extras: { width: req.width, height: req.height },
    // Every pass (the refiner's too, and later hires fix's) runs the tiled graphs when the request tiles.
    tiling: req.tiling,
    reuse: req.deepCache && req.deepCache.interval > 1 ? { interval: req.deepCache.interval, branch: req.deepCache.branch ?? 0 } : undefined,
    concat: inpaintUnet ? await inpaintConcat(base, initReq, inpaint, count, shape, noise, overrides) : undefined,
    onInput: overrides.onModelInput,
  };
  const pass: DenoisePass = { model: cfgDenoiser(base, baseCond, guidance), sigmas: start.sigmas, wrappers: [] };
  // With hires fix the refiner joins only the second pass (A1111's default hires_fix_refiner_pass "second pass").
  const refinerOn =
    refiner && refinerCond && req.refiner && req.refiner.switchAt < 1 ? { ms: refiner, cond: refinerCond, switchAt: req.refiner.switchAt } : undefined;
  if (refinerOn && !req.hires) {
    // The refiner is an ordinary UNet: no inpainting channels.
    pass.wrappers.push(
      refinerSwitch(cfgDenoiser(refinerOn.ms, refinerOn.cond, { ...guidance, concat: undefined }), switchSigma(pass.sigmas, refinerOn.switchAt)),
    );
  }
  // Outside the refiner switch, so the blend applies to whichever model denoises.
  if (inpaint && start.init) {
    if (inpaint.mode === 'a1111') pass.wrappers.push(x0Blend(start.init, inpaint.repaint));
    else if (!inpaintUnet) pass.wrappers.push(noisedReinjection(start.init, initialNoise, inpaint.repaint, start.sigmas[0]!));
  }

  const everyEvals = opts.onProgress && opts.preview && opts.preview.everyEvals > 0 ? Math.floor(opts.preview.everyEvals) || 1 : 0;
  const taesdFile = everyEvals > 0 ? opts.preview?.taesd?.[base.family.latentSpace.name] : undefined;
  const taesd = taesdFile ? await openTaesdDecoder(taesdFile, base.settings) : undefined;
  const tap = everyEvals > 0 ? new PreviewTap(everyEvals, base.family.latentSpace, shape, taesd) : undefined;
  if (tap) pass.wrappers.push(tap.wrapper);
  const passes = [pass];
  const hires = req.hires ? hiresSigmas(base, req) : undefined;
  const firstEvals = plannedEvals(plan.sampler, passes);
  const totalEvals = firstEvals + (hires ? plannedEvals(hires.plan.sampler, [{ ...pass, sigmas: hires.sigmas }]) : 0);
  const sampled = await runDenoisePasses(passes, start.x, {
    sampler: plan.sampler,
    noise: samplerNoise(req, plan, plan.sigmas, batch.seeds, shape, noise),
    options: req.samplerOptions ?? {},
    signal: opts.signal,
    onEval: (done, total) => {
      const preview = tap?.previewAt(done, total);
      progress({
        phase: 'sampling',
        step: done,
        totalSteps: total,
        // With hires fix the first pass fills the first half (seed 004's "initial generation" phase).
        fraction: hires ? 0.05 + 0.45 * (done / Math.max(total, firstEvals)) : 0.05 + 0.85 * (done / Math.max(total, totalEvals)),
        ...(preview ? { preview } : {}),
      });
    },
  });
  const finalPreview = await tap?.finalPreview();
  if (finalPreview) progress({ phase: 'sampling', step: firstEvals, totalSteps: firstEvals, fraction: hires ? 0.5 : 0.9, preview: finalPreview });
  tap?.clear();
  const lastPass = passes[passes.length - 1]!;
  let latents = toDecoderSpace(sampled, lastPass.sigmas[lastPass.sigmas.length - 1]!);
  // Both A1111 and diffusers (4-channel) put the original latent back where nothing was to be repainted.
  if (inpaint && start.init && (inpaint.mode === 'a1111' || !inpaintUnet)) latents = blendWithInit(latents, start.init, inpaint.repaint);
  let outShape = shape;
  if (req.hires && hires) {
    const second = await runHiresPass(base, req, batch, latents, shape, hires, guidance, baseCond, opts, firstEvals, totalEvals, progress, refinerOn);
    latents = second.latents;
    outShape = second.shape;
  }
  timings.sampleMs = Date.now() - t1;
  overrides.onFinalLatents?.({ shape: [count, ...outShape], data: latents });

  // 4. Decode.
  if (opts.signal?.aborted) throw abortError();
  progress({ phase: 'decoding', step: totalEvals, totalSteps: totalEvals, fraction: 0.92 });
  const t2 = Date.now();
  const previews: RawImage[] = [];
  const decoded = req.transparent
    ? await decodeTransparent(base, latents, count, outShape, req.transparent, req.tiling, {
        signal: opts.signal,
        onProgress: (f) => progress({ phase: 'decoding', step: totalEvals, totalSteps: totalEvals, fraction: 0.92 + 0.07 * f }),
        onFloat: overrides.onTransparentFloat,
        onPreview: (i, preview) => (previews[i] = preview),
      })
    : taesdFinal
      ? await taesdImages(taesdFinal, latents, count, outShape)
      : await decodeLatents(base, latents, count, outShape, req.tiling, req.flavour === 'a1111' ? 'truncate' : 'round');
  const pasted = inpaint ? await finishInpaint(decoded, inpaint) : decoded;
  // A1111 restores faces on the 8-bit sample, before anything else sees it.
  const faces = req.restoreFaces;
  const restored = faces ? await Promise.all(pasted.map(async (img) => (await restoreImageFaces(img, faces, base.settings)).image)) : pasted;

  // 5. Post-process.
  const loraHashes = await loraHashesText(req.loras ?? []);
  const finished = finishImages(restored, req, batch, {
    plan,
    modelName: base.model.name,
    modelHash: await base.model.hash(),
    refinerName: refiner?.model.name,
    loraHashes,
    hiresSamplerName: hires?.plan.samplerName,
    extra: inpaint?.extra,
  });
  const images = finished.map((g, i) => (previews[i] ? { ...g, preview: previews[i] } : g));
  timings.decodeMs = Date.now() - t2;
  timings.totalMs = Date.now() - started;
  progress({ phase: 'decoding', step: totalEvals, totalSteps: totalEvals, fraction: 1 });
  const warnings = [...(base.loras?.warnings ?? []), ...(base.embeddings?.warnings ?? [])];
  return { images, timings, ...(warnings.length ? { warnings } : {}) };
}

/** The TAESD decoder for this model's latent space, or a KilnInputError('vae') saying what is missing or unfit. */
async function openFinalTaesd(base: ModelSessions, files: Partial<Record<string, string>>): Promise<TaesdDecoder> {
  const space = base.family.latentSpace.name;
  const file = files[space];
  if (!file) {
    throw new KilnInputError(
      `vae: "taesd" needs a TAESD decoder for the "${space}" latent space (taesd_decoder for SD1/SD2, taesdxl_decoder for SDXL; .safetensors or .pth) in models/vae-approx/ or models/taesd/`,
      'vae',
    );
  }
  const decoder = await openTaesdDecoder(file, base.settings);
  if (decoder.plan.latentChannels !== base.latentChannels || decoder.plan.scale !== base.latentFactor)
    throw new KilnInputError(
      `vae: the TAESD decoder ${file} (${decoder.plan.latentChannels} channels, x${decoder.plan.scale}) does not fit this model (${base.latentChannels} channels, x${base.latentFactor})`,
      'vae',
    );
  return decoder;
}
