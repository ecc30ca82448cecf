// The k-diffusion samplers (Karras et al. 2022; DPM-Solver++ by Lu et al.) in sigma space, as A1111 and ComfyUI
// run them. Each is a short loop over the schedule; progress and cancellation live in the wrapped denoiser.

import type { SamplerFn } from './types.ts';
import { lincomb, toD, ancestralStep } from './vec.ts';

/** Karras churn factor gamma for step i (A1111 applies it to Euler, Heun and DPM2). */
function churnGamma(sigmas: readonly number[], i: number, o: { sChurn: number; sTmin: number; sTmax: number }): number {
  const s = sigmas[i]!;
  return o.sTmin <= s && s <= o.sTmax ? Math.min(o.sChurn / (sigmas.length - 1), Math.SQRT2 - 1) : 0;
}

/**
 * Adds churn noise if gamma > 0 and returns the raised sigma. Euler draws the noise on every step even without
 * churn (`alwaysDraw`), as diffusers' EulerDiscreteScheduler and k-diffusion's sample_euler do, so the generator
 * stream stays aligned with theirs; diffusers' Heun and KDPM2 never draw.
 */
function applyChurn(
  x: Float32Array,
  sigmas: readonly number[],
  i: number,
  ctx: Parameters<SamplerFn>[3],
  alwaysDraw: boolean,
): { x: Float32Array; sigmaHat: number } {
  const gamma = churnGamma(sigmas, i, ctx.options);
  const eps = gamma > 0 || alwaysDraw ? ctx.noise() : null;
  const sigmaHat = sigmas[i]! * (gamma + 1);
  if (gamma > 0 && eps) {
    const k = ctx.options.sNoise * Math.sqrt(sigmaHat * sigmaHat - sigmas[i]! * sigmas[i]!);
    x = lincomb([1, x], [k, eps]);
  }
  return { x, sigmaHat };
}

export const euler: SamplerFn = async (denoise, x, sigmas, ctx) => {
  for (let i = 0; i < sigmas.length - 1; i++) {
    const c = applyChurn(x, sigmas, i, ctx, true);
    x = c.x;
    const denoised = await denoise(x, c.sigmaHat);
    const d = toD(x, c.sigmaHat, denoised);
    x = lincomb([1, x], [sigmas[i + 1]! - c.sigmaHat, d]);
  }
  return x;
};

export const eulerAncestral: SamplerFn = async (denoise, x, sigmas, ctx) => {
  const { eta, sNoise } = ctx.options;
  for (let i = 0; i < sigmas.length - 1; i++) {
    const denoised = await denoise(x, sigmas[i]!);
    const { down, up } = ancestralStep(sigmas[i]!, sigmas[i + 1]!, eta);
    const d = toD(x, sigmas[i]!, denoised);
    x = lincomb([1, x], [down - sigmas[i]!, d]);
    if (sigmas[i + 1]! > 0) x = lincomb([1, x], [sNoise * up, ctx.noise()]);
  }
  return x;
};

export const heun: SamplerFn = async (denoise, x, sigmas, ctx) => {
  for (let i = 0; i < sigmas.length - 1; i++) {
    const c = applyChurn(x, sigmas, i, ctx, false);
    x = c.x;
    const denoised = await denoise(x, c.sigmaHat);
    const d = toD(x, c.sigmaHat, denoised);
    const dt = sigmas[i + 1]! - c.sigmaHat;
    if (sigmas[i + 1] === 0) {
      x = lincomb([1, x], [dt, d]);
    } else {
      const x2 = lincomb([1, x], [dt, d]);
      const d2 = toD(x2, sigmas[i + 1]!, await denoise(x2, sigmas[i + 1]!));
      x = lincomb([1, x], [dt / 2, d], [dt / 2, d2]);
    }
  }
  return x;
};

const logMid = (a: number, b: number) => Math.exp((Math.log(a) + Math.log(b)) / 2);

