// txt2img / img2img on a flow model (Flux.1, SD3): the family's conditioning (CLIP + T5) -> seeded noise (or the
// init image's latents noised along the straight path) -> the transformer as a velocity, guided by the distilled
// guidance input (Flux dev) or classifier-free guidance (SD3) -> Euler along the velocity (or another ODE sampler
// through the k-diffusion denoiser view) -> the 16-channel VAE with the family's scale and shift -> post-process.
import { KilnInputError, type GenerateOptions, type GenerateRequest, type GenerateResult } from '../api.ts';
import type { FlowConditioning, FlowRows } from '../families/flow-types.ts';
import { imageToTensor } from '../image.ts';
import { runSession } from '../runtime.ts';
import { flowAddNoise, makeFlowDenoiser, sampleFlowEuler, type VelocityFn } from '../samplers/flow.ts';
import { countEvals, img2imgSigmasDiffusers, runSampler, type Denoiser } from '../samplers/index.ts';
import type { Tensor } from '../tensor.ts';
import { expandBatch } from './batch.ts';
import { windowBatch } from './batch-window.ts';
import { decodeLatents } from './decode.ts';
import { PreviewTap } from './denoisers/preview-tap.ts';
import { planFlow, validateFlowRequest, type FlowPlan } from './flow-plan.ts';
import { restoreImageFaces, validateFaceRestore } from './face-restore.ts';
import { fitInitImage } from './init-fit.ts';
import { batchNoise, encodeInitImage } from './initial-latent.ts';
import type { ModelSessions } from './model-sessions.ts';
import type { NoiseOverrides } from './overrides.ts';
import { finishImages } from './post-process.ts';
import { abortError, progressReporter } from './progress.ts';
import { validateRequest } from './validate.ts';

/** Images per transformer call (x2 with CFG); larger batches are split so memory stays bounded. */
const MAX_NET_BATCH_IMAGES = 4;

