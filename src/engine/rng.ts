// Seeded Gaussian noise that reproduces PyTorch's torch.randn bit for bit, so a seed gives the same image here as in
// A1111, ComfyUI and diffusers.
//
// Two sources, as A1111's "Random number generator source" setting:
//  - `cpu`: torch.randn on a CPU torch.Generator (mt19937). This is the default because it is portable (no GPU
//    involved, same numbers on every machine) and it is what diffusers with a CPU generator and ComfyUI use.
//  - `philox`: torch.randn on CUDA (Philox4x32-10, one counter per element, an offset per call), as reproduced on
//    the CPU by A1111's "NV" mode (modules/rng_philox.py). A1111's default "GPU" setting gives these numbers.
//
// A generator keeps its stream across calls like a torch.Generator, so ancestral/SDE samplers that keep drawing after
// the initial noise see the same numbers as those tools.

import type { RngSource } from './api.ts';
import { KilnInputError } from './api.ts';

export type { RngSource };

export const RNG_SOURCES: readonly RngSource[] = ['cpu', 'philox'];
/** Portable and matches diffusers (CPU generator) and ComfyUI; see the file comment. */
export const DEFAULT_RNG_SOURCE: RngSource = 'cpu';

export interface Rng {
  readonly source: RngSource;
  /** The next n standard normal values of this generator's stream (one torch.randn call of n elements). */
  randn(n: number): Float32Array;
}

/** Seeds are integers in [0, 2^64); larger or negative values wrap like torch.Generator.manual_seed. */
export type Seed = number | bigint;

function toSeed64(seed: Seed): bigint {
  if (typeof seed === 'number') {
    if (!Number.isInteger(seed)) throw new KilnInputError(`seed must be an integer, got ${seed}`, 'seed');
    seed = BigInt(seed);
  }
  return BigInt.asUintN(64, seed);
}

export function createRng(source: RngSource, seed: Seed): Rng {
  const s = toSeed64(seed);
  if (source === 'cpu') return new TorchCpuRng(s);
  if (source === 'philox') return new PhiloxRng(s);
  throw new KilnInputError(`unknown rng source "${source}"; valid: ${RNG_SOURCES.join(', ')}`, 'rng');
}

// ---------------------------------------------------------------------------------------------------------------
// mt19937 + PyTorch's CPU normal sampling

class Mt19937 {
  private readonly state = new Uint32Array(624);
  private index = 624;

  constructor(seed32: number) {
    const st = this.state;
    st[0] = seed32 >>> 0;
    for (let i = 1; i < 624; i++) {
      const prev = st[i - 1]! ^ (st[i - 1]! >>> 30);
      st[i] = (Math.imul(1812433253, prev) + i) >>> 0;
    }
  }

  private twist(): void {
    const st = this.state;
    for (let i = 0; i < 624; i++) {
      const y = (st[i]! & 0x80000000) | (st[(i + 1) % 624]! & 0x7fffffff);
      let v = st[(i + 397) % 624]! ^ (y >>> 1);
      if (y & 1) v ^= 0x9908b0df;
      st[i] = v >>> 0;
    }
    this.index = 0;
  }

  next32(): number {
    if (this.index >= 624) this.twist();
    let y = this.state[this.index++]!;
    y ^= y >>> 11;
    y ^= (y << 7) & 0x9d2c5680;
    y ^= (y << 15) & 0xefc60000;
    y ^= y >>> 18;
    return y >>> 0;
  }
}

const TWO_PI_F32 = Math.fround(2 * Math.PI);
const f = Math.fround;

class TorchCpuRng implements Rng {
  readonly source = 'cpu' as const;
  private readonly mt: Mt19937;
  /** torch caches the second Box-Muller value of the scalar (double) path in the generator. */
  private cachedNormal: number | null = null;

  constructor(seed: bigint) {
    // torch's mt19937 is seeded with the low 32 bits of the 64-bit seed.
    this.mt = new Mt19937(Number(seed & 0xffffffffn));
  }

  /** uniform_real_distribution<float>: 24 random bits. */
  private uniformFloat(): number {
    return (this.mt.next32() & 0xffffff) / 16777216;
  }

