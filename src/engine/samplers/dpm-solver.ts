// DPM-Solver (Lu et al. 2022) "DPM fast" and "DPM adaptive" as in k-diffusion's DPMSolver class. They ignore the
// schedule's inner points: they integrate from sigmas[0] to the last sigma (sigma_min, never 0) in t = -log sigma,
// fast with a fixed budget of model evaluations (= steps), adaptive with an embedded error estimate.

import type { Denoiser } from './denoiser.ts';
import type { SamplerFn, SamplerContext } from './types.ts';
import { lincomb, ancestralStep } from './vec.ts';

const sigmaOf = (t: number) => Math.exp(-t);
const tOf = (sigma: number) => -Math.log(sigma);

type EpsCache = Map<string, Float32Array>;

class Solver {
  constructor(private readonly denoise: Denoiser) {}

  async eps(cache: EpsCache, key: string, x: Float32Array, t: number): Promise<Float32Array> {
    const hit = cache.get(key);
    if (hit) return hit;
    const sigma = sigmaOf(t);
    const denoised = await this.denoise(x, sigma);
    const e = lincomb([1 / sigma, x], [-1 / sigma, denoised]);
    cache.set(key, e);
    return e;
  }

  async step1(x: Float32Array, t: number, tNext: number, cache: EpsCache) {
    const h = tNext - t;
    const eps = await this.eps(cache, 'eps', x, t);
    return lincomb([1, x], [-sigmaOf(tNext) * Math.expm1(h), eps]);
  }

  async step2(x: Float32Array, t: number, tNext: number, cache: EpsCache, r1 = 1 / 2) {
    const h = tNext - t;
    const eps = await this.eps(cache, 'eps', x, t);
    const s1 = t + r1 * h;
    const u1 = lincomb([1, x], [-sigmaOf(s1) * Math.expm1(r1 * h), eps]);
    const epsR1 = await this.eps(cache, 'eps_r1', u1, s1);
    const k = sigmaOf(tNext) * Math.expm1(h);
    return lincomb([1, x], [-k + k / (2 * r1), eps], [-k / (2 * r1), epsR1]);
  }

  async step3(x: Float32Array, t: number, tNext: number, cache: EpsCache, r1 = 1 / 3, r2 = 2 / 3) {
    const h = tNext - t;
    const eps = await this.eps(cache, 'eps', x, t);
    const s1 = t + r1 * h;
    const s2 = t + r2 * h;
    const u1 = lincomb([1, x], [-sigmaOf(s1) * Math.expm1(r1 * h), eps]);
    const epsR1 = await this.eps(cache, 'eps_r1', u1, s1);
    const c2 = sigmaOf(s2) * (r2 / r1) * (Math.expm1(r2 * h) / (r2 * h) - 1);
    const u2 = lincomb([1, x], [-sigmaOf(s2) * Math.expm1(r2 * h) + c2, eps], [-c2, epsR1]);
    const epsR2 = await this.eps(cache, 'eps_r2', u2, s2);
    const c3 = (sigmaOf(tNext) / r2) * (Math.expm1(h) / h - 1);
    return lincomb([1, x], [-sigmaOf(tNext) * Math.expm1(h) + c3, eps], [-c3, epsR2]);
  }
}

function range(sigmas: readonly number[]): { sigmaMax: number; sigmaMin: number } {
  const positive = sigmas.filter((s) => s > 0);
  return { sigmaMax: positive[0]!, sigmaMin: positive[positive.length - 1]! };
}

/** Ancestral split of [t, tNext] for eta > 0 (k-diffusion): returns the deterministic target and the noise amount. */
function etaSplit(t: number, tNext: number, tEnd: number, eta: number): { tTarget: number; su: number } {
  if (!eta) return { tTarget: tNext, su: 0 };
  const { down } = ancestralStep(sigmaOf(t), sigmaOf(tNext), eta);
  const tTarget = Math.min(tEnd, tOf(down));
  const su = Math.sqrt(Math.max(sigmaOf(tNext) ** 2 - sigmaOf(tTarget) ** 2, 0));
  return { tTarget, su };
}

