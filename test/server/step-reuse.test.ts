// Step reuse (DeepCache) through the real server and engine on the tiny SD1 fixture: native `deep_cache` runs
// (the infotext says so, the image differs from the same request without it), `interval: 1` is off, and bad
// values are 400s naming the field: the schema's bounds, and a branch deeper than this model's UNet can be cut.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import sharp from 'sharp';
import { startCompatServer, type CompatServer } from './compat/helpers.ts';

let s: CompatServer;
before(async () => {
  s = await startCompatServer();
});
after(async () => {
  await s.close();
});

const post = (url: string, payload: unknown) => s.app.inject({ method: 'POST', url, payload: payload as object });
const small = { prompt: 'a red apple on a wooden table', width: 64, height: 64, steps: 6, seed: 5, output: { response: 'base64' } };

test('native /v1: deep_cache generates with the shallow graph between whole steps and writes it into the infotext', async () => {
  const plain = await post('/v1/generate', small);
  assert.equal(plain.statusCode, 200, plain.body);
  const off = await post('/v1/generate', { ...small, deep_cache: { interval: 1 } });
  assert.equal(off.statusCode, 200, off.body);
  const image = (r: typeof plain) => r.json().images[0].base64 as string;
  assert.ok(image(plain).length > 100, plain.body.slice(0, 200));
  assert.equal(image(off), image(plain), 'interval 1 is off');
  const reused = await post('/v1/generate', { ...small, deep_cache: { interval: 3, branch: 1 } });
  assert.equal(reused.statusCode, 200, reused.body);
  const img = reused.json().images[0];
  assert.match(img.infotext, /DeepCache interval: 3, DeepCache branch: 1/);
  // Pixels, not files: the PNGs differ anyway by their embedded parameters.
  const pixels = (r: typeof plain) =>
    sharp(Buffer.from(image(r), 'base64'))
      .raw()
      .toBuffer();
  assert.notDeepEqual(await pixels(reused), await pixels(plain), 'evaluations between whole steps reused the deep feature');
  assert.doesNotMatch(plain.json().images[0].infotext, /DeepCache/);
});

test('native /v1: bad deep_cache values are 400s naming the field', async () => {
  for (const [deep_cache, field] of [
    [{ interval: 11 }, 'deep_cache.interval'],
    [{ interval: 0 }, 'deep_cache.interval'],
    [{ branch: 1 }, 'deep_cache.interval'],
    [{ interval: 2, branch: 33 }, 'deep_cache.branch'],
    [{ interval: 2, depth: 1 }, 'deep_cache.depth'],
    // Within the schema, but tiny-sd1's UNet has fewer layers to cut at.
    [{ interval: 2, branch: 30 }, 'deep_cache.branch'],
  ] as const) {
    const r = await post('/v1/generate', { ...small, deep_cache });
    assert.equal(r.statusCode, 400, `${JSON.stringify(deep_cache)}: ${r.body}`);
    assert.equal(r.json().error.field, field, JSON.stringify(deep_cache));
  }
});
