/** Deterministic pseudo-random values in [-amp, amp) (xorshift32), for tests that must not depend on Math.random. */
export function pseudoRandom(n: number, seed: number, amp = 1): Float32Array {
  let s = seed >>> 0 || 1;
  return Float32Array.from({ length: n }, () => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return ((s >>> 0) / 2 ** 32 - 0.5) * 2 * amp;
  });
}
