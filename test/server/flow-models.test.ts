// FLUX.1 and SD3 through the real server and engine (app.inject): the tiny models of test/engine/tiny-flow-models.ts
// in models/checkpoints/, picked by name on the native API, A1111 (Forge's distilled_cfg_scale) and seed 003 (the
// README's "black-forest-labs/FLUX.1-dev" as a label of the tiny Flux). What these families cannot do yet is a 501
// naming the field; sides that are not multiples of 16 and samplers that do not apply are 400s naming theirs.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { buildApp } from '../../src/server/app.ts';
import { testConfig } from '../../src/server/config.ts';
import { createEngine } from '../../src/engine/engine.ts';
import { readInfotext } from '../../src/storage/encode.ts';
import { tempDir } from '../queue/helpers.ts';
import { writeTinyFluxFolder, writeTinySd3Folder } from '../engine/tiny-flow-models.ts';
import { TINY_SD1 } from './compat/helpers.ts';

const t = tempDir('kiln-flow-server-');
const engine = createEngine({ cacheDir: join(t.dir, 'graphs') });
let app: FastifyInstance;

before(async () => {
  const ckpt = join(t.dir, 'models', 'checkpoints');
  mkdirSync(ckpt, { recursive: true });
  writeTinyFluxFolder(join(ckpt, 'tiny-flux'));
  writeTinySd3Folder(join(ckpt, 'tiny-sd3'));
  app = await buildApp(testConfig(t.dir, { model: TINY_SD1, modelAliases: { 'black-forest-labs/FLUX.1-dev': 'tiny-flux' } }), { engine: engine as never });
  await app.ready();
});
after(async () => {
  await app.close();
  await engine.close();
  t.remove();
});

const gen = (body: object) => app.inject({ method: 'POST', url: '/v1/generate', payload: body });
const a1111 = (body: object) => app.inject({ method: 'POST', url: '/sdapi/v1/txt2img', payload: body });
const qs = (params: Record<string, string | number>) => new URLSearchParams(Object.entries(params).map(([k, v]) => [k, String(v)])).toString();
const small = { prompt: 'a photo of a red fox', width: 64, height: 64, steps: 2, seed: 7 };

test('native /v1/generate: a tiny Flux and a tiny SD3 image by model name; the listing says their family', async () => {
  const flux = await gen({ ...small, model: 'tiny-flux', guidance: 2.5 });
  assert.equal(flux.statusCode, 200, flux.body);
  const image = flux.json().images[0];
  assert.equal(image.width, 64);
  assert.equal(image.height, 64);
  const again = await gen({ ...small, model: 'tiny-flux', guidance: 2.5 });
  assert.equal(again.json().images[0].base64, image.base64, 'same seed, same pixels');
  const infotext = await readInfotext(Buffer.from(image.base64, 'base64'));
  assert.match(infotext!, /Steps: 2, Sampler: Euler, CFG scale: 1, Distilled CFG Scale: 2\.5, Seed: 7, Size: 64x64, Model hash: \w+, Model: tiny-flux/);

  const sd3 = await gen({ ...small, model: 'tiny-sd3', negative_prompt: 'blurry', cfg_scale: 5 });
  assert.equal(sd3.statusCode, 200, sd3.body);
  assert.match((await readInfotext(Buffer.from(sd3.json().images[0].base64, 'base64')))!, /CFG scale: 5, Seed: 7/);

  const models = (await app.inject('/v1/models')).json();
  const row = (name: string) => (models.models ?? models).find((m: { name: string }) => m.name === name);
  assert.equal(row('tiny-flux')?.family, 'flux');
  assert.equal(row('tiny-sd3')?.family, 'sd3');
});

test('A1111 txt2img on Flux: Forge distilled_cfg_scale, Simple schedule; bad sides and inapplicable samplers are 400s naming the field', async () => {
  const ok = await a1111({
    ...small,
    sampler_name: 'Euler',
    scheduler: 'Simple',
    distilled_cfg_scale: 3,
    override_settings: { sd_model_checkpoint: 'tiny-flux' },
  });
  assert.equal(ok.statusCode, 200, ok.body.slice(0, 300));
  const info = JSON.parse(ok.json().info);
  assert.match(info.infotexts[0], /Sampler: Euler, Schedule type: Simple, CFG scale: 1, Distilled CFG Scale: 3, Seed: 7/);

  const wide = await a1111({ ...small, width: 72, override_settings: { sd_model_checkpoint: 'tiny-flux' } });
  assert.equal(wide.statusCode, 400, wide.body);
  assert.match(wide.body, /width.*multiple of 16/);
  const ancestral = await a1111({ ...small, sampler_name: 'Euler a', override_settings: { sd_model_checkpoint: 'tiny-flux' } });
  assert.equal(ancestral.statusCode, 400, ancestral.body);
  assert.match(ancestral.body, /sampler: Euler a does not apply to FLUX\.1/);
  // Refused at submission, not after queueing: an async job is never created.
  const job = await app.inject({ method: 'POST', url: '/v1/jobs', payload: { ...small, model: 'tiny-sd3', sampler: 'DPM++ 2M', schedule: 'Karras' } });
  assert.equal(job.statusCode, 400, job.body);
  assert.match(job.body, /does not apply to SD3/);
});

test('what FLUX.1 / SD3 cannot do yet is a 501 naming the field: hires fix, LoRA, inpainting masks, tiling, step reuse', async () => {
  const hires = await a1111({ ...small, enable_hr: true, hr_scale: 2, override_settings: { sd_model_checkpoint: 'tiny-flux' } });
  assert.equal(hires.statusCode, 501, hires.body.slice(0, 300));
  assert.match(hires.body, /hires fix on FLUX\.1 models/);
  const lora = await gen({ ...small, model: 'tiny-sd3', loras: [{ name: 'some_style', weight: 0.8 }] });
  assert.equal(lora.statusCode, 501, lora.body.slice(0, 300));
  assert.match(lora.body, /LoRA.* on SD3 models/);
  const tiling = await gen({ ...small, model: 'tiny-flux', tiling: true });
  assert.equal(tiling.statusCode, 501, tiling.body.slice(0, 300));
  assert.match(tiling.body, /tiling on FLUX\.1 models/);
  const deepCache = await gen({ ...small, model: 'tiny-sd3', deep_cache: { interval: 2 } });
  assert.equal(deepCache.statusCode, 501, deepCache.body.slice(0, 300));
  assert.match(deepCache.body, /step reuse \(DeepCache\) on SD3 models/);
});

test('seed 003: model_id "black-forest-labs/FLUX.1-dev" runs the Flux model it labels; guidance_scale is its distilled guidance', async () => {
  const r = await app.inject({
    method: 'POST',
    url: `/post_config?${qs({ prompt: 'a photo of a red fox', model_id: 'black-forest-labs/FLUX.1-dev', num_inference_steps: 2, width: 64, height: 64, guidance_scale: 3.5, seed: 3 })}`,
  });
  assert.equal(r.statusCode, 200, r.body.slice(0, 300));
  assert.match((await readInfotext(r.rawPayload))!, /CFG scale: 1, Distilled CFG Scale: 3\.5, Seed: 3, Size: 64x64, .*Model: tiny-flux/);
  const missing = await app.inject({ method: 'POST', url: `/post_config?${qs({ prompt: 'x', model_id: 'black-forest-labs/FLUX.1-schnell' })}` });
  assert.equal(missing.statusCode, 501);
  assert.match(missing.json().detail, /no Flux model "black-forest-labs\/FLUX\.1-schnell" on this server/);
});
