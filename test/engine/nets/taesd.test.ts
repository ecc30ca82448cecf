// TAESD decoder: no reference fixture exists (fixtures/README.md has none), so a tiny TAESD is built from the
// published architecture (taesd.py's Decoder, small channel counts) with random weights written here, and the
// ONNX graph is checked against a straightforward JS implementation of the same math; then the engine's preview
// path with the decoder file present.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createEngine } from '../../../src/engine/engine.ts';
import { KilnInputError, ModelFileError, type GenerateRequest, type ProgressEvent } from '../../../src/engine/api.ts';
import { memoryTensors, taesdDecoderPlan } from '../../../src/engine/nets/taesd.ts';
import { openFromSource, openTaesdDecoder } from '../../../src/engine/pipelines/taesd-model.ts';
import { groupStarts, random, tinyTaesd, writeTaesd } from './taesd-fixture.ts';
import type { Tensor } from '../../../src/engine/tensor.ts';

const dir = mkdtempSync(join(tmpdir(), 'kiln-taesd-'));
const cacheDir = join(dir, 'cache');
const engine = createEngine({ cacheDir });
after(async () => {
  await engine.close();
  rmSync(dir, { recursive: true, force: true });
});

/** Straightforward reference of taesd.py's Decoder forward, output clamped to [0, 1]. */
function referenceDecode(
  w: Record<string, Tensor>,
  latent: Float32Array,
  c0: number,
  h0: number,
  w0: number,
): { data: Float32Array; c: number; h: number; w: number } {
  type Act = { data: Float32Array; c: number; h: number; w: number };
  const get = (n: string) => w[n]!;
  const conv = (x: Act, name: string): Act => {
    const wt = get(`${name}.weight`);
    const [out, inC, k] = wt.shape as [number, number, number];
    const bias = w[`${name}.bias`];
    const pad = (k - 1) / 2;
    const y = new Float32Array(out * x.h * x.w);
    for (let o = 0; o < out; o++)
      for (let yy = 0; yy < x.h; yy++)
        for (let xx = 0; xx < x.w; xx++) {
          let s = bias ? bias.data[o]! : 0;
          for (let i = 0; i < inC; i++)
            for (let ky = 0; ky < k; ky++)
              for (let kx = 0; kx < k; kx++) {
                const sy = yy + ky - pad;
                const sx = xx + kx - pad;
                if (sy < 0 || sx < 0 || sy >= x.h || sx >= x.w) continue;
                s += wt.data[((o * inC + i) * k + ky) * k + kx]! * x.data[(i * x.h + sy) * x.w + sx]!;
              }
          y[(o * x.h + yy) * x.w + xx] = s;
        }
    return { data: y, c: out, h: x.h, w: x.w };
  };
  const relu = (x: Act): Act => ({ ...x, data: x.data.map((v) => Math.max(0, v)) });
  const up = (x: Act): Act => {
    const y = new Float32Array(x.c * x.h * 2 * x.w * 2);
    for (let c = 0; c < x.c; c++)
      for (let yy = 0; yy < x.h * 2; yy++)
        for (let xx = 0; xx < x.w * 2; xx++) y[(c * x.h * 2 + yy) * x.w * 2 + xx] = x.data[(c * x.h + (yy >> 1)) * x.w + (xx >> 1)]!;
    return { data: y, c: x.c, h: x.h * 2, w: x.w * 2 };
  };
  const block = (x: Act, i: number): Act => {
    const body = conv(relu(conv(relu(conv(x, `${i}.conv.0`)), `${i}.conv.2`)), `${i}.conv.4`);
    const skip = w[`${i}.skip.weight`] ? conv(x, `${i}.skip`) : x;
    return relu({ ...body, data: body.data.map((v, k) => v + skip.data[k]!) });
  };
  let x: Act = { data: latent.map((v) => Math.tanh(v / 3) * 3), c: c0, h: h0, w: w0 };
  x = relu(conv(x, '1'));
  const groups = w['18.conv.0.weight'] ? 3 : w['13.conv.0.weight'] ? 2 : 1;
  for (const g of groupStarts(groups)) {
    for (let i = g; i < g + 3; i++) x = block(x, i);
    x = conv(up(x), String(g + 4));
  }
  const end = 3 + 5 * groups;
  x = conv(block(x, end), String(end + 1));
  return { ...x, data: x.data.map((v) => Math.min(1, Math.max(0, v))) };
}

