// Seamless tiling on every surface, end to end with the real engine and the tiny SD1 fixture: native
// `tiling: true | "x" | "y"`, A1111 `tiling` (bool) on txt2img and img2img, seed 000 / RunPod `tiling`; a value
// outside those is a 4xx (or RunPod's FAILED job) naming the field.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import sharp from 'sharp';
import { toGenerateRequest, SPEC_DEFAULTS, type JobSpec } from '../../src/queue/job-spec.ts';
import { compatServerForFile } from './compat/helpers.ts';

const { post } = compatServerForFile();
const small = { prompt: 'a seamless brick texture', width: 64, height: 64, steps: 2, seed: 3 };

test('the job model maps tiling onto the engine: true -> both axes, "x"/"y" -> one, false/absent -> none', () => {
  const spec = (tiling: JobSpec['tiling']): JobSpec => ({
    kind: 'txt2img',
    prompts: ['x'],
    negativePrompts: [''],
    imagesPerPrompt: 1,
    width: 64,
    height: 64,
    steps: 1,
    cfgScale: 7,
    sampler: 'Euler',
    schedule: 'Automatic',
    seed: 1,
    subseed: 1,
    subseedStrength: 0,
    output: SPEC_DEFAULTS.output,
    tiling,
  });
  const mapped = ([true, 'x', 'y', false, undefined] as const).map((t) => toGenerateRequest(spec(t), { path: 'm' }).tiling);
  assert.deepEqual(mapped, ['xy', 'x', 'y', undefined, undefined]);
});

test('native /v1: tiling true, "x" and "y" generate (infotext says which); any other value is a 400 naming tiling', async () => {
  const infotexts: string[] = [];
  for (const tiling of [true, 'x', 'y', false]) {
    const r = await post('/v1/generate', { ...small, tiling });
    assert.equal(r.statusCode, 200, `${tiling}: ${r.body}`);
    infotexts.push(r.json().images[0].infotext);
  }
  assert.match(infotexts[0]!, /Tiling: True/);
  assert.match(infotexts[1]!, /Tile X: True, Tile Y: False/);
  assert.match(infotexts[2]!, /Tile X: False, Tile Y: True/);
  assert.doesNotMatch(infotexts[3]!, /Tiling|Tile X/);
  for (const tiling of ['z', 'xy', 'true', 1, null, {}]) {
    const r = await post('/v1/jobs', { ...small, tiling });
    assert.equal(r.statusCode, 400, `${JSON.stringify(tiling)}: ${r.body}`);
    assert.equal(r.json().error.field, 'tiling');
  }
});

test('A1111: tiling true on txt2img and img2img writes "Tiling: True"; a non-boolean is its 422 naming body.tiling', async () => {
  const t2i = await post('/sdapi/v1/txt2img', { ...small, tiling: true });
  assert.equal(t2i.statusCode, 200, t2i.body);
  assert.match(JSON.parse(t2i.json().info).infotexts[0], /, Tiling: True, /);
  const plain = await post('/sdapi/v1/txt2img', { ...small, tiling: false });
  assert.notDeepEqual(t2i.json().images[0], plain.json().images[0]);

  const init = (
    await sharp({ create: { width: 64, height: 64, channels: 3, background: '#a05020' } })
      .png()
      .toBuffer()
  ).toString('base64');
  const i2i = await post('/sdapi/v1/img2img', { ...small, init_images: [init], denoising_strength: 0.5, tiling: true });
  assert.equal(i2i.statusCode, 200, i2i.body);
  assert.match(JSON.parse(i2i.json().info).infotexts[0], /Denoising strength: 0.5, Tiling: True/);

  const bad = await post('/sdapi/v1/txt2img', { ...small, tiling: 'x' });
  assert.equal(bad.statusCode, 422);
  assert.deepEqual(bad.json().detail[0].loc, ['body', 'tiling']);
});

test('seed 000 / RunPod: tiling true completes; a non-boolean is a FAILED job naming input.tiling', async () => {
  const ok = (await post('/runsync', { input: { ...small, tiling: true } })).json();
  assert.equal(ok.status, 'COMPLETED', JSON.stringify(ok));
  const bad = (await post('/runsync', { input: { ...small, tiling: 'yes' } })).json();
  assert.equal(bad.status, 'FAILED');
  assert.match(bad.error, /input.tiling: must be boolean/);
});
