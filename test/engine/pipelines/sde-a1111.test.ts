// A1111's SDE samplers end to end on tiny-sd1 (fixtures refs/sde/sd1_txt2img_*): the 'a1111' flavour's schedule,
// the noise queries each sampler makes, and the generated latents and pixels. The references run k-diffusion with
// torchsde's Brownian tree around diffusers' tiny-sd1 UNet and VAE, glued as A1111 glues them.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createEngine } from '../../../src/engine/engine.ts';
import type { Tensor } from '../../../src/engine/tensor.ts';
import { createModelSchedule, planSampling, runSampler, sigmaToT } from '../../../src/engine/samplers/index.ts';
import { assertClose, pipelineRef } from './tolerance.ts';

const ref = (name: string) => pipelineRef('sde', name);
const cacheDir = mkdtempSync(join(tmpdir(), 'kiln-sde-'));
const engine = createEngine({ cacheDir });
after(async () => {
  await engine.close();
  rmSync(cacheDir, { recursive: true, force: true });
});

const CASES: { name: string; sampler: string; steps: number }[] = [
  { name: 'sd1_txt2img_dpmpp_2m_sde_karras_seed42', sampler: 'DPM++ 2M SDE', steps: 8 },
  { name: 'sd1_txt2img_dpmpp_2m_sde_karras_batch2_seed42', sampler: 'DPM++ 2M SDE', steps: 8 },
  { name: 'sd1_txt2img_dpmpp_2m_sde_heun_karras_seed42', sampler: 'DPM++ 2M SDE Heun', steps: 8 },
  { name: 'sd1_txt2img_dpmpp_sde_karras_seed42', sampler: 'DPM++ SDE', steps: 8 },
  { name: 'sd1_txt2img_dpmpp_3m_sde_karras_seed42', sampler: 'DPM++ 3M SDE', steps: 8 },
];

const model = createModelSchedule({ float64Cumprod: true });

for (const c of CASES) {
  test(`${c.name}: the a1111 plan's sigmas, timesteps and noise queries are A1111's exactly`, async () => {
    const r = ref(c.name);
    const plan = planSampling({ sampler: c.sampler, schedule: 'Karras', steps: c.steps, model, flavour: 'a1111' });
    assert.deepEqual(plan.sigmas, [...r.t('sigmas').data]);
    assert.equal(plan.initialNoiseScale, plan.sigmas[0]);
    const ts = r.json.unet_timesteps as number[];
    ts.forEach((t, i) => assert.ok(Math.abs(sigmaToT(model, plan.sigmas[i]!) - t) < 1e-3, `t of step ${i}`));
    // The sampler's noise calls (a model that returns zeros is enough to walk the loop).
    const queries: [number, number][] = [];
    await runSampler(plan.sampler, {
      denoise: async (x) => new Float32Array(x.length),
      x: new Float32Array(4),
      sigmas: plan.sigmas,
      noise: (sigma, sigmaNext) => {
        queries.push([sigma!, sigmaNext!]);
        return new Float32Array(4);
      },
    });
    // Exact, except that DPM++ SDE recomputes sigma = exp(-t) in float32, where torch's vectorised exp and ours
    // may differ by one ulp (1 of its 14 queries here).
    const expected = (r.json.noise_queries as { sigma: number; sigma_next: number }[]).map((q) => [q.sigma, q.sigma_next]);
    assert.equal(queries.length, expected.length);
    let exact = 0;
    queries.forEach((q, i) =>
      q.forEach((v, k) => {
        const want = expected[i]![k]!;
        if (v === want) exact++;
        else assert.ok(Math.abs(v - want) <= want * 2 ** -23, `query ${i}: ${v} vs ${want}`);
      }),
    );
    if (c.sampler !== 'DPM++ SDE') assert.equal(exact, 2 * expected.length);
  });

  test(`${c.name}: txt2img with the a1111 flavour gives A1111's latents and pixels`, async () => {
    const r = ref(c.name);
    const seeds = r.json.seeds as number[];
    let finalLatents: Tensor | undefined;
    const result = await engine.generate(
      {
        model: { path: 'test/fixtures/tiny-sd1' },
        prompts: ['a photo of an astronaut riding a horse on mars'],
        negativePrompt: 'lowres, bad anatomy, worst quality',
        imagesPerPrompt: seeds.length,
        width: 64,
        height: 64,
        steps: c.steps,
        cfgScale: 7.5,
        sampler: c.sampler,
        schedule: 'Karras',
        seed: seeds[0],
        flavour: 'a1111',
      },
      {},
      { onFinalLatents: (l) => (finalLatents = l) },
    );
    assertClose(finalLatents!.data, r.t('final_latents').data, 1e-3, 1e-3, `${c.name} final latents`);
    const expected = r.t('image_u8_a1111');
    const per = expected.data.length / seeds.length;
    result.images.forEach((img, n) => {
      assert.equal(img.seed, seeds[n]);
      let worst = 0;
      for (let i = 0; i < per; i++) worst = Math.max(worst, Math.abs(img.image.data[i]! - expected.data[n * per + i]!));
      assert.ok(worst <= 2, `${c.name} image ${n}: max difference ${worst} of 255`);
    });
  });
}

test('the diffusers flavour keeps per-step Gaussian noise; noise "brownian" / "gaussian" overrides either default', async () => {
  const base = {
    model: { path: 'test/fixtures/tiny-sd1' },
    prompts: ['a photo of an astronaut riding a horse on mars'],
    width: 64,
    height: 64,
    steps: 4,
    cfgScale: 7.5,
    sampler: 'DPM++ 2M SDE',
    schedule: 'Karras',
    seed: 42,
  };
  const pixels = async (extra: Record<string, unknown>) => Buffer.from((await engine.generate({ ...base, ...extra })).images[0]!.image.data);
  const a1111 = await pixels({ flavour: 'a1111' });
  const a1111Gaussian = await pixels({ flavour: 'a1111', sdeNoise: 'gaussian' });
  const diffusers = await pixels({});
  const diffusersBrownian = await pixels({ sdeNoise: 'brownian' });
  assert.notDeepEqual(a1111, a1111Gaussian, 'the a1111 flavour defaults to Brownian noise');
  assert.notDeepEqual(diffusers, diffusersBrownian, 'the diffusers flavour defaults to Gaussian noise');
  assert.deepEqual(await pixels({ sdeNoise: 'gaussian' }), diffusers);
  await assert.rejects(engine.generate({ ...base, sdeNoise: 'pink' as 'brownian' }), /noise must be "brownian" or "gaussian"/);
});

test("float32 Karras / exponential sigmas are k-diffusion's bit for bit (the noise fixtures' schedules)", async () => {
  const { buildSigmas } = await import('../../../src/engine/samplers/schedules.ts');
  const cases: [string, 'karras' | 'exponential', number, number, number][] = [
    ['noise_dpmpp_2m_sde_karras10_seed42', 'karras', 10, model.sigmaMin, model.sigmaMax],
    ['noise_dpmpp_2m_sde_exponential10_seed7', 'exponential', 10, model.sigmaMin, model.sigmaMax],
    // A1111's use_old_karras_scheduler_sigmas range.
    ['noise_dpmpp_2m_sde_karras10_oldsigmas_seed0', 'karras', 10, 0.1, 10],
  ];
  for (const [name, schedule, steps, sigmaMin, sigmaMax] of cases) {
    const sigmas = buildSigmas(schedule, steps, { ...model, sigmaMin, sigmaMax }, { float32: true });
    assert.deepEqual(sigmas, [...ref(name).t('sigmas').data], name);
  }
});