export const dpm2: SamplerFn = async (denoise, x, sigmas, ctx) => {
  for (let i = 0; i < sigmas.length - 1; i++) {
    const c = applyChurn(x, sigmas, i, ctx, false);
    x = c.x;
    const denoised = await denoise(x, c.sigmaHat);
    const d = toD(x, c.sigmaHat, denoised);
    if (sigmas[i + 1] === 0) {
      x = lincomb([1, x], [sigmas[i + 1]! - c.sigmaHat, d]);
    } else {
      const sigmaMid = logMid(c.sigmaHat, sigmas[i + 1]!);
      const x2 = lincomb([1, x], [sigmaMid - c.sigmaHat, d]);
      const d2 = toD(x2, sigmaMid, await denoise(x2, sigmaMid));
      x = lincomb([1, x], [sigmas[i + 1]! - c.sigmaHat, d2]);
    }
  }
  return x;
};

export const dpm2Ancestral: SamplerFn = async (denoise, x, sigmas, ctx) => {
  const { eta, sNoise } = ctx.options;
  for (let i = 0; i < sigmas.length - 1; i++) {
    const denoised = await denoise(x, sigmas[i]!);
    const { down, up } = ancestralStep(sigmas[i]!, sigmas[i + 1]!, eta);
    const d = toD(x, sigmas[i]!, denoised);
    if (down === 0) {
      x = lincomb([1, x], [down - sigmas[i]!, d]);
    } else {
      const sigmaMid = logMid(sigmas[i]!, down);
      const x2 = lincomb([1, x], [sigmaMid - sigmas[i]!, d]);
      const d2 = toD(x2, sigmaMid, await denoise(x2, sigmaMid));
      x = lincomb([1, x], [down - sigmas[i]!, d2]);
    }
    if (sigmas[i + 1]! > 0) x = lincomb([1, x], [sNoise * up, ctx.noise()]);
  }
  return x;
};

/** k-diffusion linear_multistep_coeff: integral over [t_i, t_{i+1}] of the Lagrange basis polynomial j. */
function lmsCoeff(order: number, t: readonly number[], i: number, j: number): number {
  const basis = (tau: number) => {
    let prod = 1;
    for (let k = 0; k < order; k++) {
      if (k === j) continue;
      prod *= (tau - t[i - k]!) / (t[i - j]! - t[i - k]!);
    }
    return prod;
  };
  // 5-point Gauss-Legendre is exact for these polynomials (degree <= 3).
  const nodes = [0, -0.5384693101056831, 0.5384693101056831, -0.906179845938664, 0.906179845938664];
  const weights = [0.5688888888888889, 0.4786286704993665, 0.4786286704993665, 0.2369268850561891, 0.2369268850561891];
  const a = t[i]!;
  const b = t[i + 1]!;
  let sum = 0;
  for (let k = 0; k < nodes.length; k++) sum += weights[k]! * basis(((b - a) * nodes[k]! + (a + b)) / 2);
  return (sum * (b - a)) / 2;
}

export const lms: SamplerFn = async (denoise, x, sigmas) => {
  const order = 4;
  const ds: Float32Array[] = [];
  for (let i = 0; i < sigmas.length - 1; i++) {
    const denoised = await denoise(x, sigmas[i]!);
    ds.push(toD(x, sigmas[i]!, denoised));
    if (ds.length > order) ds.shift();
    const curOrder = Math.min(i + 1, order);
    const terms: [number, Float32Array][] = [[1, x]];
    for (let j = 0; j < curOrder; j++) terms.push([lmsCoeff(curOrder, sigmas, i, j), ds[ds.length - 1 - j]!]);
    x = lincomb(...terms);
  }
  return x;
};

// DPM-Solver++ family: time variable t = -log(sigma).
const tOf = (sigma: number) => -Math.log(sigma);
const sigmaOf = (t: number) => Math.exp(-t);

export const dpmpp2sAncestral: SamplerFn = async (denoise, x, sigmas, ctx) => {
  const { eta, sNoise } = ctx.options;
  for (let i = 0; i < sigmas.length - 1; i++) {
    const denoised = await denoise(x, sigmas[i]!);
    const { down, up } = ancestralStep(sigmas[i]!, sigmas[i + 1]!, eta);
    if (down === 0) {
      x = lincomb([1, x], [down - sigmas[i]!, toD(x, sigmas[i]!, denoised)]);
    } else {
      const t = tOf(sigmas[i]!);
      const tNext = tOf(down);
      const h = tNext - t;
      const s = t + h / 2;
      const x2 = lincomb([sigmaOf(s) / sigmaOf(t), x], [-Math.expm1(-h / 2), denoised]);
      const denoised2 = await denoise(x2, sigmaOf(s));
      x = lincomb([sigmaOf(tNext) / sigmaOf(t), x], [-Math.expm1(-h), denoised2]);
    }
    if (sigmas[i + 1]! > 0) x = lincomb([1, x], [sNoise * up, ctx.noise()]);
  }
  return x;
};

