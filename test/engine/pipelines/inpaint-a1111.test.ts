// Inpainting and outpainting in A1111 mode on tiny-sd1 (and the 9-channel tiny-sd1-inpaint): paste-back keeps
// every pixel outside the mask, masked-content modes change only the masked area, seeds are deterministic, the
// infotext names the settings, outpainting grows the canvas, and bad masks are refused naming the field.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createEngine } from '../../../src/engine/engine.ts';
import { KilnInputError, type GenerateRequest, type MaskSettings, type RawImage } from '../../../src/engine/api.ts';

const FIX = 'test/fixtures';
const cacheDir = mkdtempSync(join(tmpdir(), 'kiln-inpaint-a1111-'));
const engine = createEngine({ cacheDir });
after(async () => {
  await engine.close();
  rmSync(cacheDir, { recursive: true, force: true });
});

const W = 64;
const H = 64;
/** A colourful, structured init image. */
const initImage: RawImage = {
  data: Uint8Array.from({ length: W * H * 3 }, (_, i) => {
    const p = Math.floor(i / 3);
    const x = p % W;
    const y = Math.floor(p / W);
    return [x * 4, y * 4, (x * y) % 256][i % 3]!;
  }),
  width: W,
  height: H,
  channels: 3,
};
/** White (repaint) inside x 24..39, y 20..43. */
const inMask = (x: number, y: number) => x >= 24 && x < 40 && y >= 20 && y < 44;
function rectMask(width = W, height = H): RawImage {
  const data = new Uint8Array(width * height * 3);
  for (let y = 0; y < height; y++)
    for (let x = 0; x < width; x++)
      if (inMask(Math.floor((x * W) / width), Math.floor((y * H) / height))) data.fill(255, (y * width + x) * 3, (y * width + x + 1) * 3);
  return { data, width, height, channels: 3 };
}

function request(mask: Partial<MaskSettings>, model = `${FIX}/tiny-sd1`): GenerateRequest {
  return {
    model: { path: model },
    prompts: ['a red apple'],
    width: W,
    height: H,
    steps: 4,
    cfgScale: 7,
    sampler: 'Euler a',
    seed: 77,
    init: { image: initImage, strength: 0.75 },
    mask: { image: rectMask(), ...mask },
  };
}

/** Pixels farther than `margin` (Chebyshev) from the mask rectangle, where the output must equal the input. */
function assertOutsideKept(out: RawImage, margin: number, what: string): void {
  let checked = 0;
  for (let y = 0; y < H; y++)
    for (let x = 0; x < W; x++) {
      const near = x >= 24 - margin && x < 40 + margin && y >= 20 - margin && y < 44 + margin;
      if (near) continue;
      for (let c = 0; c < 3; c++) assert.equal(out.data[(y * W + x) * 3 + c], initImage.data[(y * W + x) * 3 + c], `${what}: pixel ${x},${y} changed`);
      checked++;
    }
  assert.ok(checked > 1000, `${what}: checked ${checked} pixels`);
}

function changedInside(out: RawImage): number {
  let changed = 0;
  for (let p = 0; p < W * H; p++) if (inMask(p % W, Math.floor(p / W)) && out.data[p * 3] !== initImage.data[p * 3]) changed++;
  return changed;
}

test('A1111 mode: with no blur every pixel outside the mask is the input, and the masked area is repainted', async () => {
  const { images } = await engine.generate(request({ blurX: 0, blurY: 0 }));
  assertOutsideKept(images[0]!.image, 0, 'blur 0');
  assert.ok(changedInside(images[0]!.image) > 200, 'the masked area was repainted');
});

test('A1111 mode: with blur 4 every pixel beyond the blur kernel is the input; whole image and "only masked" alike', async () => {
  // cv2's kernel reaches int(2.5 * 4 + 0.5) = 10 pixels.
  const whole = await engine.generate(request({ blurX: 4, blurY: 4 }));
  assertOutsideKept(whole.images[0]!.image, 10, 'whole picture');
  const onlyMasked = await engine.generate(request({ blurX: 4, blurY: 4, fullResolution: true, padding: 8 }));
  assertOutsideKept(onlyMasked.images[0]!.image, 10, 'only masked');
  assert.equal(onlyMasked.images[0]!.image.width, W);
  assert.match(onlyMasked.images[0]!.infotext, /Mask blur: 4, Masked content: fill, Inpaint area: Only masked, Only masked padding, pixels: 8/);
});

