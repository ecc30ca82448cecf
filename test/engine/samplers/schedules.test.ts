import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  SAMPLERS,
  SCHEDULES,
  buildSigmas,
  createModelSchedule,
  parseSamplerName,
  parseScheduleName,
  resolveSchedule,
  listSamplers,
  listSchedules,
  planSampling,
  img2imgSigmasDiffusers,
  img2imgSigmasA1111,
  makeDenoiser,
  sigmaToT,
  tToSigma,
} from '../../../src/engine/samplers/index.ts';
import { KilnInputError } from '../../../src/engine/api.ts';
import { readRef } from './refs.ts';

const model = createModelSchedule();

test('model schedule: SD1.5 sigma range and t <-> sigma round trip', () => {
  assert.ok(Math.abs(model.sigmaMax - 14.614645004272461) < 1e-6 * 14.6);
  assert.ok(Math.abs(model.sigmaMin - 0.029167532920837402) < 1e-8);
  for (const t of [0, 1, 250.5, 500, 998.25, 999]) assert.ok(Math.abs(sigmaToT(model, tToSigma(model, t)) - t) < 1e-6);
});

test('every schedule: descending, ends with a single 0, starts near sigma_max', () => {
  for (const s of SCHEDULES) {
    if (s.name === 'automatic') continue;
    for (const steps of [1, 2, 3, 7, 10, 20, 30, 50]) {
      const sig = buildSigmas(s.name, steps, model);
      assert.equal(sig[sig.length - 1], 0, `${s.label}/${steps}`);
      assert.equal(sig.length, (s.name === 'lcm' ? Math.min(steps, 50) : steps) + 1, `${s.label}/${steps} length`);
      for (let i = 0; i + 1 < sig.length; i++) assert.ok(sig[i]! > sig[i + 1]!, `${s.label}/${steps}: not descending at ${i}: ${sig}`);
      // (DDIM's leading spacing puts a single step at t=1, as diffusers and A1111 do.)
      if (!(s.name === 'ddim' && steps === 1)) {
        assert.ok(sig[0]! <= model.sigmaMax * 1.001 && sig[0]! > 1, `${s.label}/${steps}: starts at ${sig[0]}`);
      }
    }
  }
});

test('Karras matches diffusers use_karras_sigmas; DDIM and LCM timesteps match diffusers', () => {
  for (const n of [4, 10, 25]) {
    const karras = readRef(`schedulers/dpmpp_2m_karras_${n}`).json.sigmas as number[];
    buildSigmas('karras', n, model).forEach((v, i) => assert.ok(Math.abs(v - karras[i]!) <= 1e-6 * karras[i]!, `${v} vs ${karras[i]}`));
    const ddimT = readRef(`schedulers/ddim_${n}`).json.timesteps as number[];
    assert.deepEqual(
      buildSigmas('ddim', n, model).slice(0, -1),
      ddimT.map((t) => model.sigmas[t]),
    );
    const lcmT = readRef(`schedulers/lcm_${n}`).json.timesteps as number[];
    assert.deepEqual(
      buildSigmas('lcm', n, model).slice(0, -1),
      lcmT.map((t) => model.sigmas[t]),
    );
  }
});

test('exponential, polyexponential, kl optimal and beta span sigma_max..sigma_min', () => {
  for (const name of ['exponential', 'polyexponential', 'kl_optimal', 'beta'] as const) {
    const sig = buildSigmas(name, 12, model);
    assert.ok(Math.abs(sig[0]! - model.sigmaMax) < 1e-5 * model.sigmaMax, `${name} start ${sig[0]}`);
    assert.ok(Math.abs(sig[11]! - model.sigmaMin) < 1e-5, `${name} end ${sig[11]}`);
  }
  // Exponential is geometric: constant ratio.
  const e = buildSigmas('exponential', 5, model);
  assert.ok(Math.abs(e[1]! / e[0]! - e[3]! / e[2]!) < 1e-12);
  // Beta(0.6, 0.6) is symmetric: the middle step sits halfway between sigma_min and sigma_max.
  const b = buildSigmas('beta', 3, model);
  assert.ok(Math.abs(b[1]! - (model.sigmaMin + model.sigmaMax) / 2) < 1e-6);
});