export async function runFlowPipeline(
  ms: ModelSessions,
  req: GenerateRequest,
  opts: GenerateOptions = {},
  overrides: NoiseOverrides = {},
): Promise<GenerateResult> {
  const started = Date.now();
  const family = ms.flowFamily;
  validateRequest(req, ms.latentFactor);
  validateFlowRequest(ms, req);
  if (ms.model.vae.names().length === 0) {
    throw new KilnInputError(
      `vae: ${ms.model.name} holds no VAE and none was chosen: pass one (native vae, A1111 sd_vae) or keep vae/ in its companion folder`,
      'vae',
    );
  }
  if (req.restoreFaces) validateFaceRestore(req.restoreFaces);
  const progress = progressReporter(opts.onProgress);
  const timings = { loadMs: ms.buildMs, encodeMs: 0, sampleMs: 0, decodeMs: 0, totalMs: 0 };
  // A split job's chunk generates only its window of the batch (batch-window.ts), each image as in the whole batch.
  const batch = windowBatch(expandBatch(req), req.batchWindow);
  const { count } = batch;
  const shape: [number, number, number] = [ms.latentChannels, req.height / ms.latentFactor, req.width / ms.latentFactor];
  const plan = planFlow(ms, req, (shape[1] / 2) * (shape[2] / 2));

  // 1. Conditioning: one encoding per distinct prompt.
  progress({ phase: 'encoding', step: 0, totalSteps: 0, fraction: 0.01 });
  const t0 = Date.now();
  const cache = new Map<string, FlowConditioning>();
  const encode = async (prompt: string, field: string) => {
    let c = cache.get(prompt);
    if (!c) {
      c = await family.flow.encode(ms, prompt, field);
      cache.set(prompt, c);
    }
    return c;
  };
  const positives: FlowConditioning[] = [];
  for (const p of batch.prompts) positives.push(await encode(p, 'prompt'));
  const negatives: FlowConditioning[] = [];
  if (plan.useCfg) for (const n of batch.negatives) negatives.push(await encode(n, 'negative_prompt'));
  timings.encodeMs = Date.now() - t0;

  // 2. Initial latent: unit noise at sigma 1 (txt2img), or the init image's latents noised to the first sigma.
  const noise = batchNoise(req, batch, shape, ms.latentFactor);
  const initialNoise = overrides.initialNoise ?? noise.initial;
  let sigmas = plan.sigmas;
  let x: Float32Array;
  if (req.init) {
    sigmas = img2imgSigmasDiffusers(plan.sigmas, req.init.strength);
    const pixels = overrides.initImagePixels ?? imageToTensor(await fitInitImage(req.init.image, req.width, req.height, 0));
    const encoded = await encodeInitImage(ms, pixels, count, overrides.vaeSampleNoise ?? noise.next());
    // encodeInitImage gives scale * z; the transformer works on scale * (z - shift).
    const offset = ms.scalingFactor * shiftFactor(ms);
    const init = encoded.map((v) => v - offset);
    x = sigmas.length > 1 ? flowAddNoise(init, initialNoise, sigmas[0]!) : init;
  } else {
    x = initialNoise.map((v) => v * sigmas[0]!);
  }

  // 3. Sampling.
  const t1 = Date.now();
  const session = await ms.transformer();
  const velocity = guidedVelocity(ms, (feeds) => runSession(session, feeds), positives, negatives, plan, req.cfgScale, shape);
  const everyEvals = opts.onProgress && opts.preview && opts.preview.everyEvals > 0 ? Math.floor(opts.preview.everyEvals) || 1 : 0;
  const tap = everyEvals > 0 ? new PreviewTap(everyEvals, family.latentSpace, shape) : undefined;
  const total = Math.max(1, plan.sampler === 'euler' ? sigmas.length - 1 : countEvals(plan.sampler, sigmas));
  let done = 0;
  const onEval = () => {
    done++;
    const preview = tap?.previewAt(done, total);
    progress({ phase: 'sampling', step: done, totalSteps: total, fraction: 0.05 + 0.85 * (done / total), ...(preview ? { preview } : {}) });
  };
  let sampled: Float32Array;
  if (sigmas.length < 2) sampled = x;
  else if (plan.sampler === 'euler') {
    // The reference pipelines' step exactly: x + (sigma_next - sigma) * v.
    sampled = await sampleFlowEuler(
      async (xs, sigma, step) => {
        if (opts.signal?.aborted) throw abortError();
        const v = await velocity(xs, sigma, step);
        if (tap) await tap.wrapper(async () => xs.map((xv, i) => xv - sigma * v[i]!))(xs, sigma);
        onEval();
        return v;
      },
      x,
      sigmas,
    );
  } else {
    const base = makeFlowDenoiser((xs, sigma) => velocity(xs, sigma, 0));
    const denoise: Denoiser = tap ? tap.wrapper(base) : base;
    sampled = await runSampler(plan.sampler, {
      denoise,
      x,
      sigmas,
      noise: () => noise.next(),
      options: req.samplerOptions ?? {},
      signal: opts.signal,
      onProgress: () => onEval(),
    });
  }
  tap?.clear();
  timings.sampleMs = Date.now() - t1;
  overrides.onFinalLatents?.({ shape: [count, ...shape], data: sampled });

  // 4. Decode: the decoder divides by the scaling factor, so the shift goes in as shift * scale.
  if (opts.signal?.aborted) throw abortError();
  progress({ phase: 'decoding', step: total, totalSteps: total, fraction: 0.92 });
  const t2 = Date.now();
  const offset = ms.scalingFactor * shiftFactor(ms);
  const decoded = await decodeLatents(
    ms,
    sampled.map((v) => v + offset),
    count,
    shape,
    undefined,
    req.flavour === 'a1111' ? 'truncate' : 'round',
  );
  const faces = req.restoreFaces;
  const restored = faces ? await Promise.all(decoded.map(async (img) => (await restoreImageFaces(img, faces, ms.settings)).image)) : decoded;

  // 5. Post-process.
  const images = finishImages(restored, req, batch, {
    plan,
    modelName: ms.model.name,
    modelHash: await ms.model.hash(),
    // Flux runs no CFG batch: its infotext says CFG scale 1 and the distilled guidance beside it, as Forge writes.
    cfgScale: family.flow.guidance === 'distilled' ? 1 : undefined,
    distilledGuidance: plan.guidance,
  });
  timings.decodeMs = Date.now() - t2;
  timings.totalMs = Date.now() - started;
  progress({ phase: 'decoding', step: total, totalSteps: total, fraction: 1 });
  const warnings = req.embeddings?.length ? [`embeddings: textual-inversion embeddings are not applied to ${family.label} models`] : [];
  return { images, timings, ...(warnings.length ? { warnings } : {}) };
}

