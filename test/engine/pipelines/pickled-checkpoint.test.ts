// A pickled .ckpt checkpoint, and a diffusers folder of .bin weights, go through the restricted (no-code) reader and
// the real engine, and give exactly the pixels of their .safetensors twins; a pickle naming a forbidden global is
// refused through the same door.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, cpSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createEngine } from '../../../src/engine/engine.ts';
import { ModelFileError, type GenerateRequest } from '../../../src/engine/api.ts';
import { writePickledFolder } from '../weights/pickle-helpers.ts';

const FIX = 'test/fixtures';
const cacheDir = mkdtempSync(join(tmpdir(), 'kiln-ckpt-'));
const engine = createEngine({ cacheDir });
after(async () => {
  await engine.close();
  rmSync(cacheDir, { recursive: true, force: true });
});

const req = (path: string): GenerateRequest => ({
  model: { path, tokenizerDir: `${FIX}/tiny-sd1` },
  prompts: ['a red apple on a table'],
  negativePrompt: 'blurry',
  width: 64,
  height: 64,
  steps: 4,
  cfgScale: 7,
  sampler: 'Euler a',
  seed: 1234,
});

test('the .ckpt twin of tiny-sd1 gives bit-identical images to the .safetensors', async () => {
  const single = await engine.generate(req(`${FIX}/tiny-sd1.safetensors`));
  const ckpt = await engine.generate(req(`${FIX}/tiny-sd1.ckpt`));
  assert.equal(ckpt.images.length, 1);
  assert.deepEqual(Buffer.from(ckpt.images[0]!.image.data), Buffer.from(single.images[0]!.image.data));
  assert.match(ckpt.images[0]!.infotext, /Model: tiny-sd1,/, 'the model is named after the file without .ckpt');
});

test('a pickle that names a forbidden global is refused by the engine, naming the file and the global', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'kiln-ckpt-bad-'));
  try {
    const evil = join(dir, 'evil.ckpt');
    copyFileSync(`${FIX}/tiny-upscalers/malicious-system.pth`, evil);
    await assert.rejects(engine.generate(req(evil)), (e: Error) => {
      assert.ok(e instanceof ModelFileError || e.name === 'ModelFileError', `a ModelFileError, got ${e.name}`);
      assert.match(e.message, /evil\.ckpt: refused: the pickle names the global "posix system".*nothing was executed/s);
      return true;
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a diffusers folder of .bin weights (zip, legacy, sharded) gives bit-identical images to the safetensors folder', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'kiln-bin-folder-'));
  try {
    const binFolder = join(dir, 'tiny-sd1-bin');
    writePickledFolder(`${FIX}/tiny-sd1`, binFolder);
    const folderReq = (path: string): GenerateRequest => ({ ...req(path), model: { path } });
    const ref = await engine.generate(folderReq(`${FIX}/tiny-sd1`));
    const bin = await engine.generate(folderReq(binFolder));
    assert.equal(bin.images.length, 1);
    assert.deepEqual(Buffer.from(bin.images[0]!.image.data), Buffer.from(ref.images[0]!.image.data));

    // A copy whose UNet .bin names a forbidden global: refused by that name, nothing generated.
    const evilFolder = join(dir, 'tiny-sd1-evil');
    cpSync(binFolder, evilFolder, { recursive: true });
    copyFileSync(`${FIX}/tiny-upscalers/malicious-system.pth`, join(evilFolder, 'unet', 'diffusion_pytorch_model.bin'));
    await assert.rejects(engine.generate(folderReq(evilFolder)), (e: Error) => {
      assert.ok(e instanceof ModelFileError || e.name === 'ModelFileError', `a ModelFileError, got ${e.name}`);
      assert.match(e.message, /unet[\\/]diffusion_pytorch_model\.bin: refused: the pickle names the global "posix system".*nothing was executed/s);
      return true;
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
