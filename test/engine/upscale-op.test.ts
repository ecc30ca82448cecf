// The `upscale` operation (A1111 Extras) through the engine: the A1111 tiled reference, sizes, crop, blend.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createEngine, KilnInputError, type ProgressEvent } from '../../src/engine/index.ts';
import { SafetensorsFile } from '../../src/engine/weights/safetensors.ts';
import { FIXTURES } from './nets/fixture-io.ts';

const cacheDir = mkdtempSync(join(tmpdir(), 'kiln-upscale-op-'));
const engine = createEngine({ cacheDir, threads: 1 });
after(async () => {
  await engine.close();
  rmSync(cacheDir, { recursive: true, force: true });
});

const ref = SafetensorsFile.open(join(FIXTURES, 'refs', 'upscalers', 'a1111_tiled_esrgan_x4.safetensors'));
const image = { data: ref.readBytes('image'), width: 80, height: 64, channels: 3 as const };
const esrgan = { name: 'esrgan-x4-old', path: join(FIXTURES, 'tiny-upscalers', 'esrgan-x4-old.safetensors') };

test('upscale x4 with an ESRGAN model and tile 32/8 gives the A1111 reference pixels; progress reaches 1 without going back', async () => {
  const events: ProgressEvent[] = [];
  const r = await engine.run('upscale', { image, mode: 0, scale: 4, upscaler1: esrgan, tile: 32, tileOverlap: 8 }, { onProgress: (e) => events.push(e) });
  assert.deepEqual([r.image.width, r.image.height], [320, 256]);
  const expected = ref.readBytes('tiled');
  let off = 0;
  for (let i = 0; i < expected.length; i++) {
    const d = Math.abs(r.image.data[i]! - expected[i]!);
    assert.ok(d <= 1, `value ${i}: ${r.image.data[i]} vs ${expected[i]}`);
    if (d) off++;
  }
  assert.ok(off <= expected.length * 0.005, `${off} values off by one`);
  assert.deepEqual(r.info, { 'Postprocess upscale by': '4', 'Postprocess upscaler': 'esrgan-x4-old' });
  const f = events.map((e) => e.fraction);
  assert.ok(f.length >= 9 && f.every((v, i) => i === 0 || v >= f[i - 1]!));
});

test('upscale to a size with crop, and a second upscaler blended in', async () => {
  const r = await engine.run('upscale', {
    image,
    mode: 1,
    width: 100,
    height: 100,
    crop: true,
    upscaler1: { name: 'Lanczos' },
    upscaler2: { name: 'Nearest' },
    upscaler2Visibility: 0.5,
  });
  assert.deepEqual([r.image.width, r.image.height], [100, 100]);
  assert.deepEqual(r.info, {
    'Postprocess upscale to': '100x100',
    'Postprocess crop to': '100x100',
    'Postprocess upscaler': 'Lanczos',
    'Postprocess upscaler 2': 'Nearest',
  });
  // A model x4 asked for x2 runs once, then Lanczos to floor(size * 2 / 8) * 8.
  const half = await engine.run('upscale', {
    image,
    mode: 0,
    scale: 2,
    upscaler1: { name: 'compact-x4', path: join(FIXTURES, 'tiny-upscalers', 'compact-x4.safetensors') },
  });
  assert.deepEqual([half.image.width, half.image.height], [160, 128]);
});

test('an upscale past the size bound is a KilnInputError naming the field', async () => {
  await assert.rejects(
    engine.run('upscale', { image, mode: 0, scale: 1000, upscaler1: { name: 'Lanczos' } }),
    (e: unknown) => e instanceof KilnInputError && e.field === 'upscaling_resize',
  );
});
