// Brownian-tree noise for the SDE samplers, as A1111 draws it through k-diffusion's BrownianTreeNoiseSampler and
// torchsde's BrownianTree (a BrownianInterval with tol 1e-6, pool 24, halfway tree, no Levy area). The same seed
// therefore gives A1111's image. Every node of the dyadic tree over [sigma_min, sigma_max] gets its own seed from
// numpy's SeedSequence (seed-sequence.ts) and its increment from its parent's by a Brownian bridge; a query sums the
// increments of the nodes that tile it. Values depend only on the path to each node, so the cache of increments
// below can drop anything (torchsde keeps an LRU of 45 as well).
//
// Arithmetic follows PyTorch: tensors are float32 and a Python float meeting a float32 tensor is first rounded to
// float32 (Math.fround); interval bounds are Python floats rounded to 6 decimals (`round6`).

import { createRng, type RngSource } from '../rng.ts';
import { generateState, seedSequencePool } from './seed-sequence.ts';

const f = Math.fround;
const POOL_SIZE = 24;
/**
 * Increments kept per tree: torchsde keeps 45, which makes deep queries recompute their ancestors; Kiln keeps up to
 * CACHE_BYTES over the whole batch (at least 45 and at most 1000 nodes per tree). Values never depend on it.
 */
const CACHE_BYTES = 128 * 1024 * 1024;
const MIN_CACHE_NODES = 45;
const MAX_CACHE_NODES = 1000;

/**
 * Python's round(x, 6): the exact binary value rounded to 6 decimals with ties to even. toFixed rounds exact ties
 * up, so ties (x * 10^6 exactly k + 1/2, which does happen for dyadic midpoints such as 3.0390625) are found with
 * exact integer arithmetic on the double's mantissa.
 */
export function round6(x: number): number {
  if (!Number.isFinite(x) || x === 0) return x;
  if (x < 0) return -round6(-x);
  const view = new DataView(new ArrayBuffer(8));
  view.setFloat64(0, x);
  const bits = view.getBigUint64(0);
  const expBits = Number((bits >> 52n) & 0x7ffn);
  const frac = bits & 0xfffffffffffffn;
  const mantissa = expBits === 0 ? frac : frac | (1n << 52n);
  const shift = (expBits === 0 ? 1 : expBits) - 1075; // x = mantissa * 2^shift
  if (shift < 0) {
    const e = BigInt(-shift);
    const scaled = mantissa * 1000000n;
    const rem = scaled & ((1n << e) - 1n);
    if (rem === 1n << (e - 1n)) {
      const n = scaled >> e; // floor(x * 10^6); the tie sits between n and n + 1
      const even = n % 2n === 0n ? n : n + 1n;
      return Number(`${even}e-6`);
    }
  }
  return Number(x.toFixed(6));
}

interface TreeNode {
  start: number;
  end: number;
  key: number;
  depth: number;
  parent: TreeNode | null;
  isLeft: boolean;
  /** Set once split: the rounded midpoint, the W seed its children's bridge draws from, and the children. */
  mid?: number;
  wSeed?: number;
  left?: TreeNode;
  right?: TreeNode;
}

/** One image's Brownian motion over [t0, t1] (torchsde BrownianTree(t0, zeros, t1, entropy=seed)). */
export class BrownianTree {
  private readonly root: TreeNode;
  private readonly rootW: Float32Array;
  private readonly cache = new Map<TreeNode, Float32Array>();
  private readonly cacheSize: number;
  private readonly pool = (spawnKey: readonly number[]) => seedSequencePool(this.seed, spawnKey, POOL_SIZE);

  /** Nodes split so far (each split costs one SeedSequence); for tests and diagnostics. */
  splitCount = 0;
  /** Increments computed so far (each costs one randn), recomputations after eviction included. */
  computeCount = 0;

