// Samplers that diffusers/CompVis define over discrete timesteps (DDIM, PLMS, UniPC), rewritten in sigma space as
// A1111 1.6+ and ComfyUI do: with x_sigma = x_vp / sqrt(alpha_cumprod) and eps = (x - x0) / sigma, the DDIM update
// is an Euler step in sigma, so the VP formulas map one to one. Their schedules end at sigma(t=0) (alpha_cumprod[0],
// set_alpha_to_one=false) rather than 0; the runner supplies that final sigma.

import type { SamplerFn } from './types.ts';
import { lincomb, toD } from './vec.ts';

/** DDIM (Song et al.); eta > 0 adds the stochastic term. */
export const ddim: SamplerFn = async (denoise, x, sigmas, ctx) => {
  const { eta } = ctx.options;
  for (let i = 0; i < sigmas.length - 1; i++) {
    const sigma = sigmas[i]!;
    const next = sigmas[i + 1]!;
    const denoised = await denoise(x, sigma);
    const eps = toD(x, sigma, denoised);
    if (!eta) {
      x = lincomb([1, denoised], [next, eps]);
      continue;
    }
    const aT = 1 / (1 + sigma * sigma);
    const aPrev = 1 / (1 + next * next);
    const sigmaT = eta * Math.sqrt(((1 - aPrev) / (1 - aT)) * (1 - aT / aPrev));
    const dir = Math.sqrt(Math.max(1 - aPrev - sigmaT * sigmaT, 0) / aPrev);
    x = lincomb([1, denoised], [dir, eps], [sigmaT / Math.sqrt(aPrev), ctx.noise()]);
  }
  return x;
};

/** PLMS / PNDM with skip_prk_steps: a Heun start, then Adams-Bashforth on eps of orders 2, 3, 4. */
export const plms: SamplerFn = async (denoise, x, sigmas) => {
  const oldEps: Float32Array[] = [];
  for (let i = 0; i < sigmas.length - 1; i++) {
    const sigma = sigmas[i]!;
    const next = sigmas[i + 1]!;
    const eps = toD(x, sigma, await denoise(x, sigma));
    let epsPrime: Float32Array;
    const n = oldEps.length;
    if (n === 0) {
      if (next > 0) {
        const xPrev = lincomb([1, x], [next - sigma, eps]);
        const epsNext = toD(xPrev, next, await denoise(xPrev, next));
        epsPrime = lincomb([0.5, eps], [0.5, epsNext]);
      } else {
        epsPrime = eps;
      }
    } else if (n === 1) {
      epsPrime = lincomb([3 / 2, eps], [-1 / 2, oldEps[0]!]);
    } else if (n === 2) {
      epsPrime = lincomb([23 / 12, eps], [-16 / 12, oldEps[1]!], [5 / 12, oldEps[0]!]);
    } else {
      epsPrime = lincomb([55 / 24, eps], [-59 / 24, oldEps[2]!], [37 / 24, oldEps[1]!], [-9 / 24, oldEps[0]!]);
    }
    x = lincomb([1, x], [next - sigma, epsPrime]);
    oldEps.push(eps);
    if (oldEps.length > 3) oldEps.shift();
  }
  return x;
};

/** Solves A y = b for a small dense system (Gaussian elimination with partial pivoting). */
function solve(a: number[][], b: number[]): number[] {
  const n = b.length;
  const m = a.map((row, i) => [...row.slice(0, n), b[i]]);
  for (let c = 0; c < n; c++) {
    let p = c;
    for (let r = c + 1; r < n; r++) if (Math.abs(m[r]![c]!) > Math.abs(m[p]![c]!)) p = r;
    [m[c], m[p]] = [m[p]!, m[c]!];
    for (let r = c + 1; r < n; r++) {
      const k = m[r]![c]! / m[c]![c]!;
      for (let k2 = c; k2 <= n; k2++) m[r]![k2]! -= k * m[c]![k2]!;
    }
  }
  const y = new Array<number>(n).fill(0);
  for (let r = n - 1; r >= 0; r--) {
    let s = m[r]![n]!;
    for (let c = r + 1; c < n; c++) s -= m[r]![c]! * y[c]!;
    y[r] = s / m[r]![r]!;
  }
  return y;
}

const lambdaOf = (sigma: number) => -Math.log(sigma);

/** UniPC's R matrix rows and b vector (data prediction, hh = -h). */
function uniPcSystem(rks: number[], hh: number, variant: 'bh1' | 'bh2', order: number) {
  const hPhi1 = Math.expm1(hh);
  let hPhiK = hPhi1 / hh - 1;
  let factorial = 1;
  const bH = variant === 'bh1' ? hh : Math.expm1(hh);
  const R: number[][] = [];
  const b: number[] = [];
  for (let i = 1; i <= order; i++) {
    R.push(rks.map((r) => r ** (i - 1)));
    b.push((hPhiK * factorial) / bH);
    factorial *= i + 1;
    hPhiK = hPhiK / hh - 1 / factorial;
  }
  return { R, b, hPhi1, bH };
}

/**
 * UniPC (Zhao et al. 2023), multistep predictor + corrector on the data prediction, as diffusers'
 * UniPCMultistepScheduler (solver_order, bh1/bh2, lower_order_final).
 */