export const dpmpp2m: SamplerFn = async (denoise, x, sigmas) => {
  let oldDenoised: Float32Array | null = null;
  for (let i = 0; i < sigmas.length - 1; i++) {
    const denoised = await denoise(x, sigmas[i]!);
    if (sigmas[i + 1] === 0) {
      x = denoised;
    } else {
      const t = tOf(sigmas[i]!);
      const tNext = tOf(sigmas[i + 1]!);
      const h = tNext - t;
      const ratio = sigmas[i + 1]! / sigmas[i]!;
      if (oldDenoised === null) {
        x = lincomb([ratio, x], [-Math.expm1(-h), denoised]);
      } else {
        const r = (t - tOf(sigmas[i - 1]!)) / h;
        const k = -Math.expm1(-h);
        x = lincomb([ratio, x], [k * (1 + 1 / (2 * r)), denoised], [-k / (2 * r), oldDenoised]);
      }
    }
    oldDenoised = denoised;
  }
  return x;
};

/**
 * The sigmas k-diffusion's dpmpp_sde hands its noise sampler: sigma_fn(t), sigma_fn(s) and sigma_fn(t_next),
 * recomputed through t = -log(sigma) in float32 tensors, so they can differ from the schedule by an ulp (a
 * Brownian tree sees that difference).
 */
function dpmppSdeQuerySigmas(sigma: number, sigmaNext: number, r: number): { atT: number; atS: number; atNext: number } {
  const f = Math.fround;
  const t = -f(Math.log(f(sigma)));
  const tNext = -f(Math.log(f(sigmaNext)));
  const h = f(tNext - t);
  const s = f(t + f(h * r));
  return { atT: f(Math.exp(-t)), atS: f(Math.exp(-s)), atNext: f(Math.exp(-tNext)) };
}

/** DPM++ SDE (k-diffusion dpmpp_sde, r = 1/2); A1111 feeds it Brownian-tree noise (ctx.noise gets the step). */
export const dpmppSde: SamplerFn = async (denoise, x, sigmas, ctx) => {
  const { eta, sNoise } = ctx.options;
  const r = 1 / 2;
  for (let i = 0; i < sigmas.length - 1; i++) {
    const denoised = await denoise(x, sigmas[i]!);
    if (sigmas[i + 1] === 0) {
      x = lincomb([1, x], [sigmas[i + 1]! - sigmas[i]!, toD(x, sigmas[i]!, denoised)]);
      continue;
    }
    const t = tOf(sigmas[i]!);
    const tNext = tOf(sigmas[i + 1]!);
    const h = tNext - t;
    const s = t + h * r;
    const fac = 1 / (2 * r);
    // Step 1
    const a1 = ancestralStep(sigmaOf(t), sigmaOf(s), eta);
    const s1 = tOf(a1.down);
    let x2 = lincomb([sigmaOf(s1) / sigmaOf(t), x], [-Math.expm1(t - s1), denoised]);
    const q = dpmppSdeQuerySigmas(sigmas[i]!, sigmas[i + 1]!, r);
    if (a1.up > 0 || eta) x2 = lincomb([1, x2], [sNoise * a1.up, ctx.noise(q.atT, q.atS)]);
    const denoised2 = await denoise(x2, sigmaOf(s));
    // Step 2
    const a2 = ancestralStep(sigmaOf(t), sigmaOf(tNext), eta);
    const tNext2 = tOf(a2.down);
    const k = -Math.expm1(t - tNext2);
    x = lincomb([sigmaOf(tNext2) / sigmaOf(t), x], [k * (1 - fac), denoised], [k * fac, denoised2]);
    if (a2.up > 0 || eta) x = lincomb([1, x], [sNoise * a2.up, ctx.noise(q.atT, q.atNext)]);
  }
  return x;
};

