// LayerDiffuse's transparent VAE decoder (UNet1024) on the tiny decoder under the released parameter names
// (refs/layerdiffuse/decoder_*): one raw pass, each of the 8 TTA passes in its own rotated/flipped frame, and
// the full TTA median, square and non-square; plus edge padding for sizes that are not multiples of 64.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  RELEASED_TRANSPARENT_DECODER,
  TRANSPARENT_DECODER_MULTIPLE,
  transparentDecoderConfig,
  transparentDecoderFlops,
  transparentDecoderParameterShapes,
} from '../../../src/engine/nets/transparent-decoder.ts';
import { openTransparentDecoder, type TransparentDecoderModel } from '../../../src/engine/pipelines/transparent-decoder-model.ts';
import { cropPlanes, padEdges, rot90, transparentDecode, type Planes } from '../../../src/engine/pipelines/transparent-tta.ts';
import type { Tensor } from '../../../src/engine/tensor.ts';
import { openTensorFile } from '../../../src/engine/weights/tensor-file.ts';
import { storedWeights } from '../../../src/engine/weights/sources.ts';
import { assertClose, pipelineRef } from '../pipelines/tolerance.ts';

const DECODER = 'test/fixtures/layerdiffuse/tiny-transparent-decoder.safetensors';
const cacheDir = mkdtempSync(join(tmpdir(), 'kiln-transparent-'));
let model: TransparentDecoderModel | undefined;
const decoder = async () => (model ??= await openTransparentDecoder(DECODER, { device: 'cpu', cacheDir, threads: 1 }));
after(async () => {
  await model?.release();
  rmSync(cacheDir, { recursive: true, force: true });
});

const planes = (t: Tensor): Planes => ({ channels: t.shape[1]!, height: t.shape[2]!, width: t.shape[3]!, data: t.data });

/** Values beyond atol + rtol|e|, as a fraction of all. */
function fractionBeyond(actual: Float32Array, expected: Float32Array, atol: number): number {
  assert.equal(actual.length, expected.length);
  let n = 0;
  for (let i = 0; i < actual.length; i++) if (Math.abs(actual[i]! - expected[i]!) > atol) n++;
  return n / actual.length;
}

test('the config is read from the weights and the parameter fold gives exactly the file key set', () => {
  const f = openTensorFile(DECODER);
  const config = transparentDecoderConfig(storedWeights(DECODER, [f]), DECODER);
  assert.deepEqual(config.blockOutChannels, [8, 8, 16, 24, 32, 40, 40]);
  assert.equal(config.layersPerBlock, 2);
  assert.deepEqual(config.downAttention, RELEASED_TRANSPARENT_DECODER.downAttention);
  assert.deepEqual(config.upAttention, RELEASED_TRANSPARENT_DECODER.upAttention);
  const shapes = transparentDecoderParameterShapes(config);
  assert.deepEqual([...shapes.keys()].sort(), f.names().sort());
  for (const [name, shape] of shapes) assert.deepEqual(f.entry(name).shape, shape, name);
  // The released decoder: ~104.1 M parameters and ~0.86 TFLOP per pass at 1024² (reference notes §1.4).
  const released = transparentDecoderParameterShapes(RELEASED_TRANSPARENT_DECODER);
  const params = [...released.values()].reduce((s, sh) => s + sh.reduce((a, b) => a * b, 1), 0);
  assert.ok(Math.abs(params / 1e6 - 104.1) < 0.2, `released parameter count ${params}`);
  const tflop = transparentDecoderFlops(RELEASED_TRANSPARENT_DECODER, 1024, 1024) / 1e12;
  assert.ok(tflop > 0.75 && tflop < 0.95, `released decoder ${tflop} TFLOP per pass at 1024²`);
});

