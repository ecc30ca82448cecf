// The Flux pieces chained as a txt2img run uses them: seeded noise -> T5 -> packed latents and position ids ->
// transformer -> unpacked velocity -> flow Euler over the Flux schedule. Each link is checked against the
// references where one exists, and the whole loop for determinism.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  FLUX_VAE_SCALE,
  fluxVelocity,
  imagePositionIds,
  packLatents,
  toNetworkLatents,
  toVaeLatents,
  unpackLatents,
} from '../../../src/engine/families/flux-latents.ts';
import { buildFluxTransformer, fluxConfigFromWeights } from '../../../src/engine/nets/flux.ts';
import { buildT5Encoder, T5_IO, type T5EncoderConfig } from '../../../src/engine/nets/t5.ts';
import { getOrBuildGraph } from '../../../src/engine/onnx/cache.ts';
import { createRng } from '../../../src/engine/rng.ts';
import { createSession, runSession, type Feed } from '../../../src/engine/runtime.ts';
import { FLUX_DEV_SCHEDULE, flowSchedule, sampleFlowEuler } from '../../../src/engine/samplers/flow.ts';
import type { Tensor } from '../../../src/engine/tensor.ts';
import { fluxWeightsAsBfl } from '../../../src/engine/weights/flux-keys.ts';
import { storedWeights } from '../../../src/engine/weights/sources.ts';
import { openTensorFile } from '../../../src/engine/weights/tensor-file.ts';
import { assertClose, FIXTURES, ref } from './fixture-io.ts';

const ATOL = 1e-4,
  RTOL = 1e-3;
const cacheDir = mkdtempSync(join(tmpdir(), 'kiln-flux-run-'));
test.after(() => rmSync(cacheDir, { recursive: true, force: true }));
const r = ref('flux/transformer');

test('packing, unpacking and image position ids equal FluxPipeline._pack_latents/_unpack_latents/_prepare_latent_image_ids', () => {
  assert.deepEqual(packLatents(r.float('latents')), r.float('img'));
  assert.deepEqual(imagePositionIds(1, 8, 8), r.float('img_ids'));
  assert.deepEqual(unpackLatents(r.float('output'), 8, 8), r.float('output_unpacked'));
  assert.deepEqual(unpackLatents(packLatents(r.float('latents')), 8, 8), r.float('latents'));
  assert.throws(() => packLatents({ shape: [1, 16, 7, 8], data: new Float32Array(16 * 56) }), /multiples of 16/);
});

test('the VAE scale and shift round-trip', () => {
  const z = Float32Array.from([0, 1, -2.5]);
  const net = toNetworkLatents(z, FLUX_VAE_SCALE);
  assert.ok(Math.abs(net[1]! - 0.3611 * (1 - 0.1159)) < 1e-7);
  toVaeLatents(net, FLUX_VAE_SCALE).forEach((v, i) => assert.ok(Math.abs(v - z[i]!) < 1e-6));
});

async function runner(network: string, build: Parameters<typeof getOrBuildGraph>[2]) {
  const { modelPath } = getOrBuildGraph(cacheDir, { network, weightsIdentity: 'tiny-flux', precision: 'fp32' }, build);
  const session = await createSession(modelPath, { device: 'cpu' });
  return (feeds: Record<string, Feed>) => runSession(session, feeds);
}

async function pieces() {
  const t5Dir = join(FIXTURES, 'tiny-flux', 'text_encoder_2');
  const t5Config = JSON.parse(readFileSync(join(t5Dir, 'config.json'), 'utf8')) as T5EncoderConfig;
  const t5Weights = storedWeights('t5', [openTensorFile(join(t5Dir, 'model.safetensors'))]);
  const t5 = await runner('t5', (b) => buildT5Encoder(b, t5Weights, t5Config, { sequenceLength: 10 }));
  const w = fluxWeightsAsBfl(storedWeights('flux', [openTensorFile(join(FIXTURES, 'tiny-flux', 'transformer', 'diffusion_pytorch_model.safetensors'))]));
  const transformer = await runner('flux', (b) => buildFluxTransformer(b, w, fluxConfigFromWeights(w, [4, 6, 6]), { textTokens: 10 }));
  const txt = (await t5({ [T5_IO.inputIds]: ref('flux/t5_encoder').int64('input_ids') }))[T5_IO.hidden]!;
  return { transformer, txt };
}

test('seed 5101 noise -> T5 text -> transformer velocity matches the reference output (chained)', async (t) => {
  // The engine's torch-compatible CPU generator gives the reference's latents from the same seed (to float32 ulps:
  // torch's vectorised log/sin/cos round differently in the last bit).
  const noise = createRng('cpu', 5101).randn(16 * 8 * 8);
  assertClose({ shape: [1, 16, 8, 8], data: noise }, r.float('latents'), 1e-6, 0, 'seed 5101 noise');
  const { transformer, txt } = await pieces();
  assertClose(txt, ref('flux/t5_encoder').float('last_hidden_state'), ATOL, RTOL, 'T5 text');
  const velocity = fluxVelocity(transformer, { txt, y: r.float('y'), guidance: 3.5, height: 8, width: 8 });
  const v: Tensor = { shape: [1, 16, 8, 8], data: await velocity(noise, 0.75, 0) };
  t.diagnostic(`max abs diff ${assertClose(v, r.float('output_unpacked'), ATOL, RTOL, 'velocity')}`);
});

test('a tiny 4-step Flux dev sampling run is deterministic and steps along the verified velocity', async () => {
  const { transformer, txt } = await pieces();
  const velocity = fluxVelocity(transformer, { txt, y: r.float('y'), guidance: 3.5, height: 8, width: 8 });
  const { sigmas } = flowSchedule(4, FLUX_DEV_SCHEDULE, { spacing: 'flux', imageSeqLen: 16 });
  const run = async () => {
    const seen: number[] = [];
    const out = await sampleFlowEuler(
      async (x, sigma, step) => {
        seen.push(sigma);
        return velocity(x, sigma, step);
      },
      createRng('cpu', 5101).randn(16 * 8 * 8),
      sigmas,
    );
    return { out, seen };
  };
  const a = await run();
  const b = await run();
  assert.deepEqual(a.out, b.out, 'same seed, same latents');
  assert.deepEqual(a.seen, sigmas.slice(0, 4));
  // First step by hand: x1 = noise + (sigma1 - sigma0) * v(noise, sigma0).
  const noise = createRng('cpu', 5101).randn(1024);
  const v0 = await velocity(noise, sigmas[0]!, 0);
  const first = await sampleFlowEuler(velocity, noise, sigmas.slice(0, 2));
  first.forEach((x, i) => assert.equal(x, Math.fround(noise[i]! + Math.fround(Math.fround(sigmas[1]! - sigmas[0]!) * v0[i]!))));
  assert.ok(a.out.every(Number.isFinite));
  assert.notDeepEqual(a.out, noise);
});