function shiftFactor(ms: ModelSessions): number {
  const s = ms.model.vaeConfig.shift_factor;
  return typeof s === 'number' ? s : (ms.family.latentSpace.shiftFactor ?? 0);
}

/** Rows [count, ...] of a conditioning tensor field, gathered for `pick` (indices into `conds`). */
function gather(conds: FlowConditioning[], pick: number[], field: keyof FlowConditioning): Tensor {
  const first = conds[pick[0]!]![field];
  const per = first.data.length;
  const data = new Float32Array(pick.length * per);
  pick.forEach((i, j) => data.set(conds[i]![field].data, j * per));
  return { shape: [pick.length, ...first.shape.slice(1)], data };
}

/**
 * The guided velocity of the whole batch: sub-batches of at most MAX_NET_BATCH_IMAGES images, each one transformer
 * call over [negatives, positives] with CFG (v = v_u + cfg * (v_c - v_u), on the velocities as diffusers does) or over
 * the positives alone (Flux: the distilled guidance is an input).
 */
function guidedVelocity(
  ms: ModelSessions,
  run: Parameters<ModelSessions['flowFamily']['flow']['velocity']>[0],
  positives: FlowConditioning[],
  negatives: FlowConditioning[],
  plan: FlowPlan,
  cfgScale: number,
  shape: [number, number, number],
): VelocityFn {
  const count = positives.length;
  const per = shape[0] * shape[1] * shape[2];
  const flow = ms.flowFamily.flow;
  const subs: { start: number; n: number; velocity: VelocityFn }[] = [];
  for (let start = 0; start < count; start += MAX_NET_BATCH_IMAGES) {
    const n = Math.min(MAX_NET_BATCH_IMAGES, count - start);
    const idx = Array.from({ length: n }, (_, i) => start + i);
    const conds = plan.useCfg ? [...idx.map((i) => negatives[i]!), ...idx.map((i) => positives[i]!)] : idx.map((i) => positives[i]!);
    const all = conds.map((_, i) => i);
    const rows: FlowRows = { txt: gather(conds, all, 'txt'), pooled: gather(conds, all, 'pooled'), guidance: plan.guidance, height: shape[1], width: shape[2] };
    subs.push({ start, n, velocity: flow.velocity(run, rows) });
  }
  return async (x, sigma, step) => {
    const out = new Float32Array(x.length);
    for (const { start, n, velocity } of subs) {
      const mine = x.subarray(start * per, (start + n) * per);
      const input = plan.useCfg ? concat(mine, mine) : Float32Array.from(mine);
      const v = await velocity(input, sigma, step);
      if (v.length !== input.length) throw new KilnInputError('the transformer returned a prediction of the wrong size', 'model');
      const target = out.subarray(start * per, (start + n) * per);
      if (!plan.useCfg) target.set(v);
      else {
        const half = n * per;
        for (let k = 0; k < half; k++) target[k] = v[k]! + cfgScale * (v[half + k]! - v[k]!);
      }
    }
    return out;
  };
}

function concat(a: Float32Array, b: Float32Array): Float32Array {
  const out = new Float32Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}
