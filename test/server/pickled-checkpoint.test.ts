// A .ckpt in models/checkpoints, and a diffusers folder of .bin weights, are listed, described and generate through
// the server exactly like their .safetensors twins (the engine's restricted reader); a malicious one is listed with
// the refusal as its problem.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, cpSync, mkdirSync, symlinkSync } from 'node:fs';
import { join, resolve } from 'node:path';
import sharp from 'sharp';
import { buildApp } from '../../src/server/app.ts';
import { testConfig } from '../../src/server/config.ts';
import { createEngine } from '../../src/engine/engine.ts';
import { tempDir } from '../queue/helpers.ts';
import { writePickledFolder } from '../engine/weights/pickle-helpers.ts';

test('a .ckpt checkpoint is listed with its family and generates the same pixels as its .safetensors twin', async () => {
  const t = tempDir('kiln-ckpt-server-');
  const ckpt = join(t.dir, 'models', 'checkpoints');
  mkdirSync(ckpt, { recursive: true });
  symlinkSync(resolve('test/fixtures/tiny-sd1.safetensors'), join(ckpt, 'tiny-single.safetensors'));
  symlinkSync(resolve('test/fixtures/tiny-sd1.ckpt'), join(ckpt, 'old-single.ckpt'));
  copyFileSync('test/fixtures/tiny-upscalers/malicious-system.pth', join(ckpt, 'evil.ckpt'));
  const engine = createEngine({ cacheDir: join(t.dir, 'graphs') });
  const app = await buildApp(testConfig(t.dir, { model: 'tiny-single', tokenizer: resolve('test/fixtures/tiny-sd1') }), { engine: engine as never });
  try {
    await app.ready();
    await app.kiln.engineReady;
    const models = (await app.inject('/v1/models')).json().models as { name: string; family: string | null; problem?: string }[];
    const by = Object.fromEntries(models.map((m) => [m.name, m]));
    assert.equal(by['old-single']?.family, 'sd1');
    assert.equal(by.evil?.family, null);
    assert.match(by.evil!.problem!, /evil\.ckpt: refused: the pickle names the global "posix system"/);

    const gen = async (model: string) => {
      const r = await app.inject({ method: 'POST', url: '/v1/generate', payload: { model, prompt: 'a red apple', width: 64, height: 64, steps: 2, seed: 7 } });
      assert.equal(r.statusCode, 200, r.body);
      return sharp(Buffer.from(r.json().images[0].base64, 'base64')).raw().toBuffer();
    };
    assert.deepEqual(await gen('old-single'), await gen('tiny-single'));
    const bad = await app.inject({ method: 'POST', url: '/v1/generate', payload: { model: 'evil', prompt: 'x', width: 64, height: 64, steps: 1 } });
    assert.ok(bad.statusCode >= 400 && bad.statusCode < 500, `4xx for the malicious checkpoint, got ${bad.statusCode}: ${bad.body}`);
    assert.match(bad.body, /posix system/);
  } finally {
    await app.close();
    await engine.close();
    t.remove();
  }
});

test('a diffusers folder of .bin weights is listed with its family and generates the same pixels as the safetensors folder', async () => {
  const t = tempDir('kiln-bin-folder-server-');
  const ckpt = join(t.dir, 'models', 'checkpoints');
  mkdirSync(ckpt, { recursive: true });
  symlinkSync(resolve('test/fixtures/tiny-sd1'), join(ckpt, 'tiny-folder'));
  writePickledFolder('test/fixtures/tiny-sd1', join(ckpt, 'old-folder'));
  cpSync(join(ckpt, 'old-folder'), join(ckpt, 'evil-folder'), { recursive: true });
  copyFileSync('test/fixtures/tiny-upscalers/malicious-system.pth', join(ckpt, 'evil-folder', 'vae', 'diffusion_pytorch_model.bin'));
  const engine = createEngine({ cacheDir: join(t.dir, 'graphs') });
  const app = await buildApp(testConfig(t.dir, { model: 'tiny-folder' }), { engine: engine as never });
  try {
    await app.ready();
    await app.kiln.engineReady;
    const models = (await app.inject('/v1/models')).json().models as { name: string; family: string | null; problem?: string }[];
    const by = Object.fromEntries(models.map((m) => [m.name, m]));
    assert.equal(by['old-folder']?.family, 'sd1');
    assert.equal(by['evil-folder']?.family, null);
    assert.match(by['evil-folder']!.problem!, /diffusion_pytorch_model\.bin: refused: the pickle names the global "posix system"/);

    const gen = async (model: string) => {
      const r = await app.inject({ method: 'POST', url: '/v1/generate', payload: { model, prompt: 'a red apple', width: 64, height: 64, steps: 2, seed: 7 } });
      assert.equal(r.statusCode, 200, r.body);
      return sharp(Buffer.from(r.json().images[0].base64, 'base64')).raw().toBuffer();
    };
    assert.deepEqual(await gen('old-folder'), await gen('tiny-folder'));
    const bad = await app.inject({ method: 'POST', url: '/v1/generate', payload: { model: 'evil-folder', prompt: 'x', width: 64, height: 64, steps: 1 } });
    assert.ok(bad.statusCode >= 400 && bad.statusCode < 500, `4xx for the malicious folder, got ${bad.statusCode}: ${bad.body}`);
    assert.match(bad.body, /posix system/);
  } finally {
    await app.close();
    await engine.close();
    t.remove();
  }
});