  /** uniform_real_distribution<double>: 53 bits of random64() = (first draw << 32) | second draw. */
  private uniformDouble(): number {
    const hi = this.mt.next32();
    const lo = this.mt.next32();
    return ((hi & 0x1fffff) * 4294967296 + lo) / 9007199254740992;
  }

  /** at::normal_distribution<double>, used for tensors with fewer than 16 elements. */
  private scalarNormal(): number {
    if (this.cachedNormal !== null) {
      const v = this.cachedNormal;
      this.cachedNormal = null;
      return v;
    }
    const u1 = this.uniformDouble();
    const u2 = this.uniformDouble();
    const r = Math.sqrt(-2 * Math.log1p(-u2));
    const theta = 2 * Math.PI * u1;
    this.cachedNormal = r * Math.sin(theta);
    return r * Math.cos(theta);
  }

  randn(n: number): Float32Array {
    const out = new Float32Array(n);
    if (n < 16) {
      for (let i = 0; i < n; i++) out[i] = this.scalarNormal();
      return out;
    }
    // normal_fill: n float uniforms, Box-Muller over 16-element blocks (first half with second half); a ragged tail
    // redraws 16 uniforms for the last 16 slots and transforms them again. Float arithmetic is emulated with fround.
    for (let i = 0; i < n; i++) out[i] = this.uniformFloat();
    for (let i = 0; i + 16 <= n; i += 16) normalFill16(out, i);
    if (n % 16 !== 0) {
      const start = n - 16;
      for (let i = 0; i < 16; i++) out[start + i] = this.uniformFloat();
      normalFill16(out, start);
    }
    return out;
  }
}