  constructor(
    private readonly seed: number | bigint,
    t0: number,
    t1: number,
    private readonly size: number,
    private readonly source: RngSource = 'cpu',
    /** How many trees share the cache budget (the batch size). */
    treesSharingCache = 1,
  ) {
    const perTree = CACHE_BYTES / Math.max(treesSharingCache, 1) / (4 * size);
    this.cacheSize = Math.min(MAX_CACHE_NODES, Math.max(MIN_CACHE_NODES, Math.floor(perTree)));
    if (!(t0 < t1)) throw new Error(`BrownianTree: t0 (${t0}) must be below t1 (${t1})`);
    this.root = { start: round6(t0), end: round6(t1), key: 0, depth: 0, parent: null, isLeft: false };
    const [wSeed] = generateState(this.pool([]), 3);
    // The root increment uses the unrounded bounds; torchsde's H draw for the unused Levy area is skipped.
    const scale = f(Math.sqrt(t1 - t0));
    const z = this.randn(wSeed!);
    this.rootW = new Float32Array(size);
    for (let i = 0; i < size; i++) this.rootW[i] = f(z[i]! * scale);
  }

  /** The rounded bounds of the tree. */
  get bounds(): [number, number] {
    return [this.root.start, this.root.end];
  }

  private randn(seed: number): Float32Array {
    return createRng(this.source, seed).randn(this.size);
  }

  private split(node: TreeNode): void {
    if (node.mid !== undefined) return;
    const midRaw = 0.5 * (node.end + node.start);
    node.mid = round6(midRaw);
    node.wSeed = generateState(this.pool([node.key, node.depth]), 4)[0]!;
    const child = (start: number, end: number, isLeft: boolean): TreeNode => ({
      start: round6(start),
      end: round6(end),
      key: 2 * node.key + (isLeft ? 0 : 1),
      depth: node.depth + 1,
      parent: node,
      isLeft,
    });
    node.left = child(node.start, midRaw, true);
    node.right = child(midRaw, node.end, false);
    this.splitCount++;
  }

  /** The nodes that tile [ta, tb] (rounded, inside the root), left to right. */
  private locate(ta: number, tb: number): TreeNode[] {
    const out: TreeNode[] = [];
    const visit = (node: TreeNode, a: number, b: number, depth: number): void => {
      if (depth > 200) throw new Error(`BrownianTree: cannot resolve [${a}, ${b}] (queries must be at least 1e-6 apart)`);
      if (a === node.start && b === node.end) {
        out.push(node);
        return;
      }
      this.split(node);
      const m = node.mid!;
      if (b <= m) visit(node.left!, a, b, depth + 1);
      else if (a >= m) visit(node.right!, a, b, depth + 1);
      else {
        visit(node.left!, a, m, depth + 1);
        visit(node.right!, m, b, depth + 1);
      }
    };
    visit(this.root, ta, tb, 0);
    return out;
  }

  /**
   * A node's increment W(end) - W(start), from its parent's by the Brownian bridge. Both children come from the
   * same draw, so both are computed (and cached) at once, one randn per parent instead of torchsde's two.
   */
  private increment(node: TreeNode): Float32Array {
    if (!node.parent) return this.rootW;
    const hit = this.cache.get(node);
    if (hit) {
      this.cache.delete(node);
      this.cache.set(node, hit);
      return hit;
    }
    const p = node.parent;
    const wp = this.increment(p);
    const h = 1 / (p.end - p.start);
    const l = p.mid! - p.start;
    const r = p.end - p.mid!;
    const lf = f(l);
    const hf = f(h);
    const sd = f(Math.sqrt(l * r * h));
    const z = this.randn(p.wSeed!);
    this.computeCount++;
    const left = new Float32Array(this.size);
    const right = new Float32Array(this.size);
    for (let i = 0; i < this.size; i++) {
      const v = f(f(f(lf * wp[i]!) * hf) + f(sd * z[i]!));
      left[i] = v;
      right[i] = f(wp[i]! - v);
    }
    const sibling = node.isLeft ? p.right! : p.left!;
    this.remember(sibling, node.isLeft ? right : left);
    const out = node.isLeft ? left : right;
    this.remember(node, out);
    return out;
  }