test('schedule names: labels, names and the seed aliases resolve; unknown ones are 400s listing the valid ones', () => {
  assert.equal(parseScheduleName('Karras'), 'karras');
  assert.equal(parseScheduleName('default'), 'automatic');
  assert.equal(parseScheduleName('karras'), 'karras');
  assert.equal(parseScheduleName('exponential'), 'exponential');
  assert.equal(parseScheduleName('ddim'), 'ddim');
  assert.equal(parseScheduleName('pndm'), 'ddim');
  assert.equal(parseScheduleName('SGM Uniform'), 'sgm_uniform');
  assert.equal(parseScheduleName('sgm_uniform'), 'sgm_uniform');
  assert.throws(
    () => parseScheduleName('wobbly', 'scheduler_type'),
    (e: unknown) => e instanceof KilnInputError && e.field === 'scheduler_type' && /Karras/.test(e.message),
  );
});

test('sampler names: A1111 names, aliases, legacy combined names', () => {
  assert.deepEqual(parseSamplerName('Euler a'), { sampler: 'euler_a', schedule: 'automatic' });
  assert.deepEqual(parseSamplerName('k_euler_ancestral'), { sampler: 'euler_a', schedule: 'automatic' });
  assert.deepEqual(parseSamplerName('DPM++ 2M Karras'), { sampler: 'dpmpp_2m', schedule: 'karras' });
  assert.deepEqual(parseSamplerName('DPM2 a Karras'), { sampler: 'dpm2_a', schedule: 'karras' });
  assert.deepEqual(parseSamplerName('DPM++ 2M SDE Karras'), { sampler: 'dpmpp_2m_sde', schedule: 'karras' });
  assert.deepEqual(parseSamplerName('DPM++ 2M SDE Heun Exponential'), { sampler: 'dpmpp_2m_sde_heun', schedule: 'exponential' });
  assert.deepEqual(parseSamplerName('LMS Karras'), { sampler: 'lms', schedule: 'karras' });
  assert.deepEqual(parseSamplerName('k_dpmpp_2m_ka'), { sampler: 'dpmpp_2m', schedule: 'karras' });
  assert.deepEqual(parseSamplerName('dpmpp_2m', 'karras'), { sampler: 'dpmpp_2m', schedule: 'karras' });
  // An explicit schedule wins over a suffix.
  assert.deepEqual(parseSamplerName('DPM++ 2M Karras', 'Exponential'), { sampler: 'dpmpp_2m', schedule: 'exponential' });
  assert.deepEqual(parseSamplerName('DPM++ 2M Karras', 'Automatic'), { sampler: 'dpmpp_2m', schedule: 'karras' });
  assert.deepEqual(parseSamplerName('euler a', null), { sampler: 'euler_a', schedule: 'automatic' });
  assert.throws(
    () => parseSamplerName('Euler b'),
    (e: unknown) => e instanceof KilnInputError && e.field === 'sampler' && /DPM\+\+ 2M/.test(e.message),
  );
  assert.throws(
    () => parseSamplerName('Euler', 'nope'),
    (e: unknown) => e instanceof KilnInputError && e.field === 'scheduler',
  );
});

test('automatic schedules follow A1111 (DPM++ 2M -> Karras, 2M SDE -> Exponential, Euler -> Uniform)', () => {
  assert.equal(resolveSchedule('dpmpp_2m', 'automatic'), 'karras');
  assert.equal(resolveSchedule('dpmpp_2m_sde', 'automatic'), 'exponential');
  assert.equal(resolveSchedule('euler', 'automatic'), 'uniform');
  assert.equal(resolveSchedule('ddim', 'automatic'), 'ddim');
  assert.equal(resolveSchedule('euler', 'karras'), 'karras');
});

test('GET-able lists cover every sampler and schedule', () => {
  const samplers = listSamplers();
  assert.equal(samplers.length, SAMPLERS.length);
  assert.ok(samplers.length >= 18);
  for (const name of [
    'Euler',
    'Euler a',
    'LMS',
    'Heun',
    'DPM2',
    'DPM2 a',
    'DPM++ 2S a',
    'DPM++ 2M',
    'DPM++ SDE',
    'DPM++ 2M SDE',
    'DPM++ 2M SDE Heun',
    'DPM++ 3M SDE',
    'DPM fast',
    'DPM adaptive',
    'DDIM',
    'PLMS',
    'UniPC',
    'LCM',
  ]) {
    assert.ok(
      samplers.some((s) => s.name === name),
      name,
    );
  }
  assert.equal(samplers.find((s) => s.name === 'Heun')!.options.second_order, true);
  const schedules = listSchedules();
  for (const label of ['Automatic', 'Uniform', 'Karras', 'Exponential', 'Polyexponential', 'SGM Uniform', 'Simple', 'Normal', 'DDIM', 'Beta']) {
    assert.ok(
      schedules.some((s) => s.label === label),
      label,
    );
  }
});

