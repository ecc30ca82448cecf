// Pipeline behaviour through the real engine on the tiny SD1 model: batches and seeds, progress,
// cancellation, long prompts and input errors.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createEngine } from '../../../src/engine/engine.ts';
import { KilnInputError, type GenerateRequest, type ProgressEvent } from '../../../src/engine/api.ts';

const cacheDir = mkdtempSync(join(tmpdir(), 'kiln-behaviour-'));
const engine = createEngine({ cacheDir });
after(async () => {
  await engine.close();
  rmSync(cacheDir, { recursive: true, force: true });
});

const base = (extra: Partial<GenerateRequest> = {}): GenerateRequest => ({
  model: { path: 'test/fixtures/tiny-sd1' },
  prompts: ['a red apple'],
  width: 64,
  height: 64,
  steps: 4,
  cfgScale: 7,
  sampler: 'Euler a',
  seed: 100,
  ...extra,
});
const pixels = (r: { images: { image: { data: Uint8Array } }[] }, i = 0) => Buffer.from(r.images[i]!.image.data);

test('a batch of prompts x images: image i uses seed + i and equals the same image generated alone', async () => {
  const batch = await engine.generate(base({ prompts: ['a red apple', 'a blue car'], imagesPerPrompt: 2 }));
  assert.deepEqual(
    batch.images.map((i) => i.seed),
    [100, 101, 102, 103],
  );
  assert.deepEqual(
    batch.images.map((i) => i.prompt),
    ['a red apple', 'a red apple', 'a blue car', 'a blue car'],
  );
  const third = await engine.generate(base({ prompts: ['a blue car'], seed: 102 }));
  assert.deepEqual(pixels(third), pixels(batch, 2), 'image 2 of the batch is reproducible from its own seed (ancestral noise included)');
  assert.notDeepEqual(pixels(batch, 0), pixels(batch, 1));
  assert.match(
    batch.images[3]!.infotext,
    /^a blue car\nSteps: 4, Sampler: Euler a, CFG scale: 7, Seed: 103, Size: 64x64, Model hash: [0-9a-f]{10}, Model: tiny-sd1, Version: kiln-\d+\.\d+\.\d+$/,
  );
});

test('no seed means a random one, which is reported and reproduces the image', async () => {
  const a = await engine.generate(base({ seed: undefined }));
  const again = await engine.generate(base({ seed: a.images[0]!.seed }));
  assert.deepEqual(pixels(again), pixels(a));
});

test('the philox generator gives a different, reproducible image', async () => {
  const cpu = await engine.generate(base());
  const philox1 = await engine.generate(base({ rng: 'philox' }));
  const philox2 = await engine.generate(base({ rng: 'philox' }));
  assert.deepEqual(pixels(philox1), pixels(philox2));
  assert.notDeepEqual(pixels(philox1), pixels(cpu));
});

test('progress is reported per model evaluation and reaches 1', async () => {
  const events: ProgressEvent[] = [];
  await engine.generate(base({ sampler: 'Heun', steps: 3 }), { onProgress: (e) => events.push(e) });
  const sampling = events.filter((e) => e.phase === 'sampling');
  assert.equal(sampling.length, 5, 'Heun: 2 evaluations per step except the last');
  assert.deepEqual(
    sampling.map((e) => e.step),
    [1, 2, 3, 4, 5],
  );
  for (let i = 1; i < events.length; i++) assert.ok(events[i]!.fraction >= events[i - 1]!.fraction, 'fraction never goes back');
  assert.equal(events[events.length - 1]!.fraction, 1);
});

test('an AbortSignal stops sampling within one step', async () => {
  const controller = new AbortController();
  let evaluations = 0;
  await assert.rejects(
    engine.generate(base({ steps: 50 }), {
      signal: controller.signal,
      onProgress: (e) => {
        if (e.phase !== 'sampling') return;
        evaluations = e.step;
        if (e.step === 2) controller.abort();
      },
    }),
    (e: Error) => e.name === 'AbortError',
  );
  assert.equal(evaluations, 2, 'no evaluation ran after the abort');
});

test('long prompts (> 75 tokens), emphasis and BREAK change the image but work', async () => {
  const long = Array.from({ length: 40 }, (_, i) => `word${i % 7} apple`).join(', ');
  const plain = await engine.generate(base({ prompts: ['a red apple'] }));
  const weighted = await engine.generate(base({ prompts: ['a (red:1.4) apple'] }));
  const withLong = await engine.generate(base({ prompts: [long], negativePrompt: 'blurry' }));
  const withBreak = await engine.generate(base({ prompts: ['a red apple BREAK on a table'] }));
  assert.notDeepEqual(pixels(weighted), pixels(plain));
  assert.equal(withLong.images.length, 1);
  assert.equal(withBreak.images.length, 1);
});

test('bad input is refused with a KilnInputError naming the field', async () => {
  const cases: [Partial<GenerateRequest>, string][] = [
    [{ width: 61 }, 'width'], // the tiny VAE has a latent factor of 2, real ones 8
    [{ height: -8 }, 'height'],
    [{ steps: 0 }, 'steps'],
    [{ cfgScale: Number.NaN }, 'cfg_scale'],
    [{ sampler: 'Euler z' }, 'sampler'],
    [{ schedule: 'Wobbly' }, 'scheduler'],
    [{ prompts: [] }, 'prompt'],
    [{ seed: -5 }, 'seed'],
    [{ init: { strength: 2, image: { data: new Uint8Array(64 * 64 * 3), width: 64, height: 64, channels: 3 } } }, 'denoising_strength'],
  ];
  for (const [extra, field] of cases) {
    await assert.rejects(engine.generate(base(extra)), (e: Error) => e instanceof KilnInputError && e.field === field, `field ${field}`);
  }
});

test('a missing or pickled model file is refused with a message naming the file', async () => {
  await assert.rejects(engine.generate(base({ model: { path: 'no/such/model.safetensors' } })), /no\/such\/model\.safetensors/);
  await assert.rejects(engine.generate(base({ model: { path: 'weights.ckpt' } })), /weights\.ckpt/);
});
