// Batch windows (a split job's chunks): images start..start+count-1 of a batch generated alone equal the same
// images of the whole batch, pixels and infotext, on the tiny SD1 model. The batch mixes a prompt longer than one
// 77-token chunk with short ones (the window must be padded as the whole batch is), a variation seed and an
// ancestral sampler (per-image noise during sampling).
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createEngine } from '../../../src/engine/engine.ts';
import { KilnInputError, type GenerateRequest, type GenerateResult } from '../../../src/engine/api.ts';
import { BATCH_WINDOW_ALIGN, batchSplitRefusal } from '../../../src/engine/index.ts';

const cacheDir = mkdtempSync(join(tmpdir(), 'kiln-window-'));
const engine = createEngine({ cacheDir });
after(async () => {
  await engine.close();
  rmSync(cacheDir, { recursive: true, force: true });
});

const LONG = Array.from({ length: 90 }, (_, i) => `word${i}`).join(' ');

const request = (extra: Partial<GenerateRequest> = {}): GenerateRequest => ({
  model: { path: 'test/fixtures/tiny-sd1' },
  prompts: ['a red apple', LONG, 'a lighthouse'],
  negativePrompt: ['blurry', '', 'dark'],
  imagesPerPrompt: 3,
  width: 64,
  height: 64,
  steps: 3,
  cfgScale: 7,
  sampler: 'Euler a',
  seed: 1234,
  variation: { seed: 77, strength: 0.3 },
  ...extra,
});

function same(window: GenerateResult, whole: GenerateResult, start: number): void {
  window.images.forEach((img, i) => {
    const ref = whole.images[start + i]!;
    assert.equal(img.seed, ref.seed, `image ${start + i}: seed`);
    assert.equal(img.subseed, ref.subseed, `image ${start + i}: subseed`);
    assert.equal(img.prompt, ref.prompt);
    assert.equal(img.infotext, ref.infotext, `image ${start + i}: infotext`);
    assert.ok(Buffer.from(img.image.data).equals(Buffer.from(ref.image.data)), `image ${start + i}: pixels differ`);
  });
}

test('windows of a batch (aligned to the network sub-batch) equal the whole batch image for image', async () => {
  assert.equal(BATCH_WINDOW_ALIGN, 4);
  const whole = await engine.generate(request());
  assert.equal(whole.images.length, 9);
  for (const [start, count] of [
    [0, 4],
    [4, 4],
    [8, 1],
    [4, 5],
  ] as const) {
    const part = await engine.generate(request({ batchWindow: { start, count } }));
    assert.equal(part.images.length, count);
    same(part, whole, start);
  }
});

test('a window of an SDE sampler batch (Brownian-tree noise per image) equals the whole batch', async () => {
  const extra: Partial<GenerateRequest> = {
    sampler: 'DPM++ 2M SDE',
    flavour: 'a1111',
    prompts: ['a red apple'],
    negativePrompt: '',
    imagesPerPrompt: 6,
    variation: { seed: 5, strength: 0 },
  };
  const whole = await engine.generate(request(extra));
  same(await engine.generate(request({ ...extra, batchWindow: { start: 4, count: 2 } })), whole, 4);
});

test('a window off the alignment or past the batch is an input error naming batch_window; DPM adaptive refuses splitting', async () => {
  for (const batchWindow of [
    { start: 2, count: 2 },
    { start: 8, count: 4 },
    { start: 12, count: 1 },
  ]) {
    await assert.rejects(engine.generate(request({ batchWindow })), (e) => e instanceof KilnInputError && e.field === 'batch_window');
  }
  assert.match(batchSplitRefusal(['Euler a', 'DPM adaptive']) ?? '', /DPM adaptive/);
  assert.equal(batchSplitRefusal(['Euler a', undefined, 'DPM++ 2M Karras']), undefined);
});
