// The engine's generic entry point: operations by name, generate and load among them.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createEngine, KilnInputError, type GenerateRequest, type OpName } from '../../src/engine/index.ts';

const cacheDir = mkdtempSync(join(tmpdir(), 'kiln-ops-'));
const engine = createEngine({ cacheDir });
after(async () => {
  await engine.close();
  rmSync(cacheDir, { recursive: true, force: true });
});

const req: GenerateRequest = {
  model: { path: 'test/fixtures/tiny-sd1' },
  prompts: ['a red apple'],
  width: 64,
  height: 64,
  steps: 3,
  cfgScale: 7,
  sampler: 'Euler',
  seed: 9,
};

test('run("load") and run("generate") are what load() and generate() do', async () => {
  const info = await engine.run('load', { path: 'test/fixtures/tiny-sd2' });
  assert.equal(info.family, 'sd2');
  assert.equal(info.name, 'tiny-sd2');
  const viaRun = await engine.run('generate', req);
  const direct = await engine.generate(req);
  assert.deepEqual(Buffer.from(viaRun.images[0]!.image.data), Buffer.from(direct.images[0]!.image.data));
  assert.equal(viaRun.images[0]!.infotext, direct.images[0]!.infotext);
});

test('an unknown operation is a KilnInputError naming the known ones', async () => {
  await assert.rejects(
    engine.run('caption' as OpName, {} as never),
    (e: unknown) => e instanceof KilnInputError && e.field === 'op' && /generate, load/.test(e.message),
  );
});

test('width and height 0 mean the model native size', async () => {
  // tiny-sd1: UNet sample_size 32 x latent factor 2 (a VAE with two levels).
  const r = await engine.run('generate', { ...req, width: 0, height: 0, steps: 1 });
  assert.deepEqual([r.images[0]!.image.width, r.images[0]!.image.height], [64, 64]);
});