function dpmpp2mSdeWith(solver: 'midpoint' | 'heun'): SamplerFn {
  return async (denoise, x, sigmas, ctx) => {
    const { eta, sNoise } = ctx.options;
    let oldDenoised: Float32Array | null = null;
    let hLast = 0;
    for (let i = 0; i < sigmas.length - 1; i++) {
      const denoised = await denoise(x, sigmas[i]!);
      if (sigmas[i + 1] === 0) {
        x = denoised;
      } else {
        const h = tOf(sigmas[i + 1]!) - tOf(sigmas[i]!);
        const etaH = eta * h;
        const k = -Math.expm1(-h - etaH);
        const terms: [number, Float32Array][] = [
          [(sigmas[i + 1]! / sigmas[i]!) * Math.exp(-etaH), x],
          [k, denoised],
        ];
        if (oldDenoised !== null) {
          const r = hLast / h;
          const c = solver === 'heun' ? (k / (-h - etaH) + 1) * (1 / r) : 0.5 * k * (1 / r);
          terms[1]![0] += c;
          terms.push([-c, oldDenoised]);
        }
        x = lincomb(...terms);
        if (eta) x = lincomb([1, x], [sigmas[i + 1]! * Math.sqrt(-Math.expm1(-2 * etaH)) * sNoise, ctx.noise(sigmas[i]!, sigmas[i + 1]!)]);
        hLast = h;
      }
      oldDenoised = denoised;
    }
    return x;
  };
}

export const dpmpp2mSde = dpmpp2mSdeWith('midpoint');
export const dpmpp2mSdeHeun = dpmpp2mSdeWith('heun');

export const dpmpp3mSde: SamplerFn = async (denoise, x, sigmas, ctx) => {
  const { eta, sNoise } = ctx.options;
  let d1: Float32Array | null = null; // denoised one step back
  let d2: Float32Array | null = null; // two steps back
  let h1: number | null = null;
  let h2: number | null = null;
  for (let i = 0; i < sigmas.length - 1; i++) {
    const denoised = await denoise(x, sigmas[i]!);
    let h: number | null = null;
    if (sigmas[i + 1] === 0) {
      x = denoised;
    } else {
      h = tOf(sigmas[i + 1]!) - tOf(sigmas[i]!);
      const hEta = h * (eta + 1);
      x = lincomb([Math.exp(-hEta), x], [-Math.expm1(-hEta), denoised]);
      const phi2 = Math.expm1(-hEta) / hEta + 1;
      if (h2 !== null && d1 && d2 && h1 !== null) {
        const r0 = h1 / h;
        const r1 = h2 / h;
        // d1_0 = (D - D1)/r0, d1_1 = (D1 - D2)/r1; d1 = d1_0 + (d1_0 - d1_1) r0/(r0+r1); d2 = (d1_0 - d1_1)/(r0+r1)
        const phi3 = phi2 / hEta - 0.5;
        const a = 1 / r0;
        const b = 1 / r1;
        const w = r0 / (r0 + r1);
        const v = 1 / (r0 + r1);
        // Coefficients of D, D1, D2 in phi2*d1 - phi3*d2.
        const cD = phi2 * (a + w * a) - phi3 * v * a;
        const cD1 = phi2 * (-a - w * (a + b)) - phi3 * v * (-a - b);
        const cD2 = phi2 * (w * b) - phi3 * v * b;
        x = lincomb([1, x], [cD, denoised], [cD1, d1], [cD2, d2]);
      } else if (h1 !== null && d1) {
        const r = h1 / h;
        x = lincomb([1, x], [phi2 / r, denoised], [-phi2 / r, d1]);
      }
      if (eta) x = lincomb([1, x], [sigmas[i + 1]! * Math.sqrt(-Math.expm1(-2 * h * eta)) * sNoise, ctx.noise(sigmas[i]!, sigmas[i + 1]!)]);
    }
    d2 = d1;
    d1 = denoised;
    h2 = h1;
    h1 = h;
  }
  return x;
};

/** LCM (k-diffusion/ComfyUI sample_lcm): jump to the prediction, re-noise to the next level with fresh noise. */
export const lcm: SamplerFn = async (denoise, x, sigmas, ctx) => {
  for (let i = 0; i < sigmas.length - 1; i++) {
    x = await denoise(x, sigmas[i]!);
    if (sigmas[i + 1]! > 0) x = lincomb([1, x], [sigmas[i + 1]!, ctx.noise()]);
  }
  return x;
};
