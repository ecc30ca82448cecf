import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { getOrBuildGraph } from '../../../src/engine/onnx/cache.ts';
import type { AttentionKind, Precision } from '../../../src/engine/onnx/graph.ts';
import {
  buildVaeDecoder,
  buildVaeEncoder,
  vaeDecoderGraphOptions,
  vaeEncoderGraphOptions,
  vaeScaleFactor,
  type VaeDecoderOptions,
} from '../../../src/engine/nets/vae.ts';
import { createSession, runSession } from '../../../src/engine/runtime.ts';
import type { Tensor } from '../../../src/engine/tensor.ts';
import { assertClose, fixtureModel, ref, type FixtureModel, skipMissingFp16Kernel } from './fixture-io.ts';

const ATOL = 1e-4,
  RTOL = 1e-3;
const cacheDir = mkdtempSync(join(tmpdir(), 'kiln-vae-'));
test.after(() => rmSync(cacheDir, { recursive: true, force: true }));

async function decoder(model: FixtureModel, opts: VaeDecoderOptions, precision: Precision = 'fp32') {
  const m = await fixtureModel(model);
  const key = { network: `${model}-vae-decoder`, weightsIdentity: model, precision, options: vaeDecoderGraphOptions(opts) };
  const { modelPath } = getOrBuildGraph(cacheDir, key, (b) => buildVaeDecoder(b, m.vae, m.vaeConfig, opts));
  return createSession(modelPath, { device: 'cpu' });
}

async function encoder(model: FixtureModel, attention: AttentionKind) {
  const m = await fixtureModel(model);
  const key = { network: `${model}-vae-encoder`, weightsIdentity: model, precision: 'fp32' as const, options: vaeEncoderGraphOptions({ attention }) };
  const { modelPath } = getOrBuildGraph(cacheDir, key, (b) => buildVaeEncoder(b, m.vae, m.vaeConfig, { attention }));
  return createSession(modelPath, { device: 'cpu' });
}

// The single file stores the mid-block attention as 1x1 convolutions ([C,C,1,1]); the folder as linears.
for (const [model, attention] of [
  ['tiny-sd1', 'contrib'],
  ['tiny-sd1', 'onnx'],
  ['tiny-sd1.safetensors', 'contrib'],
] as [FixtureModel, AttentionKind][]) {
  test(`sd1 VAE decode from ${model} matches diffusers (${attention} attention)`, async () => {
    const r = ref('sd1/vae');
    const { image } = await runSession(await decoder(model, { attention }), { latent: r.float('decode_input_latent') });
    assertClose(image!, r.float('decode_output'), ATOL, RTOL, 'decode_output');
  });

  test(`sd1 VAE encode from ${model}: mean/logvar match diffusers (${attention} attention)`, async () => {
    const r = ref('sd1/vae');
    const out = await runSession(await encoder(model, attention), { image: r.float('encode_input_image') });
    assertClose(out.mean!, r.float('encode_mean'), ATOL, RTOL, 'encode_mean');
    assertClose(out.logvar!, r.float('encode_logvar'), ATOL, RTOL, 'encode_logvar');
  });
}

for (const model of ['tiny-sdxl', 'tiny-sdxl.safetensors'] as FixtureModel[]) {
  test(`sdxl VAE decode from ${model} (4 groups, 8/16 channels) matches diffusers`, async () => {
    const r = ref('sdxl/vae');
    const { image } = await runSession(await decoder(model, {}), { latent: r.float('decode_input_latent') });
    assertClose(image!, r.float('decode_output'), ATOL, RTOL, 'sdxl decode_output');
  });
}

test('sd1 VAE decode with the literal Resize upsampler also matches diffusers, and the phase upsampler', async () => {
  const r = ref('sd1/vae');
  const latent = r.float('decode_input_latent');
  const { image: literal } = await runSession(await decoder('tiny-sd1', { upsample: 'resize' }), { latent });
  assertClose(literal!, r.float('decode_output'), ATOL, RTOL, 'resize decode_output');
  const { image: phases } = await runSession(await decoder('tiny-sd1', { upsample: 'phases' }), { latent });
  // Same function, different summation order: far tighter than the reference tolerance.
  assertClose(phases!, literal!, 1e-5, 1e-5, 'phases vs resize');
});

test('decoder with scalingFactor inside the graph equals dividing outside', async () => {
  const r = ref('sd1/vae');
  const raw = r.float('decode_input_latent');
  const sf = (await fixtureModel('tiny-sd1')).vaeConfig.scaling_factor;
  const scaled: Tensor = { shape: raw.shape, data: raw.data.map((v) => v * sf) };
  const { image } = await runSession(await decoder('tiny-sd1', { scalingFactor: sf }), { latent: scaled });
  assertClose(image!, r.float('decode_output'), ATOL, RTOL, 'decode of latent*sf with sf inside');
});

test('decoder and encoder handle non-square sizes', async () => {
  const r = ref('sd1/vae');
  const full = r.float('decode_input_latent'); // [1,4,32,32]
  const sub = new Float32Array(4 * 24 * 16);
  for (let c = 0; c < 4; c++) for (let i = 0; i < 24; i++) for (let j = 0; j < 16; j++) sub[(c * 24 + i) * 16 + j] = full.data[(c * 32 + i) * 32 + j]!;
  const { image } = await runSession(await decoder('tiny-sd1', {}), { latent: { shape: [1, 4, 24, 16], data: sub } });
  const f = vaeScaleFactor((await fixtureModel('tiny-sd1')).vaeConfig);
  assert.equal(f, 2);
  assert.deepEqual(image!.shape, [1, 3, 24 * f, 16 * f]);
  assert.ok(image!.data.every(Number.isFinite));
  const { mean } = await runSession(await encoder('tiny-sd1', 'contrib'), { image: image! });
  assert.deepEqual(mean!.shape, [1, 4, 24, 16]);
});

test('a missing VAE weight is reported by name', async () => {
  const m = await fixtureModel('tiny-sd1');
  const w = m.vae;
  const broken = {
    names: () => w.names(),
    shape: (n: string) => w.shape(n),
    dtype: (n: string) => w.dtype(n),
    get: (n: string) => w.get(n),
    has: (n: string) => n !== 'decoder.up_blocks.1.resnets.0.conv1.weight' && w.has(n),
  };
  assert.throws(
    () => getOrBuildGraph(cacheDir, { network: 'broken-vae', weightsIdentity: 'x', precision: 'fp32' }, (b) => buildVaeDecoder(b, broken, m.vaeConfig)),
    /decoder\.up_blocks\.1\.resnets\.0\.conv1\.weight: missing VAE weight/,
  );
});

test('fp16 VAE decoder graph type-checks and onnxruntime CPU creates a session', async (t) => {
  const r = ref('sd1/vae');
  for (const attention of ['contrib', 'onnx'] as AttentionKind[]) {
    let session: Awaited<ReturnType<typeof decoder>>;
    try {
      session = await decoder('tiny-sd1', { attention }, 'fp16');
    } catch (e) {
      if (skipMissingFp16Kernel(t, attention, e)) continue;
      throw e;
    }
    const { image } = await runSession(session, { latent: r.float('decode_input_latent') });
    // fp16 carries ~3 significant digits: this checks the graph computes the same function, not fp32 accuracy.
    assertClose(image!, r.float('decode_output'), 0.05, 0.05, `fp16 ${attention} decode`);
  }
});
