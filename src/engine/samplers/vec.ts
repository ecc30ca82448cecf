// Element-wise helpers over Float32Array latents. Arithmetic runs in double and is stored as float32.

/** sum_k coef_k * v_k, a fresh array. */
export function lincomb(...terms: [number, Float32Array][]): Float32Array {
  const n = terms[0]![1].length;
  const out = new Float32Array(n);
  if (terms.length === 1) {
    const [a, x] = terms[0]!;
    for (let i = 0; i < n; i++) out[i] = a * x[i]!;
  } else if (terms.length === 2) {
    const [a, x] = terms[0]!;
    const [b, y] = terms[1]!;
    for (let i = 0; i < n; i++) out[i] = a * x[i]! + b * y[i]!;
  } else if (terms.length === 3) {
    const [a, x] = terms[0]!;
    const [b, y] = terms[1]!;
    const [c, z] = terms[2]!;
    for (let i = 0; i < n; i++) out[i] = a * x[i]! + b * y[i]! + c * z[i]!;
  } else {
    for (let i = 0; i < n; i++) {
      let s = 0;
      for (const [a, v] of terms) s += a * v[i]!;
      out[i] = s;
    }
  }
  return out;
}

/** k-diffusion to_d: (x - denoised) / sigma. */
export function toD(x: Float32Array, sigma: number, denoised: Float32Array): Float32Array {
  const out = new Float32Array(x.length);
  for (let i = 0; i < x.length; i++) out[i] = (x[i]! - denoised[i]!) / sigma;
  return out;
}

/** k-diffusion get_ancestral_step: split a step into a deterministic part (down) and fresh noise (up). */
export function ancestralStep(sigmaFrom: number, sigmaTo: number, eta: number): { down: number; up: number } {
  if (!eta) return { down: sigmaTo, up: 0 };
  const up = Math.min(sigmaTo, eta * Math.sqrt((sigmaTo * sigmaTo * (sigmaFrom * sigmaFrom - sigmaTo * sigmaTo)) / (sigmaFrom * sigmaFrom)));
  const down = Math.sqrt(sigmaTo * sigmaTo - up * up);
  return { down, up };
}
