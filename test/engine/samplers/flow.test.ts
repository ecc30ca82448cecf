import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { euler } from '../../../src/engine/samplers/k-diffusion.ts';
import {
  FLUX_DEV_SCHEDULE,
  FLUX_SCHNELL_SCHEDULE,
  flowAddNoise,
  flowSchedule,
  flowShiftMu,
  makeFlowDenoiser,
  SD3_SCHEDULE,
  sampleFlowEuler,
  type FlowScheduleConfig,
} from '../../../src/engine/samplers/flow.ts';
import { resolveOptions } from '../../../src/engine/samplers/types.ts';
import { SafetensorsFile } from '../../../src/engine/weights/safetensors.ts';

const REFS = join(import.meta.dirname, '..', '..', 'fixtures', 'refs');

function assertRel(actual: readonly number[], expected: Float32Array, rtol: number, atol: number, what: string): void {
  assert.equal(actual.length, expected.length, `${what}: length`);
  for (let i = 0; i < expected.length; i++) {
    const e = expected[i]!;
    assert.ok(Math.abs(actual[i]! - e) <= atol + rtol * Math.abs(e), `${what}[${i}]: ${actual[i]} vs ${e}`);
  }
}

test('Flux schedules match FluxPipeline (sigmas rtol 1e-6, timesteps exact) and BFL get_schedule, schnell and dev', () => {
  const json = JSON.parse(readFileSync(join(REFS, 'flux', 'schedules.json'), 'utf8'));
  const file = SafetensorsFile.open(join(REFS, 'flux', 'schedules.safetensors'));
  const configs: Record<string, FlowScheduleConfig> = { schnell: FLUX_SCHNELL_SCHEDULE, dev: FLUX_DEV_SCHEDULE };
  assert.deepEqual({ ...json.configs.dev }, { ...FLUX_DEV_SCHEDULE });
  assert.equal(json.cases.length, 12);
  for (const c of json.cases as { key: string; variant: string; steps: number; image_seq_len: number; mu: number }[]) {
    const cfg = configs[c.variant]!;
    if (cfg.use_dynamic_shifting) assert.ok(Math.abs(flowShiftMu(c.image_seq_len, cfg) - c.mu) < 1e-12, `${c.key} mu`);
    const s = flowSchedule(c.steps, cfg, { spacing: 'flux', imageSeqLen: c.image_seq_len });
    assertRel(s.sigmas, file.tensor(`${c.key}.sigmas`).data, 1e-6, 0, `${c.key}.sigmas`);
    assert.deepEqual(s.timesteps, [...file.tensor(`${c.key}.timesteps`).data], `${c.key}.timesteps`);
    // BFL's schedule is the same curve computed in torch float32 (the JSON: within 1.2e-7 of diffusers').
    assertRel(s.sigmas, file.tensor(`${c.key}.bfl`).data, 0, 2e-7, `${c.key}.bfl`);
  }
});

test('SD3 schedules match StableDiffusion3Pipeline (shift 3.0)', () => {
  const file = SafetensorsFile.open(join(REFS, 'sd3', 'schedules.safetensors'));
  for (const steps of [4, 28]) {
    const s = flowSchedule(steps, SD3_SCHEDULE, { spacing: 'sd3' });
    assertRel(s.sigmas, file.tensor(`shift3_${steps}.sigmas`).data, 1e-6, 0, `sd3 ${steps} sigmas`);
    assert.deepEqual(s.timesteps, [...file.tensor(`shift3_${steps}.timesteps`).data], `sd3 ${steps} timesteps`);
  }
});

test('a dynamically shifted schedule without the image size is refused', () => {
  assert.throws(() => flowSchedule(4, FLUX_DEV_SCHEDULE, { spacing: 'flux' }), /image token count/);
  assert.throws(() => flowSchedule(0, FLUX_SCHNELL_SCHEDULE, { spacing: 'flux' }), /positive integer/);
});

test('Euler along the exact velocity of a straight path lands on x0; the k-diffusion Euler on the flow denoiser agrees', async () => {
  const x0 = Float32Array.from({ length: 64 }, (_, i) => Math.sin(i) * 2);
  const noise = Float32Array.from({ length: 64 }, (_, i) => Math.cos(3 * i));
  // The true velocity of x_sigma = (1 - sigma) x0 + sigma noise is noise - x0 wherever x is on the path.
  const velocity = async () => Float32Array.from(noise, (n, i) => n - x0[i]!);
  const { sigmas } = flowSchedule(4, FLUX_DEV_SCHEDULE, { spacing: 'flux', imageSeqLen: 16 });
  const start = flowAddNoise(x0, noise, sigmas[0]!);
  const seen: number[] = [];
  const flow = await sampleFlowEuler(velocity, start, sigmas, (i) => seen.push(i));
  assert.deepEqual(seen, [0, 1, 2, 3]);
  for (let i = 0; i < 64; i++) assert.ok(Math.abs(flow[i]! - x0[i]!) < 1e-5, `flow[${i}]`);
  const kd = await euler(makeFlowDenoiser(velocity), start, sigmas, { noise: () => new Float32Array(64), options: resolveOptions() });
  for (let i = 0; i < 64; i++) assert.ok(Math.abs(kd[i]! - flow[i]!) < 1e-5, `k-diffusion euler[${i}]`);
});
