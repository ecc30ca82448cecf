// --quantize on the tiny SDXL fixture: the UNet's Linear layers as 8-/4-bit MatMulNBits, the convolutions float.
// The quality cost is measured as PSNR and max pixel difference of a fixed-seed image against the float model;
// the floors asserted here are the ones docs/quantization.md states.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createEngine, type GenerateRequest } from '../../../src/engine/index.ts';
import { FIXTURES } from '../nets/fixture-io.ts';

const cacheDir = mkdtempSync(join(tmpdir(), 'kiln-quant-sdxl-'));
const engines = {
  none: createEngine({ cacheDir, threads: 1 }),
  q8: createEngine({ cacheDir, threads: 1, quantize: 'q8' }),
  q4: createEngine({ cacheDir, threads: 1, quantize: 'q4' }),
};
after(async () => {
  for (const e of Object.values(engines)) await e.close();
  rmSync(cacheDir, { recursive: true, force: true });
});

const req: GenerateRequest = {
  model: { path: join(FIXTURES, 'tiny-sdxl') },
  prompts: ['a lighthouse on a cliff at dusk'],
  negativePrompt: 'blurry',
  width: 64,
  height: 64,
  steps: 6,
  cfgScale: 6,
  sampler: 'Euler',
  seed: 1234,
};

/** PSNR over 8-bit RGB(A) channels, and the largest channel difference. */
function compare(a: Uint8Array, b: Uint8Array): { psnr: number; maxDiff: number } {
  let se = 0,
    maxDiff = 0;
  for (let i = 0; i < a.length; i++) {
    const d = a[i]! - b[i]!;
    se += d * d;
    maxDiff = Math.max(maxDiff, Math.abs(d));
  }
  const mse = se / a.length;
  return { psnr: mse === 0 ? Infinity : 10 * Math.log10((255 * 255) / mse), maxDiff };
}

// Floors (docs/quantization.md): q8 stays visually identical, q4 close.
const FLOOR = { q8: 35, q4: 22 } as const;

test('--quantize q8 and q4 SDXL images stay within their PSNR floors of the float image, deterministically', async (t) => {
  const base = (await engines.none.generate(req)).images[0]!.image.data;
  for (const mode of ['q8', 'q4'] as const) {
    const img = (await engines[mode].generate(req)).images[0]!.image.data;
    const { psnr, maxDiff } = compare(img, base);
    t.diagnostic(`${mode}: PSNR ${psnr.toFixed(2)} dB, max pixel diff ${maxDiff}`);
    assert.ok(maxDiff > 0, `${mode}: identical to float: the quantised graph was not used`);
    assert.ok(psnr >= FLOOR[mode], `${mode}: PSNR ${psnr} below ${FLOOR[mode]} dB`);
    const again = (await engines[mode].generate(req)).images[0]!.image.data;
    assert.deepEqual(Buffer.from(again), Buffer.from(img));
  }
});
