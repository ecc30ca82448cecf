// Samplers and schedules against diffusers 0.27.2 scheduler references (test/fixtures/refs/schedulers): same
// sigmas/timesteps, same trajectory (every model input and the final sample) with the fake model
// eps = 0.3 * scaled_x + 0.1 * sin(t / 100), and the same recorded noise where the scheduler draws any.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readRef } from './refs.ts';
import { createModelSchedule, makeDenoiser, planSampling, runSampler, sigmaToT, type Prediction } from '../../../src/engine/samplers/index.ts';

const model = createModelSchedule();
const f = Math.fround;

interface Case {
  sampler: string;
  schedule?: string;
  prediction?: Prediction;
  /** Index into the recorded noises for our j-th draw. */
  noiseIndex?: (j: number) => number;
}

const CASES: Record<string, Case> = {
  ddim: { sampler: 'DDIM' },
  pndm: { sampler: 'PLMS' },
  lms: { sampler: 'LMS' },
  euler: { sampler: 'Euler' },
  euler_trailing: { sampler: 'Euler', schedule: 'Simple' },
  euler_a: { sampler: 'Euler a' },
  heun: { sampler: 'Heun' },
  kdpm2: { sampler: 'DPM2', schedule: 'Uniform' },
  // diffusers draws on all 2N-1 iterations and uses the draw of each step's second iteration.
  kdpm2_a: { sampler: 'DPM2 a', schedule: 'Uniform', noiseIndex: (j) => 2 * j + 1 },
  dpmpp_2m: { sampler: 'DPM++ 2M', schedule: 'SGM Uniform' },
  dpmpp_2m_karras: { sampler: 'DPM++ 2M Karras' },
  dpmpp_2m_sde: { sampler: 'DPM++ 2M SDE', schedule: 'SGM Uniform' },
  unipc: { sampler: 'UniPC' },
  deis: { sampler: 'DEIS' },
  lcm: { sampler: 'LCM' },
  euler_vpred: { sampler: 'Euler', prediction: 'v_prediction' },
  dpmpp_2m_vpred: { sampler: 'DPM++ 2M', schedule: 'SGM Uniform', prediction: 'v_prediction' },
};

function close(got: ArrayLike<number>, want: ArrayLike<number>, atol: number, rtol: number, what: string) {
  assert.equal(got.length, want.length, `${what}: length`);
  for (let i = 0; i < want.length; i++) {
    const d = Math.abs(got[i]! - want[i]!);
    assert.ok(d <= atol + rtol * Math.abs(want[i]!), `${what}[${i}]: got ${got[i]}, want ${want[i]} (|d|=${d})`);
  }
}

function dedupe(values: number[]): number[] {
  return values.filter((v, i) => i === 0 || v !== values[i - 1]);
}

for (const [variant, c] of Object.entries(CASES)) {
  for (const steps of [4, 10, 25]) {
    test(`${variant}_${steps}: ${c.sampler}${c.schedule ? ` / ${c.schedule}` : ''} matches diffusers`, async () => {
      const { tensors, json } = readRef(`schedulers/${variant}_${steps}`);
      const plan = planSampling({ sampler: c.sampler, schedule: c.schedule, steps, model });
      const isVp = json.init_noise_sigma === 1;
      const refTimesteps: number[] = json.timesteps;

      // 1. Schedule: sigmas (rtol 1e-6), or the sigmas of the discrete timesteps.
      const wantSigmas: number[] = json.sigmas ? dedupe(json.sigmas) : [...dedupe(refTimesteps).map((t) => model.sigmas[t]!), model.sigmaMin];
      if (variant === 'lcm') wantSigmas[wantSigmas.length - 1] = 0;
      close(plan.sigmas, wantSigmas, 0, 1e-6, 'sigmas');
      assert.ok(Math.abs(plan.initialNoiseScale - (isVp ? Math.sqrt(1 + plan.sigmas[0]! ** 2) : json.init_noise_sigma)) < 1e-5);

      // The timestep diffusers gave the UNet at each sigma (interpolated sigmas fall back to sigma_to_t).
      const tOfSigma = new Map<number, number>();
      const refSigmaList: number[] = json.sigmas ?? refTimesteps.map((t) => model.sigmas[t]);
      refTimesteps.forEach((t, k) => tOfSigma.set(f(refSigmaList[k]!), t));
      const lookupT = (sigma: number) => {
        for (const [s, t] of tOfSigma) if (Math.abs(s - sigma) <= 1e-6 * s) return t;
        return sigmaToT(model, sigma);
      };

      // 2. Trajectory: record every model input; diffusers' samples[k] is the input of the (k+1)-th evaluation.
      const inputs: { x: Float32Array; sigma: number }[] = [];
      const denoise = makeDenoiser(
        async (xs, t, sigma) => {
          const tRef = lookupT(sigma);
          if (plan.timestepMode === 'round' || Number.isInteger(tRef)) {
            // makeDenoiser's own sigma -> t mapping must agree with diffusers wherever t is integral.
            assert.ok(Math.abs(t - tRef) < 1e-3, `timestep ${t} vs diffusers ${tRef}`);
          }
          const c0 = f(0.1 * Math.sin(tRef / 100));
          return xs.map((v) => f(f(f(0.3) * v) + c0));
        },
        { prediction: c.prediction ?? 'epsilon', schedule: model, timestep: plan.timestepMode },
      );
      const noises = tensors.get('noises');
      const per = 256;
      let draws = 0;
      const noise = () => {
        assert.ok(noises, 'sampler drew noise but the reference has none');
        const k = c.noiseIndex ? c.noiseIndex(draws) : draws;
        draws++;
        return noises.f32!.slice(k * per, (k + 1) * per);
      };
      const xRaw = tensors.get('x_raw')!.f32!;
      const x0 = xRaw.map((v) => v * plan.initialNoiseScale);
      const out = await runSampler(plan.sampler, {
        denoise: async (x, sigma) => {
          inputs.push({ x, sigma });
          return denoise(x, sigma);
        },
        x: x0,
        sigmas: plan.sigmas,
        noise,
      });

      const samples = tensors.get('samples')!;
      const nSamples = samples.shape[0]!;
      assert.equal(inputs.length, nSamples - 1, 'model evaluations');
      const toRef = (x: Float32Array, sigma: number) => (isVp ? x.map((v) => v / Math.sqrt(1 + sigma * sigma)) : x);
      for (let k = 0; k < inputs.length; k++) {
        const want = samples.f32!.subarray(k * per, (k + 1) * per);
        close(toRef(inputs[k]!.x, inputs[k]!.sigma), want, 1e-4, 1e-4, `samples[${k}]`);
      }
      const finalSigma = plan.sigmas[plan.sigmas.length - 1]!;
      close(toRef(out, finalSigma), samples.f32!.subarray((nSamples - 1) * per), 1e-4, 1e-4, 'final sample');
    });
  }
}