test('img2img: diffusers strength 0.6 of 10 DDIM steps runs the last 6 timesteps (as the pipeline reference)', () => {
  const plan = planSampling({ sampler: 'DDIM', steps: 10, model });
  const tail = img2imgSigmasDiffusers(plan.sigmas, 0.6);
  const want = (readRef('pipelines/sd1_img2img_ddim').json.timesteps as number[]).map((t) => model.sigmas[t]);
  assert.deepEqual(tail.slice(0, -1), want);
  assert.equal(tail[tail.length - 1], model.sigmaMin);
  // A1111: t_enc = int(0.6 * 10) = 6, so 7 steps run.
  assert.equal(img2imgSigmasA1111(plan.sigmas, 0.6).length - 1, 7);
  assert.equal(img2imgSigmasDiffusers(plan.sigmas, 1).length, plan.sigmas.length);
  assert.equal(img2imgSigmasDiffusers(plan.sigmas, 0).length - 1, 0);
});

test('plan: DPM2 discards the next-to-last sigma in the a1111 flavour only; initial noise scale per flavour', () => {
  const d = planSampling({ sampler: 'DPM2', steps: 10, model, flavour: 'diffusers' });
  const a = planSampling({ sampler: 'DPM2', steps: 10, model, flavour: 'a1111' });
  assert.equal(d.sigmas.length, 11);
  assert.equal(a.sigmas.length, 11);
  assert.notDeepEqual(a.sigmas, d.sigmas);
  const dpmD = planSampling({ sampler: 'DPM++ 2M', steps: 10, model, flavour: 'diffusers' });
  const dpmA = planSampling({ sampler: 'DPM++ 2M', steps: 10, model, flavour: 'a1111' });
  assert.ok(Math.abs(dpmD.initialNoiseScale - Math.sqrt(1 + model.sigmaMax ** 2)) < 1e-9);
  assert.equal(dpmA.initialNoiseScale, dpmA.sigmas[0]);
  assert.equal(dpmD.timestepMode, 'round');
  assert.equal(dpmA.timestepMode, 'interpolate');
});

test('makeDenoiser: eps and v predictions of the same x0 agree; timesteps interpolate or round', async () => {
  const x = new Float32Array([1, -2, 3, 0.5]);
  const x0 = new Float32Array([0.1, 0.2, -0.3, 0.4]);
  const sigma = 3.3;
  const seen: number[] = [];
  const eps = makeDenoiser(
    async (xs, t) => {
      seen.push(t);
      const s = Math.sqrt(sigma * sigma + 1);
      return xs.map((v, i) => (v * s - x0[i]!) / sigma);
    },
    { prediction: 'epsilon', schedule: model },
  );
  const v = makeDenoiser(
    async (xs) => {
      const s = Math.sqrt(sigma * sigma + 1);
      // v = alpha * eps - sigma_vp * x0 with alpha = 1/s, sigma_vp = sigma/s.
      return xs.map((val, i) => (((val * s - x0[i]!) / sigma) * 1) / s - (sigma / s) * x0[i]!);
    },
    { prediction: 'v_prediction', schedule: model },
  );
  const a = await eps(x, sigma);
  const b = await v(x, sigma);
  for (let i = 0; i < 4; i++) {
    assert.ok(Math.abs(a[i]! - x0[i]!) < 1e-5);
    assert.ok(Math.abs(b[i]! - x0[i]!) < 1e-5);
  }
  assert.ok(!Number.isInteger(seen[0]));
  const rounded = makeDenoiser(
    async (xs, t) => {
      seen.push(t);
      return xs;
    },
    { prediction: 'epsilon', schedule: model, timestep: 'round' },
  );
  await rounded(x, sigma);
  assert.equal(seen[1], Math.round(seen[0]!));
});