for (const size of ['64x64', '64x128']) {
  test(`decoder ${size}: one raw pass, each TTA pass in its frame, and the TTA median match the reference`, async () => {
    const r = pipelineRef('layerdiffuse', `decoder_${size}`);
    const m = await decoder();
    const pixel = r.t('pixel');
    const latent = r.t('latent');
    const single = await m.run(pixel, latent);
    assert.deepEqual(single.shape, r.t('single_pass').shape);
    assertClose(single.data, r.t('single_pass').data, 1e-4, 1e-3, `${size} single pass`);

    const raw: Tensor[] = [];
    const run = async (p: Tensor, l: Tensor) => {
      const y = await m.run(p, l);
      raw.push({ shape: y.shape, data: y.data.slice() });
      return y;
    };
    const out = await transparentDecode(run, planes(pixel), planes(latent), TRANSPARENT_DECODER_MULTIPLE);
    assert.equal(raw.length, 8);
    raw.forEach((y, i) => {
      const expected = r.t(`tta_pass${i}_output`);
      assert.deepEqual(y.shape, expected.shape, `pass ${i} shape`);
      assertClose(y.data, expected.data, 1e-4, 1e-3, `${size} pass ${i}`);
    });
    const median = r.t('tta_median');
    assert.deepEqual([1, out.channels, out.height, out.width], median.shape);
    const beyond = fractionBeyond(out.data, median.data, 1e-4);
    assert.ok(beyond <= 0.001, `${size} TTA median: ${(beyond * 100).toFixed(3)}% of values beyond 1e-4`);
  });
}

test('tta off is one clipped pass', async () => {
  const r = pipelineRef('layerdiffuse', 'decoder_64x64');
  const m = await decoder();
  let passes = 0;
  const out = await transparentDecode(
    async (p, l) => {
      passes++;
      return m.run(p, l);
    },
    planes(r.t('pixel')),
    planes(r.t('latent')),
    TRANSPARENT_DECODER_MULTIPLE,
    {
      tta: false,
    },
  );
  assert.equal(passes, 1);
  const expected = r.t('single_pass').data.map((v) => Math.min(1, Math.max(0, v)));
  assertClose(out.data, expected, 1e-4, 1e-3, 'tta off');
});

test('sizes that are not multiples of 64 are edge-padded, decoded and cropped', async () => {
  const r = pipelineRef('layerdiffuse', 'decoder_64x128');
  const m = await decoder();
  // A 40x88 corner of the reference input (the latent 5x11).
  const pixel = cropPlanes(planes(r.t('pixel')), 40, 88);
  const latent = cropPlanes(planes(r.t('latent')), 5, 11);
  const seen: number[][] = [];
  const out = await transparentDecode(
    async (p, l) => {
      seen.push([...p.shape.slice(2), ...l.shape.slice(2)]);
      return m.run(p, l);
    },
    pixel,
    latent,
    TRANSPARENT_DECODER_MULTIPLE,
  );
  assert.deepEqual([out.channels, out.height, out.width], [4, 40, 88]);
  assert.deepEqual(seen[0], [64, 128, 8, 16], 'padded up to multiples of 64 (latent / 8)');
  assert.deepEqual(seen[1], [128, 64, 16, 8], 'rotated by the second pass');
  // Equal to decoding the edge-padded input and cropping.
  const padded = await transparentDecode((p, l) => m.run(p, l), padEdges(pixel, 64, 128), padEdges(latent, 8, 16), TRANSPARENT_DECODER_MULTIPLE);
  assert.deepEqual(out.data, cropPlanes(padded, 40, 88).data);
  assert.ok(out.data.every((v) => v >= 0 && v <= 1));
});

test('rot90 follows torch: out[i][j] = in[j][W-1-i]', () => {
  const p: Planes = { channels: 1, height: 2, width: 3, data: Float32Array.from([1, 2, 3, 4, 5, 6]) };
  const r = rot90(p, 1);
  assert.deepEqual([r.height, r.width], [3, 2]);
  assert.deepEqual([...r.data], [3, 6, 2, 5, 1, 4]);
  assert.deepEqual([...rot90(r, -1).data], [...p.data]);
});

test('a cancelled generation stops between TTA passes', async () => {
  const r = pipelineRef('layerdiffuse', 'decoder_64x64');
  const m = await decoder();
  const ac = new AbortController();
  let passes = 0;
  const run = async (p: Tensor, l: Tensor) => {
    if (++passes === 2) ac.abort();
    return m.run(p, l);
  };
  await assert.rejects(transparentDecode(run, planes(r.t('pixel')), planes(r.t('latent')), TRANSPARENT_DECODER_MULTIPLE, { signal: ac.signal }), {
    name: 'AbortError',
  });
  assert.equal(passes, 2);
});
