// Every sampler x schedule: an exact denoiser lands on the clean sample, the same seed is bit-identical, progress
// counts model evaluations, and cancellation stops within one evaluation. Both eps- and v-prediction.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  SAMPLERS,
  SCHEDULES,
  createModelSchedule,
  makeDenoiser,
  planSampling,
  runSampler,
  buildSigmas,
  endAtSigmaMin,
  type Prediction,
  type ModelFn,
} from '../../../src/engine/samplers/index.ts';
import { createNoise, createRng } from '../../../src/engine/rng.ts';

const model = createModelSchedule();
const SHAPE: [number, number, number] = [4, 4, 4];
const clean = createRng('cpu', 1234)
  .randn(64)
  .map((v) => 0.8 * v);

/** A model that knows the clean sample: it returns the exact eps (or v) for any input. */
function exactModel(prediction: Prediction): ModelFn {
  return async (xs, _t, sigma) => {
    const scale = Math.sqrt(sigma * sigma + 1);
    return xs.map((v, i) => {
      const x = v * scale;
      if (prediction === 'epsilon') return (x - clean[i]!) / sigma;
      const cSkip = 1 / (sigma * sigma + 1);
      const cOut = -sigma / scale;
      return (clean[i]! - cSkip * x) / cOut;
    });
  };
}

const schedules = SCHEDULES.map((s) => s.label);

for (const info of SAMPLERS) {
  for (const prediction of ['epsilon', 'v_prediction'] as const) {
    test(`${info.name} (${prediction}) reaches the clean sample with every schedule`, async () => {
      for (const schedule of schedules) {
        for (const flavour of ['diffusers', 'a1111'] as const) {
          const plan = planSampling({ sampler: info.name, schedule, steps: 8, model, flavour });
          const noise = createNoise({ seeds: [42], shape: SHAPE });
          const denoise = makeDenoiser(exactModel(prediction), { prediction, schedule: model, timestep: plan.timestepMode });
          const x = noise.initial.map((v) => v * plan.initialNoiseScale);
          const out = await runSampler(plan.sampler, { denoise, x, sigmas: plan.sigmas, noise: () => noise.next() });
          const end = plan.sigmas[plan.sigmas.length - 1]!;
          const what = `${info.name} / ${schedule} / ${flavour}`;
          if (end === 0) {
            for (let i = 0; i < out.length; i++) assert.ok(Math.abs(out[i]! - clean[i]!) < 2e-3, `${what}: ${out[i]} vs ${clean[i]}`);
          } else {
            // Stops at sigma_min (~0.03): what is left is noise of that size.
            assert.ok(end > 0 && end <= model.sigmaMin * (1 + 1e-5), `${what}: ends at ${end}`);
            let sq = 0;
            for (let i = 0; i < out.length; i++) sq += (out[i]! - clean[i]!) ** 2;
            const rms = Math.sqrt(sq / out.length);
            assert.ok(rms < 3 * end, `${what}: rms distance ${rms}`);
          }
        }
      }
    });
  }

  test(`${info.name}: same seed is bit-identical, different seed differs, progress counts evaluations`, async () => {
    const run = async (seed: number, source: 'cpu' | 'philox') => {
      const plan = planSampling({ sampler: info.name, steps: 6, model });
      const noise = createNoise({ seeds: [seed, seed + 1], shape: SHAPE, source });
      // An imperfect model (the true eps plus a bias) so that the sampler's own arithmetic matters.
      const exact = exactModel('epsilon');
      const denoise = makeDenoiser(async (xs, t, s) => (await exact(xs.subarray(0, 64), t, s)).map((v) => v + 0.05), {
        prediction: 'epsilon',
        schedule: model,
      });
      const twice: Parameters<typeof runSampler>[1]['denoise'] = async (x, s) => {
        const a = await denoise(x.subarray(0, 64), s);
        const b = await denoise(x.subarray(64), s);
        const o = new Float32Array(128);
        o.set(a);
        o.set(b, 64);
        return o;
      };
      const progress: [number, number][] = [];
      const out = await runSampler(plan.sampler, {
        denoise: twice,
        x: noise.initial.map((v) => v * plan.initialNoiseScale),
        sigmas: plan.sigmas,
        noise: () => noise.next(),
        onProgress: (d, t) => progress.push([d, t]),
      });
      return { out, progress, plan };
    };
    for (const source of ['cpu', 'philox'] as const) {
      const a = await run(7, source);
      const b = await run(7, source);
      assert.deepEqual(a.out, b.out);
      const c = await run(8, source);
      assert.notDeepEqual(a.out, c.out);
      assert.ok(a.progress.length > 0);
      a.progress.forEach(([d], i) => assert.equal(d, i + 1));
      if (info.id !== 'dpm_adaptive') {
        assert.equal(a.progress.length, a.plan.totalEvals, 'planned evaluations');
        a.progress.forEach(([, t]) => assert.equal(t, a.plan.totalEvals));
      }
    }
  });

  test(`${info.name}: abort stops before the next model evaluation`, async () => {
    const plan = planSampling({ sampler: info.name, steps: 10, model });
    const noise = createNoise({ seeds: [1], shape: SHAPE });
    const controller = new AbortController();
    let evals = 0;
    const inner = makeDenoiser(exactModel('epsilon'), { prediction: 'epsilon', schedule: model });
    const denoise = async (x: Float32Array, s: number) => {
      evals++;
      if (evals === 3) controller.abort();
      return inner(x, s);
    };
    await assert.rejects(
      runSampler(plan.sampler, {
        denoise,
        x: noise.initial.map((v) => v * plan.initialNoiseScale),
        sigmas: plan.sigmas,
        noise: () => noise.next(),
        signal: controller.signal,
      }),
      (e: Error) => e.name === 'AbortError',
    );
    assert.equal(evals, 3);
    // Already aborted: no evaluation at all.
    await assert.rejects(
      runSampler(plan.sampler, { denoise, x: noise.initial, sigmas: plan.sigmas, noise: () => noise.next(), signal: controller.signal }),
      (e: Error) => e.name === 'AbortError',
    );
    assert.equal(evals, 3);
  });
}