test('A1111 mode: each masked-content mode changes only the masked area, and the modes differ there', async () => {
  const outs: RawImage[] = [];
  for (const fill of [0, 1, 2, 3] as const) {
    const { images } = await engine.generate(request({ blurX: 0, blurY: 0, fill }));
    assertOutsideKept(images[0]!.image, 0, `fill ${fill}`);
    assert.match(images[0]!.infotext, new RegExp(`Masked content: ${['fill', 'original', 'latent noise', 'latent nothing'][fill]}`));
    outs.push(images[0]!.image);
  }
  for (let a = 0; a < 4; a++) for (let b = a + 1; b < 4; b++) assert.notDeepEqual(outs[a]!.data, outs[b]!.data, `fill ${a} and ${b} give different images`);
});

test('A1111 mode: a fixed seed gives the same pixels; another seed does not', async () => {
  const a = await engine.generate(request({}));
  const b = await engine.generate(request({}));
  const c = await engine.generate({ ...request({}), seed: 78 });
  assert.deepEqual(a.images[0]!.image.data, b.images[0]!.image.data);
  assert.notDeepEqual(a.images[0]!.image.data, c.images[0]!.image.data);
  assert.match(a.images[0]!.infotext, /Denoising strength: 0.75, Mask blur: 4, Masked content: fill, Version/);
});

test('A1111 mode on the 9-channel inpainting model keeps the outside and repaints the inside', async () => {
  const { images } = await engine.generate(request({ blurX: 0, blurY: 0, fill: 1 }, `${FIX}/tiny-sd1-inpaint`));
  assertOutsideKept(images[0]!.image, 0, '9-channel');
  assert.ok(changedInside(images[0]!.image) > 200);
});

test('a mask of another size is resized as A1111 does, and the infotext says so', async () => {
  const { images } = await engine.generate(request({ image: rectMask(32, 32), blurX: 0, blurY: 0 }));
  // Lanczos (3 lobes) at 2x reaches 6 output pixels past the mask's edge.
  assertOutsideKept(images[0]!.image, 6, 'resized mask');
  assert.match(images[0]!.infotext, /Mask resized from: 32x32/);
});

test('an RGBA mask uses its alpha; an all-black mask is refused naming the field', async () => {
  const rgba = rectMask();
  const withAlpha: RawImage = { data: new Uint8Array(W * H * 4), width: W, height: H, channels: 4 };
  for (let p = 0; p < W * H; p++) withAlpha.data[p * 4 + 3] = rgba.data[p * 3]!;
  const a = await engine.generate(request({ image: withAlpha, blurX: 0, blurY: 0 }));
  const b = await engine.generate(request({ blurX: 0, blurY: 0 }));
  assert.deepEqual(a.images[0]!.image.data, b.images[0]!.image.data);
  const black: RawImage = { data: new Uint8Array(W * H * 3), width: W, height: H, channels: 3 };
  await assert.rejects(
    engine.generate(request({ image: black })),
    (e: unknown) => e instanceof KilnInputError && e.field === 'mask' && /all black/.test(e.message),
  );
  await assert.rejects(engine.generate(request({ blurX: 500 })), (e: unknown) => e instanceof KilnInputError && e.field === 'mask_blur_x');
});

test('outpainting grows the canvas by the margins and keeps the original away from the seam', async () => {
  const { mask: _, ...base } = request({});
  const { images } = await engine.generate({ ...base, outpaint: { left: 16, top: 8, bottom: 8, blur: 2 } });
  const out = images[0]!.image;
  assert.equal(out.width, W + 16);
  assert.equal(out.height, H + 16);
  // The original sits at (16, 8); the mask reaches 2 x blur into it and the blur 5 more pixels beyond that.
  const reach = 4 + 5;
  for (let y = reach; y < H - reach; y++)
    for (let x = reach; x < W; x++)
      for (let c = 0; c < 3; c++) assert.equal(out.data[((y + 8) * out.width + x + 16) * 3 + c], initImage.data[(y * W + x) * 3 + c], `pixel ${x},${y}`);
  // The new strip on the left was painted (not left as the copied edge).
  let differs = 0;
  for (let y = 0; y < out.height; y++) if (out.data[(y * out.width + 2) * 3 + 1] !== out.data[(y * out.width + 15) * 3 + 1]) differs++;
  assert.ok(differs > 10, 'the left margin holds new content');
  await assert.rejects(engine.generate({ ...base, outpaint: { left: -4 } }), (e: unknown) => e instanceof KilnInputError && e.field === 'outpaint.left');
});

test('with a refiner taking over, the blend still keeps the outside (a 9-channel base with a 4-channel refiner)', async () => {
  const req = request({ blurX: 0, blurY: 0, fill: 1 }, `${FIX}/tiny-sd1-inpaint`);
  const { images } = await engine.generate({ ...req, refiner: { model: { path: `${FIX}/tiny-sd1` }, switchAt: 0.5 } });
  assertOutsideKept(images[0]!.image, 0, 'refiner');
  assert.ok(changedInside(images[0]!.image) > 200);
});