  private remember(node: TreeNode, w: Float32Array): void {
    this.cache.delete(node);
    this.cache.set(node, w);
    while (this.cache.size > this.cacheSize) this.cache.delete(this.cache.keys().next().value!);
  }

  /** W(tb) - W(ta) for ta <= tb, clamped into the tree's bounds as torchsde does. */
  query(ta: number, tb: number): Float32Array {
    const [start, end] = this.bounds;
    ta = Math.min(Math.max(ta, start), end);
    tb = Math.min(Math.max(tb, start), end);
    if (ta > tb) throw new Error(`BrownianTree: query [${ta}, ${tb}] must have ta <= tb`);
    if (ta === tb) return new Float32Array(this.size);
    const nodes = this.locate(round6(ta), round6(tb));
    const sum = Float32Array.from(this.increment(nodes[0]!));
    for (const node of nodes.slice(1)) {
      const w = this.increment(node);
      for (let i = 0; i < this.size; i++) sum[i] = f(sum[i]! + w[i]!);
    }
    return sum;
  }

  /** The nodes summed for a query, as [start, end] pairs (for tests against torchsde's decomposition). */
  intervals(ta: number, tb: number): [number, number][] {
    const [start, end] = this.bounds;
    ta = Math.min(Math.max(ta, start), end);
    tb = Math.min(Math.max(tb, start), end);
    return ta === tb ? [] : this.locate(round6(ta), round6(tb)).map((n) => [n.start, n.end]);
  }
}

export interface BrownianNoiseOptions {
  /** One seed per image of the batch (A1111: the images' own seeds). */
  seeds: readonly (number | bigint)[];
  /** One image's element count (C*H*W). */
  size: number;
  /** The schedule the sampler walks (the full one; only its smallest positive and largest values are used). */
  sigmas: readonly number[];
  source?: RngSource;
  /** Maps sigma to the Brownian time axis (k-diffusion's `transform`); A1111 passes none (sigma itself). */
  transform?: (sigma: number) => number;
}

/**
 * k-diffusion's BrownianTreeNoiseSampler with a list of seeds (BatchedBrownianTree): one tree per image, stacked.
 * `noise(sigma, sigmaNext)` is the increment between the two, signed and divided by sqrt(|sigmaNext - sigma|), so it
 * is unit normal. sigma values are float32 (the sampler's tensors).
 */
export interface BrownianNoise {
  noise(sigma: number, sigmaNext: number): Float32Array;
}

export function brownianTreeNoise(opts: BrownianNoiseOptions): BrownianNoise {
  const transform = opts.transform ?? ((s: number) => s);
  const positive = opts.sigmas.filter((s) => s > 0);
  if (positive.length === 0) throw new Error('brownianTreeNoise: the schedule has no positive sigma');
  const sigmaMin = f(Math.min(...positive));
  const sigmaMax = f(Math.max(...opts.sigmas));
  const a = f(transform(sigmaMin));
  const b = f(transform(sigmaMax));
  // BatchedBrownianTree sorts its bounds and remembers the sign.
  const [t0, t1, treeSign] = a < b ? [a, b, 1] : [b, a, -1];
  // One tree per image; with a single sigma_min == sigma_max there is no interval and the noise is zero.
  const trees = t0 < t1 ? opts.seeds.map((s) => new BrownianTree(s, t0, t1, opts.size, opts.source, opts.seeds.length)) : null;
  return {
    noise(sigma, sigmaNext) {
      const ta = f(transform(f(sigma)));
      const tb = f(transform(f(sigmaNext)));
      const [lo, hi, sign] = ta < tb ? [ta, tb, 1] : [tb, ta, -1];
      const denom = f(Math.sqrt(Math.abs(f(tb - ta))));
      const out = new Float32Array(opts.seeds.length * opts.size);
      const s = treeSign * sign;
      opts.seeds.forEach((_, k) => {
        const w = trees ? trees[k]!.query(lo, hi) : new Float32Array(opts.size);
        const base = k * opts.size;
        for (let i = 0; i < opts.size; i++) out[base + i] = f((s * w[i]!) / denom);
      });
      return out;
    },
  };
}