function normalFill16(data: Float32Array, at: number): void {
  for (let j = 0; j < 8; j++) {
    const u1 = f(1 - data[at + j]!);
    const u2 = data[at + j + 8]!;
    const radius = f(Math.sqrt(f(-2 * f(Math.log(u1)))));
    const theta = f(TWO_PI_F32 * u2);
    data[at + j] = radius * f(Math.cos(theta));
    data[at + j + 8] = radius * f(Math.sin(theta));
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Philox4x32-10 (CUDA torch.randn), following A1111's rng_philox.py

const PHILOX_M0 = 0xd2511f53;
const PHILOX_M1 = 0xcd9e8d57;
const PHILOX_W0 = 0x9e3779b9;
const PHILOX_W1 = 0xbb67ae85;
// curand's float32 constants; the Box-Muller arithmetic is float32 as in curand (emulated with fround). Results
// match the references to the last bit or within one float32 ulp (libm log/sin rounding).
const TWO_POW32_INV = f(2.3283064e-10);
const TWO_POW32_INV_2PI = f(2.3283064e-10 * 6.2831855);
const HALF_TWO_POW32_INV = f(TWO_POW32_INV / 2);
const HALF_TWO_POW32_INV_2PI = f(TWO_POW32_INV_2PI / 2);

/** High 32 bits of the 64-bit product of two uint32 values. */
function mulHi32(a: number, b: number): number {
  const aH = a >>> 16;
  const aL = a & 0xffff;
  const bH = b >>> 16;
  const bL = b & 0xffff;
  const ll = aL * bL;
  const lh = aL * bH;
  const hl = aH * bL;
  const mid = (ll >>> 16) + (lh & 0xffff) + (hl & 0xffff);
  return (aH * bH + Math.floor(lh / 65536) + Math.floor(hl / 65536) + Math.floor(mid / 65536)) >>> 0;
}

class PhiloxRng implements Rng {
  readonly source = 'philox' as const;
  private offset = 0;
  private readonly key0: number;
  private readonly key1: number;

  constructor(seed: bigint) {
    this.key0 = Number(seed & 0xffffffffn);
    this.key1 = Number(seed >> 32n);
  }

  randn(n: number): Float32Array {
    if (n > 0xffffffff) throw new Error('philox randn: at most 2^32 values per call');
    const out = new Float32Array(n);
    const offset = this.offset++ >>> 0;
    for (let i = 0; i < n; i++) {
      let c0 = offset;
      let c1 = 0;
      let c2 = i;
      let c3 = 0;
      let k0 = this.key0;
      let k1 = this.key1;
      for (let round = 0; round < 10; round++) {
        if (round > 0) {
          k0 = (k0 + PHILOX_W0) >>> 0;
          k1 = (k1 + PHILOX_W1) >>> 0;
        }
        const hi0 = mulHi32(c0, PHILOX_M0);
        const lo0 = Math.imul(c0, PHILOX_M0) >>> 0;
        const hi1 = mulHi32(c2, PHILOX_M1);
        const lo1 = Math.imul(c2, PHILOX_M1) >>> 0;
        const n0 = (hi1 ^ c1 ^ k0) >>> 0;
        const n2 = (hi0 ^ c3 ^ k1) >>> 0;
        c0 = n0;
        c1 = lo1;
        c2 = n2;
        c3 = lo0;
      }
      const u = f(f(f(c0) * TWO_POW32_INV) + HALF_TWO_POW32_INV);
      const v = f(f(f(c1) * TWO_POW32_INV_2PI) + HALF_TWO_POW32_INV_2PI);
      out[i] = f(Math.sqrt(f(-2 * f(Math.log(u))))) * f(Math.sin(v));
    }
    return out;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Seeds and a job's initial noise (A1111 modules/processing.py + modules/rng.py ImageRNG)

/** A1111 draws random seeds from [0, 4294967294). */
const RANDOM_SEED_LIMIT = 4294967294;

/**
 * The one seed rule of every surface: -1, undefined or null means "pick one" (A1111's range); any other value
 * must be an integer in [0, 2^53). The caller reports the returned seed, so a random one can be reproduced.
 */
export function resolveSeed(seed?: number | null, random: () => number = Math.random, field = 'seed'): number {
  if (seed === undefined || seed === null || seed === -1) return Math.floor(random() * RANDOM_SEED_LIMIT);
  if (!Number.isSafeInteger(seed) || seed < 0) {
    throw new KilnInputError(`${field} must be -1 (random) or an integer in [0, 2^53), got ${seed}`, field);
  }
  return seed;
}

/**
 * Seeds and subseeds of a batch, as A1111: image i uses seed+i and subseed+i, except that with a variation
 * (subseedStrength > 0) every image keeps `seed` so only the variation changes across the batch.
 */
export function batchSeeds(seed: number, subseed: number, subseedStrength: number, count: number): { seeds: number[]; subseeds: number[] } {
  const seeds: number[] = [];
  const subseeds: number[] = [];
  for (let i = 0; i < count; i++) {
    seeds.push(seed + (subseedStrength > 0 ? 0 : i));
    subseeds.push(subseed + i);
  }
  return { seeds, subseeds };
}

export interface NoiseRequest {
  /** One seed per image in the batch. */
  seeds: Seed[];
  /** Variation seeds (one per image); used when subseedStrength > 0. */
  subseeds?: Seed[];
  subseedStrength?: number;
  /** A1111 "resize seed from": the noise is drawn for this image size (pixels) and centred/cropped into `shape`. */
  resizeFrom?: { width: number; height: number };
  /** Pixels per latent cell (8 for SD). */
  latentFactor?: number;
  /** One image's latent shape [C, H, W]. */
  shape: [number, number, number];
  source?: RngSource;
  /** A1111 eta_noise_seed_delta: if non-zero, the noise drawn during sampling comes from seed + delta generators. */
  etaNoiseSeedDelta?: number;
}

export interface BatchNoise {
  /** [B, C, H, W] (B = seeds.length). */
  readonly shape: [number, number, number, number];
  /** The initial noise (unit variance; the sampler scales it by the first sigma). */
  readonly initial: Float32Array;
  /** The next draw of every image's generator, stacked as [B, C, H, W]: what ancestral/SDE samplers consume. */
  next(): Float32Array;
}

export function createNoise(req: NoiseRequest): BatchNoise {
  const source = req.source ?? DEFAULT_RNG_SOURCE;
  const [c, h, w] = req.shape;
  const per = c * h * w;
  const strength = req.subseedStrength ?? 0;
  const factor = req.latentFactor ?? 8;
  const resize =
    req.resizeFrom && req.resizeFrom.width > 0 && req.resizeFrom.height > 0
      ? { h: Math.floor(req.resizeFrom.height / factor), w: Math.floor(req.resizeFrom.width / factor) }
      : null;
  const noiseH = resize && (resize.h !== h || resize.w !== w) ? resize.h : h;
  const noiseW = resize && (resize.h !== h || resize.w !== w) ? resize.w : w;
  const resized = noiseH !== h || noiseW !== w;

  let generators = req.seeds.map((s) => createRng(source, s));
  const initial = new Float32Array(req.seeds.length * per);
  req.seeds.forEach((seed, i) => {
    const gen = generators[i]!;
    let noise = resized ? createRng(source, seed).randn(c * noiseH * noiseW) : gen.randn(per);
    if (strength !== 0 && req.subseeds) {
      const subseed = req.subseeds[i] ?? 0;
      const sub = createRng(source, subseed).randn(c * noiseH * noiseW);
      noise = slerpA1111(strength, noise, sub, [c, noiseH, noiseW]);
    }
    if (resized) {
      const x = gen.randn(per);
      pasteCentred(x, [c, h, w], noise, [c, noiseH, noiseW]);
      noise = x;
    }
    initial.set(noise, i * per);
  });
  if (req.etaNoiseSeedDelta) {
    const delta = BigInt(req.etaNoiseSeedDelta);
    generators = req.seeds.map((s) => createRng(source, BigInt(s) + delta));
  }
  return {
    shape: [req.seeds.length, c, h, w],
    initial,
    next() {
      const out = new Float32Array(generators.length * per);
      generators.forEach((g, i) => out.set(g.randn(per), i * per));
      return out;
    },
  };
}

/**
 * A1111's slerp(val, low, high) on one image's [C, H, W] noise. Its norms run over dim 1 (H), so every (c, w) column
 * is interpolated separately; and when the noises are nearly parallel it falls back to low*val + high*(1-val)
 * (sic). Both quirks are kept so variation seeds give A1111's images.
 */
export function slerpA1111(val: number, low: Float32Array, high: Float32Array, shape: [number, number, number]): Float32Array {
  const [c, h, w] = shape;
  const dots = new Float64Array(c * w);
  let dotSum = 0;
  for (let ci = 0; ci < c; ci++) {
    for (let wi = 0; wi < w; wi++) {
      let nl = 0;
      let nh = 0;
      let d = 0;
      for (let hi = 0; hi < h; hi++) {
        const k = (ci * h + hi) * w + wi;
        nl += low[k]! * low[k]!;
        nh += high[k]! * high[k]!;
        d += low[k]! * high[k]!;
      }
      const dot = d / (Math.sqrt(nl) * Math.sqrt(nh));
      dots[ci * w + wi] = dot;
      dotSum += dot;
    }
  }
  const out = new Float32Array(low.length);
  if (dotSum / dots.length > 0.9995) {
    for (let k = 0; k < out.length; k++) out[k] = low[k]! * val + high[k]! * (1 - val);
    return out;
  }
  for (let ci = 0; ci < c; ci++) {
    for (let wi = 0; wi < w; wi++) {
      const omega = Math.acos(dots[ci * w + wi]!);
      const so = Math.sin(omega);
      const a = Math.sin((1 - val) * omega) / so;
      const b = Math.sin(val * omega) / so;
      for (let hi = 0; hi < h; hi++) {
        const k = (ci * h + hi) * w + wi;
        out[k] = a * low[k]! + b * high[k]!;
      }
    }
  }
  return out;
}

/** Copies `src` into the centre of `dst` (cropping whichever is larger), as A1111's seed resize does. */
function pasteCentred(dst: Float32Array, [c, h, w]: [number, number, number], src: Float32Array, [, sh, sw]: [number, number, number]): void {
  // Python's // floors; the difference is negative when the noise is larger than the target.
  const dx = Math.floor((w - sw) / 2);
  const dy = Math.floor((h - sh) / 2);
  const cw = dx >= 0 ? sw : sw + 2 * dx;
  const ch = dy >= 0 ? sh : sh + 2 * dy;
  const tx = Math.max(dx, 0);
  const ty = Math.max(dy, 0);
  const sx = Math.max(-dx, 0);
  const sy = Math.max(-dy, 0);
  for (let ci = 0; ci < c; ci++) {
    for (let y = 0; y < ch; y++) {
      for (let x = 0; x < cw; x++) {
        dst[(ci * h + ty + y) * w + tx + x] = src[(ci * sh + sy + y) * sw + sx + x]!;
      }
    }
  }
}