test('ancestral noise comes from the job generator: eta 0 makes Euler a deterministic and equal to Euler', async () => {
  const plan = planSampling({ sampler: 'Euler a', steps: 6, model });
  const noise = createNoise({ seeds: [3], shape: SHAPE });
  const denoise = makeDenoiser(async (xs) => xs.map((v) => 0.3 * v + 0.1), { prediction: 'epsilon', schedule: model });
  const x = noise.initial.map((v) => v * plan.initialNoiseScale);
  const a = await runSampler('Euler a', { denoise, x, sigmas: plan.sigmas, noise: () => noise.next(), options: { eta: 0 } });
  const b = await runSampler('Euler', { denoise, x, sigmas: plan.sigmas, noise: () => noise.next() });
  assert.deepEqual(a, b);
  const c = await runSampler('Euler a', { denoise, x, sigmas: plan.sigmas, noise: () => noise.next() });
  assert.notDeepEqual(a, c);
});

test('s_churn adds noise to Euler only inside [s_tmin, s_tmax]', async () => {
  const plan = planSampling({ sampler: 'Euler', steps: 6, model });
  const denoise = makeDenoiser(async (xs) => xs.map((v) => 0.3 * v + 0.1), { prediction: 'epsilon', schedule: model });
  const x = new Float32Array(64).fill(5);
  const mk = () => {
    const g = createRng('cpu', 9);
    return () => g.randn(64);
  };
  const base = await runSampler('Euler', { denoise, x, sigmas: plan.sigmas, noise: mk() });
  const churned = await runSampler('Euler', { denoise, x, sigmas: plan.sigmas, noise: mk(), options: { sChurn: 1 } });
  assert.notDeepEqual(base, churned);
  const outside = await runSampler('Euler', { denoise, x, sigmas: plan.sigmas, noise: mk(), options: { sChurn: 1, sTmin: 100, sTmax: 200 } });
  assert.deepEqual(base, outside);
});

test('with eta 0 every ODE sampler converges to a fine Heun solution at its order', async () => {
  // A smooth, non-trivial model (the scheduler-reference fake) so the solvers' coefficients matter.
  const denoise = makeDenoiser(async (xs, t) => xs.map((v) => 0.3 * v + 0.1 * Math.sin(t / 100)), {
    prediction: 'epsilon',
    schedule: model,
  });
  const x = createRng('cpu', 5)
    .randn(64)
    .map((v) => v * model.sigmaMax);
  const fine = buildSigmas('karras', 400, model);
  const refTo0 = await runSampler('Heun', { denoise, x, sigmas: fine });
  const refToMin = await runSampler('Heun', { denoise, x, sigmas: fine.slice(0, -1) });
  const firstOrder = new Set(['euler', 'euler_a', 'ddim']);
  for (const s of SAMPLERS) {
    if (s.id === 'lcm') continue; // LCM is a consistency jump, not an ODE solver.
    const errs: number[] = [];
    for (const n of [20, 40]) {
      let sig = buildSigmas('karras', n, model);
      if (s.endsAtSigmaMin) sig = endAtSigmaMin(sig, model.sigmaMin);
      const out = await runSampler(s.id, { denoise, x, sigmas: sig, options: { eta: 0 }, noise: () => new Float32Array(64) });
      const ref = sig[sig.length - 1] === 0 ? refTo0 : refToMin;
      errs.push(out.reduce((m, v, i) => Math.max(m, Math.abs(v - ref[i]!)), 0));
    }
    if (s.id === 'dpm_adaptive') {
      assert.ok(errs[1]! < 2e-2, `${s.name}: error ${errs[1]}`);
      continue;
    }
    const ratio = errs[1]! / errs[0]!;
    const want = firstOrder.has(s.id) ? 0.6 : 0.35;
    assert.ok(ratio < want, `${s.name}: error ${errs[0]} -> ${errs[1]} when doubling steps (ratio ${ratio})`);
  }
});
