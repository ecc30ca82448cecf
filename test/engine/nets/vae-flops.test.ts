import { test } from 'node:test';
import assert from 'node:assert/strict';
import { vaeDecoderFlops, vaeScaleFactor } from '../../../src/engine/nets/vae.ts';
import { fixtureModel } from './fixture-io.ts';

/**
 * An independent count from the checkpoint itself: each decoder weight does numel(weight) multiply-adds per
 * output pixel at the resolution its name implies (up block i runs at 2^i times the latent size, its upsampler
 * conv at 2^(i+1)), plus the attention's QK^T and PV.
 */
function flopsFromWeights(weights: { names(): string[]; shape(n: string): readonly number[] }, latentHw: number, blocks: number): number {
  let macs = 0;
  for (const name of weights.names()) {
    if (!name.endsWith('.weight') || !(name.startsWith('decoder.') || name.startsWith('post_quant_conv'))) continue;
    const shape = weights.shape(name);
    if (shape.length < 2) continue; // norms
    const numel = shape.reduce((a, b) => a * b, 1);
    let level = 0;
    const up = /^decoder\.up_blocks\.(\d+)\.(resnets|upsamplers)/.exec(name);
    if (up) level = Number(up[1]) + (up[2] === 'upsamplers' ? 1 : 0);
    if (name.startsWith('decoder.conv_out')) level = blocks - 1;
    macs += numel * latentHw * 4 ** level;
    if (name.endsWith('attentions.0.to_q.weight')) macs += 2 * latentHw * latentHw * shape[0]!;
  }
  return 2 * macs;
}

for (const model of ['tiny-sd1', 'tiny-sdxl'] as const) {
  test(`vaeDecoderFlops agrees with a count from the ${model} decoder weights`, async () => {
    const m = await fixtureModel(model);
    const [h, w] = [12, 20];
    const expected = flopsFromWeights(m.vae, h * w, m.vaeConfig.block_out_channels.length);
    assert.equal(vaeDecoderFlops(m.vaeConfig, { batch: 1, height: h, width: w }), expected);
    assert.equal(vaeDecoderFlops(m.vaeConfig, { batch: 3, height: h, width: w }), 3 * expected);
    assert.ok(vaeScaleFactor(m.vaeConfig) > 1);
  });
}

test('SD VAE decode at 512x512 is about 2.5 TFLOP', () => {
  const sd = { block_out_channels: [128, 256, 512, 512], layers_per_block: 2, norm_num_groups: 32, latent_channels: 4, in_channels: 3, out_channels: 3 };
  const tflop = vaeDecoderFlops(sd, { batch: 1, height: 64, width: 64 }) / 1e12;
  assert.ok(tflop > 2.4 && tflop < 2.6, `${tflop} TFLOP`);
});
