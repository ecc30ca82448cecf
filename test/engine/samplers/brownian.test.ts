// Brownian-tree noise against torchsde 0.2.6 + k-diffusion (fixtures refs/sde, README "A1111 SDE samplers"):
// numpy's SeedSequence words, torchsde's rounding, tree splits and interval decompositions exactly; the noise
// itself within atol 1e-5, because Kiln's randn differs from torch's vectorised (Sleef) one in the last ulp for
// some elements (see rng.test.ts), which the README allows.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { REFS_DIR, readSafetensors } from './refs.ts';
import { BrownianTree, brownianTreeNoise, round6 } from '../../../src/engine/samplers/brownian.ts';
import { generateState, seedSequencePool } from '../../../src/engine/samplers/seed-sequence.ts';
import { createRng } from '../../../src/engine/rng.ts';

const dir = join(REFS_DIR, 'sde');
const ATOL = 1e-5;

test('SeedSequence: pool and generate_state(4) for every recorded entropy and spawn key', () => {
  const text = readFileSync(join(dir, 'seedsequence.json'), 'utf8');
  // JSON.parse rounds 2^64 - 1 to a double; read the integers exactly.
  const exact = JSON.parse(text.replace(/"entropy": (\d+)/g, '"entropy": "$1"'));
  let checked = 0;
  for (const v of exact.vectors) {
    const pool = seedSequencePool(BigInt(v.entropy), v.spawn_key.map(BigInt), v.pool_size);
    assert.deepEqual([...pool], v.pool, `pool of entropy ${v.entropy} key ${v.spawn_key}`);
    assert.deepEqual(generateState(pool, 4), v.generate_state_4, `state of entropy ${v.entropy} key ${v.spawn_key}`);
    checked++;
  }
  assert.ok(checked >= 70, `${checked} vectors`);
});

test('round6 is Python round(x, 6): ties to even on the exact binary value', () => {
  assert.equal(round6(3.0390625), 3.039062);
  assert.equal(round6(4.5859375), 4.585938);
  assert.equal(round6(0.0078125), 0.007812);
  assert.equal(round6(14.614643096923828), 14.614643);
  assert.equal(round6(0.02916753850877285), 0.029168);
  assert.equal(round6(0.1234565), 0.123456); // 0.1234565 is below the decimal tie in binary
  assert.equal(round6(2), 2);
});

const CASES = [
  'noise_dpmpp_2m_sde_karras10_seed42',
  'noise_dpmpp_2m_sde_karras10_batch2_seed1234',
  'noise_dpmpp_sde_karras10_seed42',
  'noise_dpmpp_2m_sde_exponential10_seed7',
  'noise_dpmpp_3m_sde_exponential10_seed4294967294',
  'noise_dpmpp_2m_sde_karras10_oldsigmas_seed0',
];

