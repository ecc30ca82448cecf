// One seed rule on every surface (src/engine/rng.ts resolveSeed): -1 or absent picks a random seed that is
// reported back; a negative other than -1 is refused naming the field instead of being silently randomised.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { resolveSeed } from '../../../src/engine/index.ts';
import { startCompatServer } from './helpers.ts';

const server = await startCompatServer();
after(() => server.close());

test('resolveSeed names the field it checks', () => {
  assert.throws(() => resolveSeed(-7, Math.random, 'subseed'), /subseed must be -1 \(random\)/);
  assert.equal(resolveSeed(7, Math.random, 'subseed'), 7);
});

test('OpenAI surface: a negative seed in sd.cpp extra args is a 400 naming seed, -1 is random and reported', async () => {
  const bad = await server.app.inject({
    method: 'POST',
    url: '/v1/images/generations',
    payload: { prompt: 'a cat <sd_cpp_extra_args>{"seed": -5, "steps": 2}</sd_cpp_extra_args>', size: '64x64' },
  });
  assert.equal(bad.statusCode, 400);
  assert.match(bad.json().error.message, /seed must be -1 \(random\)/);
  const ok = await server.app.inject({ method: 'POST', url: '/v1/jobs', payload: { prompt: 'a cat', steps: 1, width: 64, height: 64, seed: -1 } });
  assert.equal(ok.statusCode, 202);
  const [seed] = ok.json().seeds as number[];
  assert.ok(Number.isInteger(seed) && seed! >= 0 && seed! < 4294967294, `reported seed ${seed}`);
});