/** diffusers AutoencoderTiny names: decoder.layers.(i - 1) (no Clamp in its Sequential). */
const toDiffusers = (n: string) => n.replace(/^(\d+)\./, (_, i: string) => `decoder.layers.${Number(i) - 1}.`);

test('the plan follows the published layout: channels read from the weights, three x2 upsamplings', () => {
  const plan = taesdDecoderPlan(memoryTensors(tinyTaesd(8, 6)));
  assert.equal(plan.latentChannels, 4);
  assert.equal(plan.outChannels, 3);
  assert.equal(plan.scale, 8);
  assert.deepEqual(
    plan.layers.map((l) =>
      l.kind === 'block' ? `b${l.inChannels}>${l.outChannels}${l.skip ? 's' : ''}` : l.kind === 'conv' ? `c${l.bias ? '' : 'n'}${l.outChannels}` : l.kind,
    ),
    [
      'c8',
      'relu',
      'b8>8',
      'b8>8',
      'b8>8',
      'upsample',
      'cn8',
      'b8>8',
      'b8>8',
      'b8>8',
      'upsample',
      'cn8',
      'b8>8',
      'b8>8',
      'b8>8',
      'upsample',
      'cn8',
      'b8>6s',
      'c3',
    ],
  );
  assert.throws(() => taesdDecoderPlan(memoryTensors({ 'conv.weight': { shape: [1, 1, 1, 1], data: new Float32Array(1) } })), /not a TAESD decoder/);
});

test('graph matches a JS reference within 1e-5 (original and diffusers key layouts), x8 upsampling, deterministic', async () => {
  const weights = tinyTaesd(8, 6);
  const original = join(dir, 'taesd_decoder.safetensors');
  const diffusers = join(dir, 'diffusion_pytorch_model.safetensors');
  writeTaesd(original, weights);
  writeTaesd(diffusers, weights, toDiffusers);
  const r = random(7);
  const [h, w] = [3, 5];
  const latent = Float32Array.from({ length: 4 * h * w }, () => r(4)); // beyond +-3: the tanh clamp matters
  const ref = referenceDecode(weights, latent, 4, h, w);
  assert.deepEqual([ref.c, ref.h, ref.w], [3, 24, 40]);
  for (const file of [original, diffusers]) {
    const dec = await openTaesdDecoder(file, { device: 'cpu', cacheDir });
    const a = await dec.decode(latent, [1, 4, h, w]);
    assert.equal(a.length, 3 * 24 * 40);
    let maxDiff = 0;
    for (let i = 0; i < a.length; i++) maxDiff = Math.max(maxDiff, Math.abs(a[i]! - ref.data[i]!));
    assert.ok(maxDiff < 1e-5, `${file}: max |graph - reference| = ${maxDiff}`);
    assert.ok(new Set(ref.data).size > 100, 'the reference output is an image, not a constant');
    const b = await dec.decode(latent, [1, 4, h, w]);
    assert.deepEqual(Buffer.from(b.buffer, b.byteOffset, b.byteLength), Buffer.from(a.buffer, a.byteOffset, a.byteLength), 'same input, same output');
  }
});

test('a file that is not a TAESD decoder fails with ModelFileError naming it', async () => {
  const bad = join(dir, 'not-taesd.safetensors');
  writeTaesd(bad, { 'conv_in.weight': { shape: [2, 4, 3, 3], data: new Float32Array(72) } });
  await assert.rejects(openTaesdDecoder(bad, { device: 'cpu', cacheDir }), (e: Error) => e instanceof ModelFileError && /not a TAESD decoder/.test(e.message));
});