export const dpmFast: SamplerFn = async (denoise, x, sigmas, ctx) => {
  const { eta, sNoise } = ctx.options;
  const nfe = sigmas.length - 1;
  const { sigmaMax, sigmaMin } = range(sigmas);
  const tStart = tOf(sigmaMax);
  const tEnd = tOf(sigmaMin);
  const solver = new Solver(denoise);
  const m = Math.floor(nfe / 3) + 1;
  const ts = Array.from({ length: m + 1 }, (_, i) => tStart + ((tEnd - tStart) * i) / m);
  const orders = nfe % 3 === 0 ? [...Array(m - 2).fill(3), 2, 1] : [...Array(m - 1).fill(3), nfe % 3];
  for (let i = 0; i < orders.length; i++) {
    const cache: EpsCache = new Map();
    const { tTarget, su } = etaSplit(ts[i]!, ts[i + 1]!, tEnd, eta);
    if (orders[i] === 1) x = await solver.step1(x, ts[i]!, tTarget, cache);
    else if (orders[i] === 2) x = await solver.step2(x, ts[i]!, tTarget, cache);
    else x = await solver.step3(x, ts[i]!, tTarget, cache);
    if (su > 0) x = lincomb([1, x], [su * sNoise, ctx.noise()]);
  }
  return x;
};

/** k-diffusion's PID step-size controller. */
class PidController {
  private errs: number[] = [];
  constructor(
    public h: number,
    private readonly b1: number,
    private readonly b2: number,
    private readonly b3: number,
    private readonly acceptSafety: number,
  ) {}
  propose(error: number): boolean {
    const inv = 1 / (error + 1e-8);
    if (this.errs.length === 0) this.errs = [inv, inv, inv];
    this.errs[0] = inv;
    let factor = this.errs[0] ** this.b1 * this.errs[1]! ** this.b2 * this.errs[2]! ** this.b3;
    factor = 1 + Math.atan(factor - 1);
    const accept = factor >= this.acceptSafety;
    if (accept) {
      this.errs[2] = this.errs[1]!;
      this.errs[1] = this.errs[0];
    }
    this.h *= factor;
    return accept;
  }
}

/** DPM adaptive with k-diffusion's defaults (order 3, rtol 0.05, atol 0.0078, h_init 0.05, I-controller). */
export const dpmAdaptive: SamplerFn = async (denoise, x, sigmas, ctx: SamplerContext) => {
  const { eta, sNoise } = ctx.options;
  const order = ctx.options.order ?? 3;
  const rtol = 0.05;
  const atol = 0.0078;
  const { sigmaMax, sigmaMin } = range(sigmas);
  const tStart = tOf(sigmaMax);
  const tEnd = tOf(sigmaMin);
  const solver = new Solver(denoise);
  const pcoeff = 0;
  const icoeff = 1;
  const dcoeff = 0;
  const ord = eta ? 1.5 : order;
  const pid = new PidController(0.05, (pcoeff + icoeff + dcoeff) / ord, -(pcoeff + 2 * dcoeff) / ord, dcoeff / ord, 0.81);
  let s = tStart;
  let xPrev = x;
  while (s < tEnd - 1e-5) {
    const cache: EpsCache = new Map();
    const t = Math.min(tEnd, s + pid.h);
    const { tTarget, su } = etaSplit(s, t, tEnd, eta);
    let xLow: Float32Array;
    let xHigh: Float32Array;
    if (order === 2) {
      xLow = await solver.step1(x, s, tTarget, cache);
      xHigh = await solver.step2(x, s, tTarget, cache);
    } else {
      xLow = await solver.step2(x, s, tTarget, cache, 1 / 3);
      xHigh = await solver.step3(x, s, tTarget, cache);
    }
    let sq = 0;
    for (let i = 0; i < x.length; i++) {
      const delta = Math.max(atol, rtol * Math.max(Math.abs(xLow[i]!), Math.abs(xPrev[i]!)));
      const e = (xLow[i]! - xHigh[i]!) / delta;
      sq += e * e;
    }
    const error = Math.sqrt(sq) / Math.sqrt(x.length);
    if (pid.propose(error)) {
      xPrev = xLow;
      x = su > 0 ? lincomb([1, xHigh], [su * sNoise, ctx.noise()]) : xHigh;
      s = t;
    }
  }
  return x;
};
