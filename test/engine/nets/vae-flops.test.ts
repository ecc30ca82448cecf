import { test } from 'node:test';
import assert from 'node:assert/strict';
import { vaeDecoderFlops, vaeScaleFactor, type UpsampleKind } from '../../../src/engine/nets/vae.ts';
import { fixtureModel } from './fixture-io.ts';

/**
 * An independent count from the checkpoint itself: each decoder weight does numel(weight) multiply-adds per
 * output pixel at the resolution its name implies (up block i runs at 2^i times the latent size, its upsampler
 * conv at 2^(i+1)), plus the attention's QK^T and PV. The 'phases' upsampler instead runs four 2x2 kernels
 * (16 taps for the 3x3 kernel's 9) at the block's own resolution.
 */
function flopsFromWeights(
  weights: { names(): string[]; shape(n: string): readonly number[] },
  latentHw: number,
  blocks: number,
  upsample: UpsampleKind,
): number {
  let macs = 0;
  for (const name of weights.names()) {
    if (!name.endsWith('.weight') || !(name.startsWith('decoder.') || name.startsWith('post_quant_conv'))) continue;
    const shape = weights.shape(name);
    if (shape.length < 2) continue; // norms
    const numel = shape.reduce((a, b) => a * b, 1);
    let level = 0;
    const up = /^decoder\.up_blocks\.(\d+)\.(resnets|upsamplers)/.exec(name);
    let taps = 1;
    if (up) level = Number(up[1]);
    if (up?.[2] === 'upsamplers') {
      if (upsample === 'resize') level += 1;
      else taps = 16 / 9;
    }
    if (name.startsWith('decoder.conv_out')) level = blocks - 1;
    macs += numel * taps * latentHw * 4 ** level;
    if (name.endsWith('attentions.0.to_q.weight')) macs += 2 * latentHw * latentHw * shape[0]!;
  }
  return 2 * macs;
}

for (const [model, upsample] of [
  ['tiny-sd1', 'phases'],
  ['tiny-sd1', 'resize'],
  ['tiny-sdxl', 'phases'],
] as const) {
  test(`vaeDecoderFlops agrees with a count from the ${model} decoder weights (${upsample} upsampling)`, async () => {
    const m = await fixtureModel(model);
    const [h, w] = [12, 20];
    const expected = flopsFromWeights(m.vae, h * w, m.vaeConfig.block_out_channels.length, upsample);
    assert.ok(Math.abs(vaeDecoderFlops(m.vaeConfig, { batch: 1, height: h, width: w }, { upsample }) - expected) <= 1e-9 * expected);
    assert.ok(Math.abs(vaeDecoderFlops(m.vaeConfig, { batch: 3, height: h, width: w }, { upsample }) - 3 * expected) <= 1e-9 * expected);
    assert.ok(vaeScaleFactor(m.vaeConfig) > 1);
  });
}

test('SD VAE decode at 512x512: about 2.5 TFLOP as diffusers computes it, 2.1 with phase upsampling', () => {
  const sd = { block_out_channels: [128, 256, 512, 512], layers_per_block: 2, norm_num_groups: 32, latent_channels: 4, in_channels: 3, out_channels: 3 };
  const literal = vaeDecoderFlops(sd, { batch: 1, height: 64, width: 64 }, { upsample: 'resize' }) / 1e12;
  const phases = vaeDecoderFlops(sd, { batch: 1, height: 64, width: 64 }) / 1e12;
  assert.ok(literal > 2.4 && literal < 2.6, `${literal} TFLOP`);
  assert.ok(phases > 2.0 && phases < 2.2, `${phases} TFLOP`);
});
