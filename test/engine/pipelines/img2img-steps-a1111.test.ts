// img2img's step rule per flavour, through the real engine on the tiny SD1 model: the 'a1111' flavour (the A1111 and
// seed 000 surfaces) walks A1111's tail of the schedule (sd_samplers_kdiffusion sample_img2img: t_enc =
// int(min(strength, 0.999) * steps), sigmas[steps - t_enc - 1:], so t_enc + 1 steps), native requests diffusers'
// (int(steps * strength) steps); DDIM/PLMS/UniPC keep diffusers' rule in both.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createEngine } from '../../../src/engine/engine.ts';
import type { GenerateRequest, ProgressEvent } from '../../../src/engine/api.ts';
import { img2imgSigmas, planSampling } from '../../../src/engine/samplers/index.ts';
import { createModelSchedule } from '../../../src/engine/samplers/model-schedule.ts';

const cacheDir = mkdtempSync(join(tmpdir(), 'kiln-img2img-steps-'));
const engine = createEngine({ cacheDir });
after(async () => {
  await engine.close();
  rmSync(cacheDir, { recursive: true, force: true });
});

const initImage = (() => {
  const data = new Uint8Array(64 * 64 * 3);
  for (let i = 0; i < data.length; i++) data[i] = (i * 37 + (i >> 5) * 11) % 256;
  return { data, width: 64, height: 64, channels: 3 as const };
})();

const request = (extra: Partial<GenerateRequest> & { strength: number }): GenerateRequest => {
  const { strength, ...rest } = extra;
  return {
    model: { path: 'test/fixtures/tiny-sd1' },
    prompts: ['a painting'],
    width: 64,
    height: 64,
    steps: 10,
    cfgScale: 7,
    sampler: 'Euler',
    seed: 1234,
    init: { image: initImage, strength },
    ...rest,
  };
};

async function run(req: GenerateRequest): Promise<{ evaluations: number; pixels: Buffer }> {
  const events: ProgressEvent[] = [];
  const r = await engine.generate(req, { onProgress: (e) => events.push(e) });
  return { evaluations: events.filter((e) => e.phase === 'sampling').length, pixels: Buffer.from(r.images[0]!.image.data) };
}

test('img2img Euler, 10 steps: A1111 runs t_enc + 1 steps (8 at 0.75, 6 at 0.5, 1 at 0.05), diffusers int(steps x strength)', async () => {
  for (const [strength, a1111, diffusers] of [
    [0.75, 8, 7],
    [0.5, 6, 5],
    [0.05, 1, 0],
  ] as const) {
    const native = await run(request({ strength }));
    const flavoured = await run(request({ strength, flavour: 'a1111' }));
    assert.equal(native.evaluations, diffusers, `native, strength ${strength}`);
    assert.equal(flavoured.evaluations, a1111, `a1111 flavour, strength ${strength}`);
  }
});

test('img2img DDIM keeps the diffusers step count under the a1111 flavour', async () => {
  const flavoured = await run(request({ strength: 0.75, sampler: 'DDIM', flavour: 'a1111' }));
  assert.equal(flavoured.evaluations, 7);
});

test("img2imgSigmas: A1111's tail is sigmas[steps - t_enc - 1:] of the flavour's own schedule (DPM2 after its discard)", () => {
  const model = createModelSchedule({ float64Cumprod: true });
  for (const sampler of ['Euler a', 'DPM2', 'DPM++ 2M SDE']) {
    const plan = planSampling({ sampler, schedule: 'Karras', steps: 20, model, flavour: 'a1111' });
    const tEnc = Math.floor(0.75 * 20);
    assert.deepEqual(img2imgSigmas(plan.sigmas, 0.75, 'a1111', plan.sampler), plan.sigmas.slice(20 - tEnc - 1), sampler);
    assert.deepEqual(img2imgSigmas(plan.sigmas, 0.75, 'diffusers', plan.sampler), plan.sigmas.slice(20 - tEnc), sampler);
    // Strength 1 is capped at 0.999: t_enc = 19, every step runs from sigma_max.
    assert.deepEqual(img2imgSigmas(plan.sigmas, 1, 'a1111', plan.sampler), plan.sigmas, sampler);
  }
});