export const uniPc: SamplerFn = async (denoise, x, sigmas, ctx) => {
  const order = ctx.options.order ?? 2;
  const variant = ctx.options.uniPcVariant;
  const steps = sigmas.length - 1;
  const outs: Float32Array[] = []; // data predictions, most recent last; outs[k] was made at sigmaOfOut[k]
  const sigmaOfOut: number[] = [];
  let lastSample: Float32Array | null = null;
  let thisOrder = 1;
  let lowerOrderNums = 0;

  for (let i = 0; i < steps; i++) {
    const modelOut = await denoise(x, sigmas[i]!);
    if (i > 0 && lastSample) {
      // Corrector: refine x_i with the model output just computed there.
      const sT = sigmas[i]!;
      const sS0 = sigmas[i - 1]!;
      const m0 = outs[outs.length - 1]!;
      const h = lambdaOf(sT) - lambdaOf(sS0);
      const { rks, d1s } = uniPcDifferences(outs, sigmaOfOut.map(lambdaOf), lambdaOf(sS0), h, thisOrder);
      const { R, b, hPhi1, bH } = uniPcSystem(rks, -h, variant, thisOrder);
      const rhosC = thisOrder === 1 ? [0.5] : solve(R, b);
      // x_t = (sT/sS0) x - hPhi1 m0 - bH (sum_k rhos_c[k] D1_k + rhos_c[-1] (model_t - m0))
      const last = rhosC[rhosC.length - 1]!;
      const terms: [number, Float32Array][] = [
        [sT / sS0, lastSample],
        [-hPhi1 + bH * last, m0],
      ];
      terms.push([-bH * rhosC[rhosC.length - 1]!, modelOut]);
      d1s.forEach((d, k) => terms.push([-bH * rhosC[k]!, d]));
      x = lincomb(...terms);
    }
    outs.push(modelOut);
    sigmaOfOut.push(sigmas[i]!);
    if (outs.length > order) {
      outs.shift();
      sigmaOfOut.shift();
    }
    thisOrder = Math.min(order, steps - i, lowerOrderNums + 1);
    lastSample = x;

    // Predictor: x_{i+1} from the stored data predictions.
    const sT = sigmas[i + 1]!;
    const sS0 = sigmas[i]!;
    const m0 = outs[outs.length - 1]!;
    if (sT === 0) {
      x = m0;
    } else {
      const h = lambdaOf(sT) - lambdaOf(sS0);
      const { rks, d1s } = uniPcDifferences(outs, sigmaOfOut.map(lambdaOf), lambdaOf(sS0), h, thisOrder);
      const { R, b, hPhi1, bH } = uniPcSystem(rks, -h, variant, thisOrder);
      let rhosP: number[] = [];
      if (d1s.length > 0) {
        rhosP =
          thisOrder === 2
            ? [0.5]
            : solve(
                R.slice(0, -1).map((r) => r.slice(0, -1)),
                b.slice(0, -1),
              );
      }
      const terms: [number, Float32Array][] = [
        [sT / sS0, x],
        [-hPhi1, m0],
      ];
      d1s.forEach((d, k) => terms.push([-bH * rhosP[k]!, d]));
      x = lincomb(...terms);
    }
    if (lowerOrderNums < order) lowerOrderNums++;
  }
  return x;
};

/**
 * DEIS (Zhang & Chen 2022), diffusers' DEISMultistepScheduler with algorithm "deis", solver "logrho", order 2:
 * Adams-Bashforth on eps, with eps interpolated linearly in log sigma and integrated over sigma. As diffusers, the
 * last step is first order when there are fewer than 15 steps.
 */
export const deis: SamplerFn = async (denoise, x, sigmas) => {
  const steps = sigmas.length - 1;
  const lowerOrderFinal = steps < 15;
  // Integral of the Lagrange basis (log t - log c) / (log b - log c) over t.
  const ind = (t: number, b: number, c: number) => (t * (-Math.log(c) + Math.log(t) - 1)) / (Math.log(b) - Math.log(c));
  let prevEps: Float32Array | null = null;
  for (let i = 0; i < steps; i++) {
    const s0 = sigmas[i]!;
    const t = sigmas[i + 1]!;
    const eps = toD(x, s0, await denoise(x, s0));
    const firstOrder = prevEps === null || t === 0 || (lowerOrderFinal && i === steps - 1);
    if (firstOrder) {
      x = lincomb([1, x], [t - s0, eps]);
    } else {
      const s1 = sigmas[i - 1]!;
      const coef1 = ind(t, s0, s1) - ind(s0, s0, s1);
      const coef2 = ind(t, s1, s0) - ind(s0, s1, s0);
      x = lincomb([1, x], [coef1, eps], [coef2, prevEps!]);
    }
    prevEps = eps;
  }
  return x;
};

/**
 * UniPC's scaled differences of the stored data predictions: r_k = (lambda_k - lambda_s0) / h and
 * D1_k = (m_k - m0) / r_k for the k most recent outputs before the newest, then r = 1 for the newest.
 */
function uniPcDifferences(outs: Float32Array[], lambdas: number[], lambdaS0: number, h: number, order: number): { rks: number[]; d1s: Float32Array[] } {
  const m0 = outs[outs.length - 1]!;
  const rks: number[] = [];
  const d1s: Float32Array[] = [];
  for (let k = 1; k < order; k++) {
    const rk = (lambdas[lambdas.length - 1 - k]! - lambdaS0) / h;
    rks.push(rk);
    d1s.push(lincomb([1 / rk, outs[outs.length - 1 - k]!], [-1 / rk, m0]));
  }
  rks.push(1);
  return { rks, d1s };
}
