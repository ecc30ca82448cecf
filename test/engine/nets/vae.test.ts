import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { getOrBuildGraph } from '../../../src/engine/onnx/cache.ts';
import type { AttentionKind, Precision } from '../../../src/engine/onnx/graph.ts';
import { buildVaeDecoder, buildVaeEncoder, vaeDecoderGraphOptions, vaeEncoderGraphOptions, type VaeDecoderOptions, type VaeNetConfig } from '../../../src/engine/nets/vae.ts';
import { createSession, runSession } from '../../../src/engine/runtime.ts';
import type { Tensor } from '../../../src/engine/tensor.ts';
import { assertClose, diffusersComponent, ref } from './fixture-io.ts';

const ATOL = 1e-4, RTOL = 1e-3;
const WEIGHTS = 'diffusion_pytorch_model.safetensors';
const cacheDir = mkdtempSync(join(tmpdir(), 'kiln-vae-'));
test.after(() => rmSync(cacheDir, { recursive: true, force: true }));

async function decoder(model: string, opts: VaeDecoderOptions, precision: Precision = 'fp32') {
  const { weights, config } = diffusersComponent(model, 'vae', WEIGHTS);
  const key = { network: `${model}-vae-decoder`, weightsIdentity: model, precision, options: vaeDecoderGraphOptions(opts) };
  const { modelPath } = getOrBuildGraph(cacheDir, key, (b) => buildVaeDecoder(b, weights, config as VaeNetConfig, opts));
  return { session: await createSession(modelPath, { device: 'cpu' }) };
}

for (const attention of ['contrib', 'onnx'] as AttentionKind[]) {
  test(`sd1 VAE decode matches diffusers (${attention} attention)`, async () => {
    const r = ref('sd1/vae');
    const { session } = await decoder('tiny-sd1', { attention });
    const { image } = await runSession(session, { latent: r.float('decode_input_latent') });
    assertClose(image!, r.float('decode_output'), ATOL, RTOL, 'decode_output');
  });

  test(`sd1 VAE encode mean/logvar match diffusers (${attention} attention)`, async () => {
    const r = ref('sd1/vae');
    const { weights, config } = diffusersComponent('tiny-sd1', 'vae', WEIGHTS);
    const key = { network: 'tiny-sd1-vae-encoder', weightsIdentity: 'tiny-sd1', precision: 'fp32' as const, options: vaeEncoderGraphOptions({ attention }) };
    const { modelPath } = getOrBuildGraph(cacheDir, key, (b) => buildVaeEncoder(b, weights, config, { attention }));
    const out = await runSession(await createSession(modelPath, { device: 'cpu' }), { image: r.float('encode_input_image') });
    assertClose(out.mean!, r.float('encode_mean'), ATOL, RTOL, 'encode_mean');
    assertClose(out.logvar!, r.float('encode_logvar'), ATOL, RTOL, 'encode_logvar');
  });
}

test('sdxl VAE decode (4 groups, 8/16 channels) matches diffusers', async () => {
  const r = ref('sdxl/vae');
  const { session } = await decoder('tiny-sdxl', {});
  const { image } = await runSession(session, { latent: r.float('decode_input_latent') });
  assertClose(image!, r.float('decode_output'), ATOL, RTOL, 'sdxl decode_output');
});

test('decoder with scalingFactor inside the graph equals dividing outside', async () => {
  const r = ref('sd1/vae');
  const raw = r.float('decode_input_latent');
  const sf = (diffusersComponent('tiny-sd1', 'vae', WEIGHTS).config as { scaling_factor: number }).scaling_factor;
  const { session } = await decoder('tiny-sd1', { scalingFactor: sf });
  const scaled: Tensor = { shape: raw.shape, data: raw.data.map((v) => v * sf) };
  const { image } = await runSession(session, { latent: scaled });
  assertClose(image!, r.float('decode_output'), ATOL, RTOL, 'decode of latent*sf with sf inside');
});

test('decoder handles non-square latents (height != width)', async () => {
  const r = ref('sd1/vae');
  const full = r.float('decode_input_latent'); // [1,4,32,32]
  const sub = new Float32Array(4 * 24 * 16);
  for (let c = 0; c < 4; c++) for (let i = 0; i < 24; i++) for (let j = 0; j < 16; j++) sub[(c * 24 + i) * 16 + j] = full.data[(c * 32 + i) * 32 + j]!;
  const { session } = await decoder('tiny-sd1', {});
  const { image } = await runSession(session, { latent: { shape: [1, 4, 24, 16], data: sub } });
  assert.deepEqual(image!.shape, [1, 3, 48, 32]);
  assert.ok(image!.data.every(Number.isFinite));
});

test('a missing VAE weight is reported by name', () => {
  const { weights, config } = diffusersComponent('tiny-sd1', 'vae', WEIGHTS);
  const broken = { ...weights, has: (n: string) => n !== 'decoder.up_blocks.1.resnets.0.conv1.weight' && weights.has(n) };
  assert.throws(
    () => getOrBuildGraph(cacheDir, { network: 'broken-vae', weightsIdentity: 'x', precision: 'fp32' }, (b) => buildVaeDecoder(b, broken, config)),
    /decoder\.up_blocks\.1\.resnets\.0\.conv1\.weight: missing VAE weight/,
  );
});

test('fp16 VAE decoder graph type-checks and onnxruntime CPU creates a session', async (t) => {
  const r = ref('sd1/vae');
  for (const attention of ['contrib', 'onnx'] as AttentionKind[]) {
    let built;
    try {
      built = await decoder('tiny-sd1', { attention }, 'fp16');
    } catch (e) {
      const missing = /Could not find an implementation for (\w+)/.exec((e as Error).message);
      if (missing) {
        t.diagnostic(`${attention}: onnxruntime CPU has no float16 kernel for ${missing[1]}`);
        continue;
      }
      throw e;
    }
    const { image } = await runSession(built.session, { latent: r.float('decode_input_latent') });
    // fp16 carries ~3 significant digits: this checks the graph computes the same function, not fp32 accuracy.
    assertClose(image!, r.float('decode_output'), 0.05, 0.05, `fp16 ${attention} decode`);
  }
});
