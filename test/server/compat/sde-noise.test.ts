// A1111's SDE samplers through the surfaces: seed 000's /runsync and A1111's txt2img (the 'a1111' flavour, Brownian
// noise by default) give the pixels of fixtures refs/sde/sd1_txt2img_dpmpp_2m_sde_karras_seed42 (k-diffusion +
// torchsde as A1111 drives them); the native route keeps diffusers' Gaussian noise unless asked.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import sharp from 'sharp';
import { pipelineRef } from '../../engine/pipelines/tolerance.ts';
import { startCompatServer, type CompatServer } from './helpers.ts';

const KEY = 'sde-key';
const auth = { authorization: `Bearer ${KEY}`, 'content-type': 'application/json' };
const reference = pipelineRef('sde', 'sd1_txt2img_dpmpp_2m_sde_karras_seed42');
const settings = {
  prompt: 'a photo of an astronaut riding a horse on mars',
  negative_prompt: 'lowres, bad anatomy, worst quality',
  seed: 42,
  steps: 8,
  cfg_scale: 7.5,
  width: 64,
  height: 64,
};

let s: CompatServer;
before(async () => {
  s = await startCompatServer({ keys: [{ name: 'sde-user', key: KEY, role: 'user' }] });
});
after(async () => {
  await s.close();
});

const post = (url: string, payload: unknown) => s.app.inject({ method: 'POST', url, payload: payload as object, headers: auth });
const rgb = async (b64: string) => new Uint8Array(await sharp(Buffer.from(b64, 'base64')).removeAlpha().raw().toBuffer());

function maxDifference(pixels: Uint8Array): number {
  const expected = reference.t('image_u8_a1111').data;
  assert.equal(pixels.length, expected.length);
  let worst = 0;
  for (let i = 0; i < pixels.length; i++) worst = Math.max(worst, Math.abs(pixels[i]! - expected[i]!));
  return worst;
}

test("seed 000 /runsync: DPM++ 2M SDE Karras gives A1111's pixels for the same seed (Brownian-tree noise)", async () => {
  const r = await post('/v2/sde/runsync', { input: { ...settings, sampler_name: 'DPM++ 2M SDE', scheduler: 'Karras' } });
  assert.equal(r.statusCode, 200, r.body);
  assert.equal(r.json().status, 'COMPLETED', r.body.slice(0, 300));
  const worst = maxDifference(await rgb(r.json().output.image_base64));
  assert.ok(worst <= 2, `max difference ${worst} of 255`);
});

test("A1111 txt2img: the same request gives A1111's pixels too", async () => {
  const r = await post('/sdapi/v1/txt2img', { ...settings, sampler_name: 'DPM++ 2M SDE', scheduler: 'Karras' });
  assert.equal(r.statusCode, 200, r.body);
  const worst = maxDifference(await rgb(r.json().images[0]));
  assert.ok(worst <= 2, `max difference ${worst} of 255`);
});

test('native /v1/generate: Gaussian SDE noise by default; flavour "a1111" gives the reference; a bad noise value is a 400 naming it', async () => {
  const native = { ...settings, sampler: 'DPM++ 2M SDE', schedule: 'Karras' };
  const plain = await post('/v1/generate', native);
  assert.equal(plain.statusCode, 200, plain.body);
  assert.ok(maxDifference(await rgb(plain.json().images[0].base64)) > 2, 'diffusers conventions give another image');
  const a1111 = await post('/v1/generate', { ...native, flavour: 'a1111' });
  assert.equal(a1111.statusCode, 200, a1111.body);
  assert.ok(maxDifference(await rgb(a1111.json().images[0].base64)) <= 2);
  const gaussian = await post('/v1/generate', { ...native, flavour: 'a1111', noise: 'gaussian' });
  assert.ok(maxDifference(await rgb(gaussian.json().images[0].base64)) > 2, 'noise "gaussian" overrides the flavour default');
  const bad = await post('/v1/generate', { ...native, noise: 'pink' });
  assert.equal(bad.statusCode, 400, bad.body);
  assert.match(bad.body, /noise/);
});
