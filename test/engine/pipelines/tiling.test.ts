// Seamless tiling through the real engine on the tiny models (64x64). Tiling makes the whole generation a
// picture on a torus: the same model, fed the starting noise rolled by half the image, paints the image rolled
// by half, so the wrap-around seam of one is an ordinary pair of neighbouring columns (rows) of the other.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createEngine } from '../../../src/engine/engine.ts';
import { KilnInputError, type GenerateRequest, type RawImage, type Tiling } from '../../../src/engine/api.ts';

const cacheDir = mkdtempSync(join(tmpdir(), 'kiln-tiling-'));
const engine = createEngine({ cacheDir });
after(async () => {
  await engine.close();
  rmSync(cacheDir, { recursive: true, force: true });
});

const SIZE = 64;
/** Latent size of the tiny models (their VAEs downsample by 2). */
const LATENT = 32;

const base = (extra: Partial<GenerateRequest> = {}): GenerateRequest => ({
  model: { path: 'test/fixtures/tiny-sd1' },
  prompts: ['a seamless stone wall texture'],
  width: SIZE,
  height: SIZE,
  steps: 4,
  cfgScale: 7,
  sampler: 'Euler',
  seed: 21,
  ...extra,
});

function gaussianNoise(n: number, seed: number): Float32Array {
  let s = seed >>> 0;
  const next = () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return (s + 0.5) / 2 ** 32;
  };
  return Float32Array.from({ length: n }, () => Math.sqrt(-2 * Math.log(next())) * Math.cos(2 * Math.PI * next()));
}

/** Rolls planes [planes][h][w][channels] by (dy, dx), wrapping around. */
function roll<T extends Float32Array | Uint8Array>(data: T, planes: number, h: number, w: number, channels: number, dy: number, dx: number): T {
  const out = data.slice() as T;
  for (let p = 0; p < planes; p++)
    for (let y = 0; y < h; y++)
      for (let x = 0; x < w; x++)
        for (let c = 0; c < channels; c++) out[((p * h + ((y + dy) % h)) * w + ((x + dx) % w)) * channels + c] = data[((p * h + y) * w + x) * channels + c]!;
  return out;
}

const px = (img: RawImage, x: number, y: number, c: number) => img.data[(y * img.width + x) * img.channels + c]!;

/** Mean absolute difference between columns a and b (axis 'x') or rows a and b (axis 'y'), over RGB. */
function lineDiff(img: RawImage, axis: 'x' | 'y', a: number, b: number): number {
  const n = axis === 'x' ? img.height : img.width;
  let s = 0;
  for (let i = 0; i < n; i++)
    for (let c = 0; c < 3; c++) s += axis === 'x' ? Math.abs(px(img, a, i, c) - px(img, b, i, c)) : Math.abs(px(img, i, a, c) - px(img, i, b, c));
  return s / (3 * n);
}

/** The wrap-around seam (last vs first column/row) and the mean over neighbouring columns/rows. */
function seamStats(img: RawImage, axis: 'x' | 'y'): { seam: number; neighbours: number } {
  const n = axis === 'x' ? img.width : img.height;
  let sum = 0;
  for (let i = 0; i + 1 < n; i++) sum += lineDiff(img, axis, i, i + 1);
  return { seam: lineDiff(img, axis, n - 1, 0), neighbours: sum / (n - 1) };
}

/**
 * How far the seam is from seamless, per axis: the image generated from noise rolled by half the latent size,
 * rolled back, against the image itself, over the two lines at the wrap-around seam (mean, in 8-bit levels). In the
 * rolled generation those lines sit in the middle of the picture, painted as ordinary neighbours.
 */
async function seamError(req: GenerateRequest, axis: 'x' | 'y'): Promise<{ image: RawImage; error: number; maxError: number }> {
  const noise = gaussianNoise(4 * LATENT * LATENT, 5);
  const image = (await engine.generate(req, {}, { initialNoise: noise })).images[0]!.image;
  const [dy, dx] = axis === 'x' ? [0, LATENT / 2] : [LATENT / 2, 0];
  const shifted = (await engine.generate(req, {}, { initialNoise: roll(noise, 4, LATENT, LATENT, 1, dy, dx) })).images[0]!.image;
  const back = roll(shifted.data, 1, SIZE, SIZE, 3, (SIZE - 2 * dy) % SIZE, (SIZE - 2 * dx) % SIZE);
  let sum = 0;
  let maxError = 0;
  let count = 0;
  for (const line of [0, SIZE - 1])
    for (let i = 0; i < SIZE; i++)
      for (let c = 0; c < 3; c++) {
        const k = ((axis === 'x' ? i * SIZE + line : line * SIZE + i) * 3 + c) as number;
        const d = Math.abs(back[k]! - image.data[k]!);
        sum += d;
        maxError = Math.max(maxError, d);
        count++;
      }
  return { image, error: sum / count, maxError };
}

