// Wraps a raw UNet call as a k-diffusion denoiser D(x, sigma) -> predicted clean sample x0, in sigma space
// (x = x0 + sigma * noise). This is where epsilon- and v-prediction differ; samplers never see the difference.

import type { ModelSchedule } from './model-schedule.ts';
import { sigmaToT } from './model-schedule.ts';

export type Denoiser = (x: Float32Array, sigma: number) => Promise<Float32Array>;

/** The raw network: input already scaled to unit variance (VP space), discrete timestep t; returns eps, v or x0. */
export type ModelFn = (xScaled: Float32Array, timestep: number, sigma: number) => Promise<Float32Array>;

export type Prediction = 'epsilon' | 'v_prediction' | 'sample';

/**
 * `interpolate` (A1111/k-diffusion default): t is fractional, interpolated over log sigma.
 * `round`: t rounded to the nearest trained timestep, as diffusers' DPM-Solver/UniPC feed the UNet and as ComfyUI
 * always does.
 */
export type TimestepMode = 'interpolate' | 'round';

export interface DenoiserOptions {
  prediction: Prediction;
  schedule: ModelSchedule;
  timestep?: TimestepMode;
}

export function makeDenoiser(modelFn: ModelFn, opts: DenoiserOptions): Denoiser {
  const mode = opts.timestep ?? 'interpolate';
  return async (x, sigma) => {
    let t = sigmaToT(opts.schedule, sigma);
    if (mode === 'round') t = Math.round(t);
    const cIn = 1 / Math.sqrt(sigma * sigma + 1);
    const scaled = new Float32Array(x.length);
    for (let i = 0; i < x.length; i++) scaled[i] = x[i]! * cIn;
    const out = await modelFn(scaled, t, sigma);
    if (out.length !== x.length) throw new Error(`model returned ${out.length} values for ${x.length} inputs`);
    const x0 = new Float32Array(x.length);
    if (opts.prediction === 'epsilon') {
      for (let i = 0; i < x.length; i++) x0[i] = x[i]! - sigma * out[i]!;
    } else if (opts.prediction === 'v_prediction') {
      // k-diffusion CompVisVDenoiser with sigma_data = 1.
      const cSkip = 1 / (sigma * sigma + 1);
      const cOut = -sigma * cIn;
      for (let i = 0; i < x.length; i++) x0[i] = cSkip * x[i]! + cOut * out[i]!;
    } else {
      x0.set(out);
    }
    return x0;
  };
}
