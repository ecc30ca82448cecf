// Stage 3, denoising: one or more passes of the sampler. A pass is a guided model (as a k-diffusion denoiser),
// the sigmas it walks, and the wrappers around it (refiner switch, preview tap; later inpaint blending,
// ControlNet residuals). A hires fix is a second pass after an upscale of the first pass's latents.
import { countEvals, runSampler, type Denoiser, type NoiseSource, type SamplerId, type SamplerOptions } from '../samplers/index.ts';

/** Wraps a denoiser in a behaviour that sees every evaluation: (inner) => denoiser. */
export type DenoiserWrapper = (inner: Denoiser) => Denoiser;

export interface DenoisePass {
  /** The model under guidance, as a denoiser D(x, sigma) -> x0 (denoisers/cfg.ts). */
  model: Denoiser;
  /** Descending sigmas to walk; one sigma means nothing to do. */
  sigmas: number[];
  /** Applied in order around `model` (the first is innermost). */
  wrappers: DenoiserWrapper[];
}

export interface SamplingRun {
  sampler: SamplerId;
  /** Fresh unit noise shaped like x, for stochastic samplers (sampler-noise.ts). */
  noise: NoiseSource;
  options: SamplerOptions;
  signal?: AbortSignal;
  /** After every model evaluation: evaluations done and planned, over all passes. */
  onEval?: (done: number, total: number) => void;
}

/** Model evaluations planned over all passes. */
export function plannedEvals(sampler: SamplerId, passes: readonly DenoisePass[]): number {
  return passes.reduce((sum, p) => sum + countEvals(sampler, p.sigmas), 0);
}

/** Runs the passes in order from x (at the first pass's first sigma); returns x at the last pass's last sigma. */
export async function runDenoisePasses(passes: readonly DenoisePass[], x: Float32Array, run: SamplingRun): Promise<Float32Array> {
  const total = plannedEvals(run.sampler, passes);
  let before = 0;
  for (const pass of passes) {
    const planned = countEvals(run.sampler, pass.sigmas);
    if (pass.sigmas.length > 1) {
      const denoise = pass.wrappers.reduce<Denoiser>((inner, wrap) => wrap(inner), pass.model);
      x = await runSampler(run.sampler, {
        denoise,
        x,
        sigmas: pass.sigmas,
        noise: run.noise,
        options: run.options,
        signal: run.signal,
        onProgress: (done, passTotal) => run.onEval?.(before + done, total - planned + passTotal),
      });
    }
    before += planned;
  }
  return x;
}
