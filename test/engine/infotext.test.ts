import { test } from 'node:test';
import assert from 'node:assert/strict';
import { buildInfotext, parseInfotext, quoteInfotextValue } from '../../src/engine/infotext.ts';

test('infotext has A1111 layout: prompt, negative line, comma-separated parameters', () => {
  const text = buildInfotext({
    prompt: 'a red apple',
    negativePrompt: 'blurry',
    steps: 20,
    sampler: 'DPM++ 2M',
    scheduleType: 'Karras',
    cfgScale: 7,
    seed: 1234,
    width: 512,
    height: 768,
    modelHash: '6ce0161689',
    modelName: 'v1-5-pruned-emaonly',
  });
  assert.equal(
    text,
    'a red apple\nNegative prompt: blurry\nSteps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 1234, Size: 512x768, Model hash: 6ce0161689, Model: v1-5-pruned-emaonly',
  );
});

test('infotext omits an empty negative prompt and quotes values with commas or colons', () => {
  const text = buildInfotext({
    prompt: 'p',
    negativePrompt: '',
    steps: 4,
    sampler: 'Euler a',
    cfgScale: 7.5,
    seed: 1,
    width: 64,
    height: 64,
    modelName: 'my, model: v2',
  });
  assert.equal(text, 'p\nSteps: 4, Sampler: Euler a, CFG scale: 7.5, Seed: 1, Size: 64x64, Model: "my, model: v2"');
  assert.equal(quoteInfotextValue('plain'), 'plain');
});

test('parseInfotext reads back what buildInfotext wrote', () => {
  const text = buildInfotext({
    prompt: 'line one\nline two',
    negativePrompt: 'bad',
    steps: 9,
    sampler: 'Euler',
    cfgScale: 3,
    seed: 42,
    width: 64,
    height: 32,
    modelName: 'a,b',
    denoisingStrength: 0.6,
  });
  const parsed = parseInfotext(text);
  assert.equal(parsed.prompt, 'line one\nline two');
  assert.equal(parsed.negativePrompt, 'bad');
  assert.equal(parsed.params.Steps, '9');
  assert.equal(parsed.params.Model, 'a,b');
  assert.equal(parsed.params['Denoising strength'], '0.6');
  assert.equal(parsed.params.Size, '64x32');
});
