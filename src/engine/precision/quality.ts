// Error measures between an int8 (or otherwise approximated) network's output and its fp32 twin.

/** Cosine similarity of two equally long vectors (1 = same direction); 1 when both are zero. */
export function cosineSimilarity(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let ab = 0;
  let aa = 0;
  let bb = 0;
  for (let i = 0; i < a.length; i++) {
    const x = a[i]!;
    const y = b[i]!;
    ab += x * y;
    aa += x * x;
    bb += y * y;
  }
  if (aa === 0 && bb === 0) return 1;
  return ab / Math.sqrt(aa * bb);
}

/** ||a - ref|| / ||ref|| (0 = identical). */
export function relativeError(a: ArrayLike<number>, ref: ArrayLike<number>): number {
  let d = 0;
  let r = 0;
  for (let i = 0; i < a.length; i++) {
    d += (a[i]! - ref[i]!) ** 2;
    r += ref[i]! ** 2;
  }
  return r === 0 ? (d === 0 ? 0 : Number.POSITIVE_INFINITY) : Math.sqrt(d / r);
}

/** PSNR in dB of two 8-bit images of the same size (Infinity when identical) and their largest pixel difference. */
export function imageDifference(a: Uint8Array, b: Uint8Array): { psnr: number; maxDiff: number } {
  let se = 0;
  let maxDiff = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i]! - b[i]!);
    se += d * d;
    if (d > maxDiff) maxDiff = d;
  }
  const mse = se / a.length;
  return { psnr: mse === 0 ? Number.POSITIVE_INFINITY : 10 * Math.log10((255 * 255) / mse), maxDiff };
}
