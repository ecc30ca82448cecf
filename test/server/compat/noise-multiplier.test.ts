// A1111 img2img `initial_noise_multiplier`: the noise added to the init latent is scaled by it (A1111's
// StableDiffusionProcessingImg2Img.sample), and the infotext says "Noise multiplier" when it is not 1.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import sharp from 'sharp';
import { compatServerForFile } from './helpers.ts';

const { post } = compatServerForFile();
const pixels = async (b64: string) => sharp(Buffer.from(b64, 'base64')).raw().toBuffer();

test('img2img initial_noise_multiplier: 1 changes nothing, another value changes the image reproducibly and is in the infotext', async () => {
  const src = (await post('/sdapi/v1/txt2img', { prompt: 'a', steps: 1, width: 64, height: 64, seed: 1 })).json().images[0];
  const base = { init_images: [src], prompt: 'a house', steps: 4, width: 64, height: 64, denoising_strength: 0.6, seed: 3 };
  const plain = await post('/sdapi/v1/img2img', base);
  const one = await post('/sdapi/v1/img2img', { ...base, initial_noise_multiplier: 1 });
  const half = await post('/sdapi/v1/img2img', { ...base, initial_noise_multiplier: 0.5 });
  const again = await post('/sdapi/v1/img2img', { ...base, initial_noise_multiplier: 0.5 });
  for (const r of [plain, one, half, again]) assert.equal(r.statusCode, 200, r.body);
  assert.deepEqual(await pixels(one.json().images[0]), await pixels(plain.json().images[0]));
  assert.notDeepEqual(await pixels(half.json().images[0]), await pixels(plain.json().images[0]));
  assert.deepEqual(await pixels(again.json().images[0]), await pixels(half.json().images[0]));
  assert.match(JSON.parse(half.json().info).infotexts[0], /Noise multiplier: 0\.5/);
  assert.doesNotMatch(JSON.parse(one.json().info).infotexts[0], /Noise multiplier/);
});

test('native: initial_noise_multiplier out of range is a 400 naming it', async () => {
  const r = await post('/v1/jobs', { prompt: 'x', width: 64, height: 64, initial_noise_multiplier: 5 });
  assert.equal(r.statusCode, 400);
  assert.equal(r.json().error.field, 'initial_noise_multiplier');
});