async function assertSeamless(req: GenerateRequest, axis: 'x' | 'y', what: string) {
  const { image, error, maxError } = await seamError(req, axis);
  assert.ok(maxError <= 2 && error < 0.1, `${what}: the ${axis} seam is the model's own interior painting (max ${maxError}, mean ${error.toFixed(3)} levels)`);
  const { seam, neighbours } = seamStats(image, axis);
  assert.ok(seam < 2 * neighbours && seam > neighbours / 2, `${what}: ${axis} seam ${seam.toFixed(1)} vs neighbours ${neighbours.toFixed(1)} levels`);
}

async function assertSeam(req: GenerateRequest, axis: 'x' | 'y', what: string) {
  const { error } = await seamError(req, axis);
  assert.ok(error > 10, `${what}: the ${axis} seam is not what the model paints between neighbours (mean ${error.toFixed(2)} levels)`);
}

test('tiny-sd1, tiling true: the wrap-around seams are neighbours like any other, on both axes; without tiling they are seams', async () => {
  for (const axis of ['x', 'y'] as const) {
    await assertSeamless(base({ tiling: 'xy' }), axis, 'tiled');
    await assertSeam(base(), axis, 'untiled');
  }
});

test('tiny-sd1, tiling x tiles only horizontally, y only vertically', async () => {
  await assertSeamless(base({ tiling: 'x' }), 'x', 'x-only');
  await assertSeam(base({ tiling: 'x' }), 'y', 'x-only');
  await assertSeamless(base({ tiling: 'y' }), 'y', 'y-only');
  await assertSeam(base({ tiling: 'y' }), 'x', 'y-only');
});

test('tiny-sdxl tiles too', async () => {
  const sdxl = (tiling?: Tiling) => base({ model: { path: 'test/fixtures/tiny-sdxl' }, tiling });
  for (const axis of ['x', 'y'] as const) {
    await assertSeamless(sdxl('xy'), axis, 'SDXL tiled');
    await assertSeam(sdxl(), axis, 'SDXL untiled');
  }
});

const pixels = (r: { images: { image: { data: Uint8Array } }[] }) => Buffer.from(r.images[0]!.image.data);

test('same seed and settings give the same pixels with tiling twice; tiling changes the pixels; infotext says so as A1111 does', async () => {
  const req = base({ sampler: 'Euler a', tiling: 'xy' });
  const a = await engine.generate(req);
  const b = await engine.generate(req);
  assert.deepEqual(pixels(a), pixels(b));
  const plain = await engine.generate({ ...req, tiling: undefined });
  assert.notDeepEqual(pixels(a), pixels(plain));
  const xOnly = await engine.generate({ ...req, tiling: 'x' });
  assert.notDeepEqual(pixels(xOnly), pixels(a));
  assert.match(a.images[0]!.infotext, /, Tiling: True, Version: /);
  assert.doesNotMatch(plain.images[0]!.infotext, /Tiling|Tile X/);
  assert.match(xOnly.images[0]!.infotext, /, Tile X: True, Tile Y: False, Version: /);
});

test('img2img tiles: the VAE encoder runs as its tiled variant, and each variant is built once and cached', async () => {
  const data = new Uint8Array(SIZE * SIZE * 3);
  for (let i = 0; i < data.length; i++) data[i] = (i * 37 + (i >> 7) * 11) % 256;
  const req = base({ init: { image: { data, width: SIZE, height: SIZE, channels: 3 }, strength: 0.6 }, tiling: 'xy' });
  const a = await engine.generate(req);
  const b = await engine.generate(req);
  assert.deepEqual(pixels(a), pixels(b));
  assert.notDeepEqual(pixels(a), pixels(await engine.generate({ ...req, tiling: undefined })));
  assert.match(a.images[0]!.infotext, /Denoising strength: 0.6, Tiling: True/);
  const keys = readdirSync(cacheDir)
    .filter((d) => /^(unet|vae-encoder|vae-decoder)-[0-9a-f]+$/.test(d))
    .map((d) => JSON.parse(readFileSync(join(cacheDir, d, 'key.json'), 'utf8')) as { network: string; weightsIdentity: string; options: { tiling?: string } });
  for (const network of ['unet', 'vae-encoder', 'vae-decoder']) {
    const variants = keys.filter((k) => k.network === network).map((k) => `${k.weightsIdentity}:${k.options.tiling ?? 'none'}`);
    assert.equal(new Set(variants).size, variants.length, `${network}: one graph per model and variant`);
    assert.ok(variants.some((v) => v.endsWith(':xy')) && variants.some((v) => v.endsWith(':none')), `${network}: ${variants}`);
  }
});

test('a tiling the engine does not know is an input error naming the field', async () => {
  await assert.rejects(
    engine.generate(base({ tiling: 'z' as Tiling })),
    (e: unknown) => e instanceof KilnInputError && e.field === 'tiling' && /"xy", "x", "y"/.test(e.message),
  );
});