for (const name of CASES) {
  test(`Brownian noise: ${name} (seeds, splits, decompositions exact; noise atol ${ATOL})`, () => {
    const json = JSON.parse(readFileSync(join(dir, `${name}.json`), 'utf8'));
    const t = readSafetensors(join(dir, `${name}.safetensors`));
    const [batch, c, h, w] = json.x_shape as number[];
    const size = c! * h! * w!;
    const sigmas = [...t.get('sigmas')!.f32!];

    // The trees: rounded bounds, root seeds and root increment.
    json.trees.forEach((ref: any, k: number) => {
      const tree = new BrownianTree(ref.seed, ref.t0, ref.t1, size);
      assert.deepEqual(tree.bounds, [ref.root_start_rounded, ref.root_end_rounded]);
      assert.deepEqual(generateState(seedSequencePool(ref.seed, [], 24), 3), ref.root_seeds_W_H_A);
      assert.deepEqual(generateState(seedSequencePool(ref.seed, [0, 0], 24), 4), ref.root_split_seeds);
      for (const [, , , key, depth, wSeed] of ref.split_nodes_start_end_mid_key_depth_wseed) {
        assert.equal(generateState(seedSequencePool(ref.seed, [key, depth], 24), 4)[0], wSeed, `W seed of node ${key}@${depth}`);
      }
      const rootW = t.get('root_W')!.f32!.subarray(k * size, (k + 1) * size);
      const rootRandn = t.get('root_randn')!.f32!.subarray(k * size, (k + 1) * size);
      const z = createRng('cpu', ref.root_seeds_W_H_A[0]).randn(size);
      for (let i = 0; i < size; i++) assert.ok(Math.abs(z[i]! - rootRandn[i]!) <= 1e-6, `root randn[${i}]`);
      assert.ok(Math.abs(rootW[0]! / rootRandn[0]! - ref.root_W_scale) < 1e-6);
      // Every recorded decomposition, node by node.
      for (const q of json.queries) {
        const lo = Math.min(q.sigma, q.sigma_next);
        const hi = Math.max(q.sigma, q.sigma_next);
        assert.deepEqual(tree.intervals(lo, hi), q.intervals_summed_per_image[k], `query ${q.index} image ${k}`);
      }
      // The split nodes are exactly torchsde's (same midpoints), whatever the order they were made in.
      assert.equal(tree.splitCount, ref.n_split_nodes, 'split nodes');
    });

    // The noise of every call, each image of the batch from its own seed.
    const ns = brownianTreeNoise({ seeds: json.seeds, size, sigmas });
    const qs = t.get('query_sigma')!.f32!;
    const qn = t.get('query_sigma_next')!.f32!;
    const noise = t.get('noise')!.f32!;
    let exact = 0;
    for (let q = 0; q < qs.length; q++) {
      const out = ns.noise(qs[q]!, qn[q]!);
      assert.equal(out.length, batch! * size);
      const ref = noise.subarray(q * batch! * size, (q + 1) * batch! * size);
      for (let i = 0; i < out.length; i++) {
        const d = Math.abs(out[i]! - ref[i]!);
        if (d === 0) exact++;
        else assert.ok(d <= ATOL, `${name} call ${q} [${i}]: got ${out[i]}, want ${ref[i]}`);
      }
    }
    assert.ok(exact / noise.length > 0.5, `most values bit-exact (${((100 * exact) / noise.length).toFixed(1)}%)`);
  });
}

test('Brownian noise: image k of a batch equals a batch of one with its seed; the query order does not matter', () => {
  const sigmas = [14.614643096923828, 3.168609380722046, 0.44692087173461914, 0.02916753850877285, 0];
  const size = 4 * 4 * 4;
  const pair = brownianTreeNoise({ seeds: [7, 8], size, sigmas });
  const single = brownianTreeNoise({ seeds: [8], size, sigmas });
  const forward = [0, 1, 2].map((i) => pair.noise(sigmas[i]!, sigmas[i + 1]!));
  const backward = [2, 1, 0].map((i) => single.noise(sigmas[i]!, sigmas[i + 1]!)).reverse();
  for (let i = 0; i < 3; i++) assert.deepEqual(forward[i]!.subarray(size), backward[i]);
  // The increments over adjacent intervals add up (a Brownian motion, not independent draws).
  assert.notDeepEqual(forward[0]!.subarray(0, size), forward[0]!.subarray(size));
});

test('Brownian noise with a transform (k-diffusion BrownianTreeNoiseSampler): the tree runs over the transformed bounds', () => {
  const sigmas = [14.614643096923828, 3.168609380722046, 0.44692087173461914, 0.02916753850877285, 0];
  const size = 16;
  const logT = (s: number) => -Math.log(s);
  const withTransform = brownianTreeNoise({ seeds: [3], size, sigmas, transform: logT });
  // The same tree built by hand over [t(sigma_max), t(sigma_min)] (sorted), queried over [t(next), t(sigma)] sorted.
  const f = Math.fround;
  const tree = new BrownianTree(3, f(logT(f(sigmas[0]!))), f(logT(f(sigmas[3]!))), size);
  const ta = f(logT(f(sigmas[0]!)));
  const tb = f(logT(f(sigmas[1]!)));
  const w = tree.query(ta, tb);
  const denom = f(Math.sqrt(Math.abs(f(tb - ta))));
  // BatchedBrownianTree's signs: the tree's bounds were given reversed (-1), the query in order (+1): negated.
  const expected = w.map((v) => f(-v / denom));
  assert.deepEqual(withTransform.noise(sigmas[0]!, sigmas[1]!), expected);
});
