import { test } from 'node:test';
import assert from 'node:assert/strict';
import { LATENT_UPSCALE_MODES, upscaleLatent } from '../../../src/engine/pipelines/latent-upscale.ts';
import { assertClose, ref } from '../nets/fixture-io.ts';

const r = ref('hires/latent_upscale');
const KEYS: Record<string, string> = {
  Latent: 'bilinear',
  'Latent (antialiased)': 'bilinear_aa',
  'Latent (bicubic)': 'bicubic',
  'Latent (bicubic antialiased)': 'bicubic_aa',
  'Latent (nearest)': 'nearest',
  'Latent (nearest-exact)': 'nearest_exact',
};

for (const [name, { mode, antialias }] of Object.entries(LATENT_UPSCALE_MODES)) {
  for (const [h, w] of [
    [16, 24],
    [12, 18],
  ] as const) {
    test(`latent upscale "${name}" to ${h}x${w} matches torch F.interpolate (atol 2e-6: float32 summation order; nearest exact)`, () => {
      const out = upscaleLatent(r.float('latent'), h, w, mode, antialias);
      const tol = mode.startsWith('nearest') ? 0 : 2e-6;
      assertClose(out, r.float(`${KEYS[name]}_${h}x${w}`), tol, 0, name);
    });
  }
}

test('every A1111 latent upscale mode has a reference', () => {
  assert.deepEqual(Object.keys(LATENT_UPSCALE_MODES).sort(), Object.keys(KEYS).sort());
});