test('previews use the TAESD decoder when it is given: full-size images of the x0 estimate, every N and the last', async () => {
  const file = join(dir, 'taesd-preview.safetensors');
  const weights = tinyTaesd(8, 8, 3);
  writeTaesd(file, weights);
  const req: GenerateRequest = {
    model: { path: 'test/fixtures/tiny-sd1' },
    prompts: ['a red apple'],
    width: 64,
    height: 48,
    steps: 8,
    cfgScale: 7,
    sampler: 'Euler a',
    seed: 11,
  };
  const events: ProgressEvent[] = [];
  let final: Float32Array | undefined;
  const res = await engine.generate(
    req,
    { onProgress: (e) => events.push(e), preview: { everyEvals: 3, taesd: { sd: file } } },
    { onFinalLatents: (t) => (final = t.data) },
  );
  const previews = events.filter((e) => e.preview);
  assert.deepEqual(
    previews.map((e) => e.step),
    [3, 6, 8],
  );
  // The tiny model's latent is 32x24 (its VAE halves); TAESD upsamples x8 whatever the model's VAE does.
  for (const e of previews) assert.deepEqual([e.preview!.width, e.preview!.height, e.preview!.channels], [256, 192, 3]);
  const ref = referenceDecode(weights, final!.slice(0, 4 * 24 * 32), 4, 24, 32);
  const last = previews.at(-1)!.preview!.data;
  let sum = 0;
  for (let p = 0; p < 256 * 192; p++) for (let k = 0; k < 3; k++) sum += Math.abs(last[p * 3 + k]! - Math.round(ref.data[k * 256 * 192 + p]! * 255));
  assert.ok(sum / last.length < 1, `the last preview is the TAESD decode of the final latent (mean abs diff ${(sum / last.length).toFixed(3)})`);

  const plain = await engine.generate(req, { onProgress: () => undefined, preview: { everyEvals: 3 } });
  assert.deepEqual(Buffer.from(plain.images[0]!.image.data), Buffer.from(res.images[0]!.image.data), 'the preview decoder does not change the image');
  const other: ProgressEvent[] = [];
  await engine.generate({ ...req, steps: 2 }, { onProgress: (e) => other.push(e), preview: { everyEvals: 1, taesd: { sdxl: file } } });
  assert.deepEqual(
    other.filter((e) => e.preview).map((e) => e.preview!.width),
    [32, 32],
    'a decoder for another latent space is not used: Approx cheap at latent size',
  );
});

test('openFromSource builds from in-memory weights (the bench path)', async () => {
  const dec = await openFromSource('memory', memoryTensors(tinyTaesd(4)), 'test-memory-4', { device: 'cpu', cacheDir });
  const out = await dec.decode(new Float32Array(4 * 2 * 2), [1, 4, 2, 2]);
  assert.equal(out.length, 3 * 16 * 16);
  await dec.release();
});

test('final decode with TAESD (taesdDecode): the image is the TAESD decode of the final latent; unfit or missing decoders are input errors', async () => {
  // One upsampling group: x2, as the tiny model's VAE.
  const file = join(dir, 'taesd-final-x2.safetensors');
  const weights = tinyTaesd(8, 8, 4, 1);
  writeTaesd(file, weights);
  const req: GenerateRequest = {
    model: { path: 'test/fixtures/tiny-sd1' },
    prompts: ['a red apple'],
    width: 64,
    height: 48,
    steps: 4,
    cfgScale: 7,
    sampler: 'Euler',
    seed: 5,
  };
  let final: Float32Array | undefined;
  const res = await engine.generate({ ...req, taesdDecode: { sd: file } }, {}, { onFinalLatents: (t) => (final = t.data) });
  const img = res.images[0]!.image;
  assert.deepEqual([img.width, img.height, img.channels], [64, 48, 3]);
  const ref = referenceDecode(weights, final!, 4, 24, 32);
  let maxDiff = 0;
  for (let p = 0; p < 64 * 48; p++)
    for (let k = 0; k < 3; k++) maxDiff = Math.max(maxDiff, Math.abs(img.data[p * 3 + k]! - Math.round(ref.data[k * 64 * 48 + p]! * 255)));
  assert.ok(maxDiff <= 1, `image = TAESD(final latent) to within rounding (max diff ${maxDiff})`);
  const plain = await engine.generate(req);
  assert.notDeepEqual(Buffer.from(plain.images[0]!.image.data), Buffer.from(img.data), 'the VAE decode differs');
  const again = await engine.generate({ ...req, taesdDecode: { sd: file } });
  assert.deepEqual(Buffer.from(again.images[0]!.image.data), Buffer.from(img.data), 'deterministic');

  await assert.rejects(
    engine.generate({ ...req, taesdDecode: {} }),
    (e: Error) => e instanceof KilnInputError && e.field === 'vae' && /taesd_decoder/.test(e.message),
  );
  const x8 = join(dir, 'taesd-final-x8.safetensors');
  writeTaesd(x8, tinyTaesd(4));
  await assert.rejects(
    engine.generate({ ...req, taesdDecode: { sd: x8 } }),
    (e: Error) => e instanceof KilnInputError && e.field === 'vae' && /does not fit this model/.test(e.message),
  );
});
