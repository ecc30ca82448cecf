// A1111's img2img step rule on the surfaces (real server, real engine, tiny SD1): A1111's /sdapi/v1/img2img runs
// the 'a1111' flavour, so it gives the pixels of a native img2img job that asks for that flavour (t_enc + 1 steps
// over A1111's tail of the schedule) and not those of a plain native job (diffusers' int(steps x strength) steps).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import sharp from 'sharp';
import { compatServerForFile } from './helpers.ts';

const { post } = compatServerForFile();
const rgb = async (b64: string) => sharp(Buffer.from(b64, 'base64')).removeAlpha().raw().toBuffer();

test('A1111 img2img (denoising 0.75 of 4 Euler steps) equals native img2img with flavour "a1111", not plain native img2img', async () => {
  const raw = Buffer.alloc(64 * 64 * 3);
  for (let i = 0; i < raw.length; i++) raw[i] = (i * 7 + Math.floor(i / 192) * 13) % 256;
  const init = (
    await sharp(raw, { raw: { width: 64, height: 64, channels: 3 } })
      .png()
      .toBuffer()
  ).toString('base64');
  const common = { prompt: 'a boat', steps: 4, width: 64, height: 64, denoising_strength: 0.75, seed: 3, cfg_scale: 7 };
  const a1111 = await post('/sdapi/v1/img2img', { ...common, init_images: [init], sampler_name: 'Euler' });
  assert.equal(a1111.statusCode, 200, a1111.body);
  const native = (extra: object) => post('/v1/generate', { ...common, type: 'img2img', init_image: init, sampler: 'Euler', ...extra });
  const flavoured = await native({ flavour: 'a1111' });
  assert.equal(flavoured.statusCode, 200, flavoured.body);
  const plain = await native({});
  assert.equal(plain.statusCode, 200, plain.body);
  const a = await rgb(a1111.json().images[0]);
  assert.ok(a.equals(await rgb(flavoured.json().images[0].base64)), 'the A1111 surface runs the a1111 flavour');
  assert.ok(!a.equals(await rgb(plain.json().images[0].base64)), 'native requests keep diffusers rule (3 steps instead of 4)');
});
