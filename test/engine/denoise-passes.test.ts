// Denoise passes: wrappers apply in order around the pass's model (the first innermost), passes run in order
// from the previous pass's result, and progress counts evaluations over all passes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { runDenoisePasses, type DenoisePass, type DenoiserWrapper } from '../../src/engine/pipelines/denoise.ts';
import type { Denoiser } from '../../src/engine/samplers/index.ts';

test('wrappers nest in order, passes chain, progress spans every pass', async () => {
  const calls: string[] = [];
  const model =
    (name: string): Denoiser =>
    async (x) => {
      calls.push(name);
      return x.map((v) => v / 2);
    };
  const tag =
    (name: string): DenoiserWrapper =>
    (inner) =>
    async (x, sigma) => {
      calls.push(`${name}>`);
      const out = await inner(x, sigma);
      calls.push(`<${name}`);
      return out;
    };
  const passes: DenoisePass[] = [
    { model: model('first'), sigmas: [2, 1, 0], wrappers: [tag('a'), tag('b')] },
    { model: model('second'), sigmas: [1, 0], wrappers: [] },
  ];
  const progress: [number, number][] = [];
  const x = await runDenoisePasses(passes, new Float32Array([8]), {
    sampler: 'euler',
    noise: () => new Float32Array(1),
    options: {},
    onEval: (done, total) => progress.push([done, total]),
  });
  assert.deepEqual(calls.slice(0, 5), ['b>', 'a>', 'first', '<a', '<b'], 'the first wrapper is innermost');
  assert.deepEqual(
    calls.filter((c) => !c.includes('>') && !c.includes('<')),
    ['first', 'first', 'second'],
  );
  assert.deepEqual(progress, [
    [1, 3],
    [2, 3],
    [3, 3],
  ]);
  // Euler, x + (sigma' - sigma) (x - D(x)) / sigma with D(x) = x/2: 8 -> 6 (sigma 2 -> 1) -> 3 (1 -> 0), then the
  // second pass from 3: 1.5 (1 -> 0).
  assert.deepEqual([...x], [1.5]);
});

test('a pass with a single sigma leaves x as it is and costs no evaluation', async () => {
  const x = await runDenoisePasses([{ model: async () => new Float32Array([0]), sigmas: [0.5], wrappers: [] }], new Float32Array([3]), {
    sampler: 'euler',
    noise: () => new Float32Array(1),
    options: {},
  });
  assert.deepEqual([...x], [3]);
});
