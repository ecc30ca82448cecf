// SDXL through the native API on the real engine: txt2img, img2img and base + refiner, by model name.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, mkdirSync, symlinkSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { buildApp } from '../../src/server/app.ts';
import { testConfig } from '../../src/server/config.ts';
import { createEngine } from '../../src/engine/engine.ts';
import { tempDir } from '../queue/helpers.ts';

test('SDXL txt2img, img2img and refiner through /v1/generate with the real engine', async () => {
  const t = tempDir('kiln-sdxl-');
  const ckpt = join(t.dir, 'models', 'checkpoints');
  mkdirSync(ckpt, { recursive: true });
  symlinkSync(resolve('test/fixtures/tiny-sdxl'), join(ckpt, 'tiny-sdxl'));
  // The base model doubles as a stand-in "refiner" here: the refiner path itself is proven in
  // test/engine/pipelines/refiner.test.ts; this checks the API carries the fields to the engine.
  cpSync(resolve('test/fixtures/tiny-sdxl'), join(ckpt, 'tiny-sdxl-copy'), { recursive: true });
  const engine = createEngine({ cacheDir: join(t.dir, 'graphs') });
  const app = await buildApp(testConfig(t.dir, { model: 'tiny-sdxl' }), { engine: engine as never });
  try {
    await app.ready();
    const gen = (body: object) => app.inject({ method: 'POST', url: '/v1/generate', payload: body });
    const txt = await gen({ prompt: 'a castle', width: 64, height: 64, steps: 3, seed: 5, sampler: 'Euler' });
    assert.equal(txt.statusCode, 200, txt.body);
    const image = txt.json().images[0];
    assert.equal(image.width, 64);
    const b64 = image.base64 as string;
    const img2img = await gen({
      type: 'img2img',
      prompt: 'a castle at night',
      init_image: b64,
      denoising_strength: 0.5,
      width: 64,
      height: 64,
      steps: 4,
      seed: 5,
    });
    assert.equal(img2img.statusCode, 200, img2img.body);
    const refined = await gen({ prompt: 'a castle', width: 64, height: 64, steps: 4, seed: 5, refiner: 'tiny-sdxl-copy', refiner_switch_at: 0.5 });
    assert.equal(refined.statusCode, 200, refined.body);
    const unknown = await gen({ prompt: 'a castle', width: 64, height: 64, steps: 2, refiner: 'nope' });
    assert.equal(unknown.statusCode, 400);
    assert.match(unknown.json().error.message, /refiner/);
  } finally {
    await app.close();
    await engine.close();
    t.remove();
  }
});
