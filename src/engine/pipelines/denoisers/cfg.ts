// Classifier-free guidance around the diffusion network: prediction = uncond + cfg * (cond - uncond), on the
// network's raw predictions (as diffusers does), batched in bounded sub-batches. The result is a k-diffusion
// denoiser built by the model's family (eps / v prediction).
import type { Tiling } from '../../api.ts';
import type { DiffusionExtras } from '../../families/types.ts';
import type { Tensor } from '../../tensor.ts';
import { runSession, type Feed } from '../../runtime.ts';
import type { Denoiser, ModelSchedule, TimestepMode } from '../../samplers/index.ts';
import { withConcatChannels, type ConcatChannels } from '../../families/unet-feeds.ts';
import type { BatchConditioning } from '../conditioning.ts';
import type { ModelSessions, StepReuseSessions } from '../model-sessions.ts';
import { UNET_IO } from '../../nets/unet.ts';

/** How many images share one network call (x2 for CFG); larger batches are split so memory stays bounded. */
export const MAX_NET_BATCH_IMAGES = 4;

export interface GuidanceSettings {
  cfgScale: number;
  /** Images in the batch; the conditioning holds 2 x count rows. */
  count: number;
  /** Latent shape of one image [C, h, w]. */
  shape: [number, number, number];
  schedule: ModelSchedule;
  timestepMode: TimestepMode;
  extras: DiffusionExtras;
  /** Seamless tiling: the network runs as its tiled graph variant. */
  tiling?: Tiling;
  /** Inpainting UNets: extra input channels [count, channels, h, w] after the latent (unet-feeds.ts). */
  concat?: ConcatChannels;
  /**
   * Step reuse (DeepCache): every `interval`-th evaluation (the first included) runs the whole UNet and keeps its
   * deep feature at `branch`; the others run only the shallow graph on it. Off when absent.
   */
  reuse?: { interval: number; branch: number };
  /** Test hook: each evaluation's scaled latent input. */
  onInput?: (xScaled: Float32Array, sigma: number) => void;
}

export function cfgDenoiser(ms: ModelSessions, cond: BatchConditioning, s: GuidanceSettings): Denoiser {
  const { count, shape } = s;
  const feeds = ms.unetFamily.diffusion;
  const per = shape[0] * shape[1] * shape[2];
  const [, tokens, dim] = cond.hidden.shape as [number, number, number];
  // As diffusers: guidance only above 1. Distilled models (SDXL Turbo/Lightning, LCM) run with cfg 0 or 1 and
  // then need no negative batch at all, which halves the network's work.
  const useCfg = s.cfgScale > 1;
  // The conditioning of each sub-batch is the same at every step: gather it once.
  const subBatches: { start: number; n: number; rows: number[]; condition: Record<string, Feed> }[] = [];
  for (let start = 0; start < count; start += MAX_NET_BATCH_IMAGES) {
    const n = Math.min(MAX_NET_BATCH_IMAGES, count - start);
    const imgs = Array.from({ length: n }, (_, i) => start + i);
    // Rows of the conditioning batch: negatives are 0..count-1, positives count..2count-1.
    const rows = useCfg ? [...imgs, ...imgs.map((i) => i + count)] : imgs.map((i) => i + count);
    const hidden = new Float32Array(rows.length * tokens * dim);
    rows.forEach((r, j) => hidden.set(cond.hidden.data.subarray(r * tokens * dim, (r + 1) * tokens * dim), j * tokens * dim));
    let pooled: Tensor | undefined;
    if (cond.pooled) {
      const pdim = cond.pooled.shape[1]!;
      const data = new Float32Array(rows.length * pdim);
      rows.forEach((r, j) => data.set(cond.pooled!.data.subarray(r * pdim, (r + 1) * pdim), j * pdim));
      pooled = { shape: [rows.length, pdim], data };
    }
    const condition = feeds.conditionFeeds(
      { hidden: { shape: [rows.length, tokens, dim], data: hidden }, pooled, negative: rows.map((r) => r < count) },
      s.extras,
    );
    subBatches.push({ start, n, rows, condition });
  }
  // Asked once per generation: an int8 UNet moves from calibration to int8 between generations, never within one.
  let unet: ReturnType<typeof ms.unet> | undefined;
  let reuseSessions: Promise<StepReuseSessions | undefined> | undefined;
  // Step reuse: each sub-batch's deep feature from its last whole evaluation.
  const features: (Tensor | undefined)[] = [];
  let evaluation = 0;
  const network = async (xScaled: Float32Array, timestep: number, sigma: number): Promise<Float32Array> => {
    if (s.reuse) reuseSessions ??= ms.unetReuse(s.reuse.branch, s.tiling);
    const reuse = await reuseSessions;
    const whole = !s.reuse || evaluation % s.reuse.interval === 0;
    evaluation++;
    if (!reuse) unet ??= ms.unet(s.tiling);
    const session = reuse ? undefined : await unet;
    s.onInput?.(xScaled, sigma);
    const out = new Float32Array(xScaled.length);
    for (const { start, n, rows, condition } of subBatches) {
      const batch = rows.length;
      const sample = new Float32Array(batch * per);
      rows.forEach((r, j) => sample.set(xScaled.subarray((r % count) * per, ((r % count) + 1) * per), j * per));
      const input = s.concat
        ? withConcatChannels(
            sample,
            rows.map((r) => r % count),
            shape,
            s.concat,
          )
        : { shape: [batch, ...shape], data: sample };
      const step = feeds.stepFeeds(input, { timestep, sigma }, condition);
      let result: Record<string, Tensor>;
      const cached = features[start];
      if (!reuse) result = await runSession(session!, step);
      else if (!whole && cached) result = await runSession(reuse.shallow, { ...step, [UNET_IO.deepFeature]: cached });
      else {
        result = await runSession(reuse.full, step);
        features[start] = result[UNET_IO.deepFeature];
      }
      const pred = result[feeds.output]!.data;
      for (let i = 0; i < n; i++) {
        const target = out.subarray((start + i) * per, (start + i + 1) * per);
        if (!useCfg) {
          target.set(pred.subarray(i * per, (i + 1) * per));
          continue;
        }
        const u = pred.subarray(i * per, (i + 1) * per);
        const c = pred.subarray((n + i) * per, (n + i + 1) * per);
        for (let k = 0; k < per; k++) target[k] = u[k]! + s.cfgScale * (c[k]! - u[k]!);
      }
    }
    return out;
  };
  const prediction = ms.model.prediction;
  if (prediction === 'flow') throw new Error('internal error: a flow model runs through pipelines/flow-generate.ts');
  return ms.unetFamily.denoiser(network, { prediction, schedule: s.schedule, timestep: s.timestepMode });
}
