// The folds over a network's plan agree with each other and with what they replaced: the parameter fold names
// exactly the weights the graph fold reads (tiny fixtures and full-size SD1.5/SDXL), and the FLOP folds give
// the same numbers as the hand-written counts they replaced (kept below as the reference).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SD15, SDXL } from '../../../bench/specs.ts';
import { GraphBuilder, type Value } from '../../../src/engine/onnx/graph.ts';
import { buildUnet, parseUnetConfig, unetFlops, unetParameterShapes, type UnetDims } from '../../../src/engine/nets/unet.ts';
import { buildVaeDecoder, buildVaeEncoder, vaeDecoderFlops, vaeParameterShapes, type UpsampleKind, type VaeNetConfig } from '../../../src/engine/nets/vae.ts';
import type { Tensor } from '../../../src/engine/tensor.ts';
import { fixtureModel, recordingWeights, shapesOnly } from './fixture-io.ts';

/** A builder that appends ops but stores no weight data (full-size graphs would be gigabytes). */
class DryBuilder extends GraphBuilder {
  override weight(name: string): Value {
    return { name };
  }
  override linear(x: Value, _weight: Tensor, bias: Tensor | undefined, name: string): Value {
    const y = this.matmul(x, this.weight(`${name}.weight`));
    return bias ? this.add(y, this.weight(`${name}.bias`)) : y;
  }
}

function withBuilder(dry: boolean, run: (b: GraphBuilder) => void): void {
  const dir = mkdtempSync(join(tmpdir(), 'kiln-plan-folds-'));
  try {
    run(dry ? new DryBuilder('g', dir) : new GraphBuilder('g', dir));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function assertSameTable(actual: Map<string, number[]>, expected: Map<string, number[]>, what: string): void {
  assert.deepEqual([...actual.keys()].sort(), [...expected.keys()].sort(), `${what}: names`);
  for (const [name, shape] of expected) assert.deepEqual(actual.get(name), shape, `${what}: ${name}`);
}

for (const model of ['tiny-sd1', 'tiny-sd2', 'tiny-sdxl'] as const) {
  test(`${model}: the graph folds read exactly the parameter folds' names and shapes (UNet, VAE encoder + decoder)`, async () => {
    const m = await fixtureModel(model);
    for (const attention of ['contrib', 'onnx'] as const) {
      const unet = recordingWeights(m.unet);
      withBuilder(false, (b) => buildUnet(b, unet.source, m.unetConfig!, { attention }));
      assertSameTable(unet.read, unetParameterShapes(m.unetConfig!), `${model} UNet (${attention})`);
    }
    for (const upsample of ['phases', 'resize'] as const) {
      const vae = recordingWeights(m.vae);
      withBuilder(false, (b) => {
        buildVaeEncoder(b, vae.source, m.vaeConfig);
        buildVaeDecoder(b, vae.source, m.vaeConfig, { upsample });
      });
      assertSameTable(vae.read, vaeParameterShapes(m.vaeConfig), `${model} VAE (${upsample})`);
    }
  });
}

for (const spec of [SD15, SDXL]) {
  test(`${spec.name} full size: the graph folds read every weight of the parameter folds and nothing else`, () => {
    const unetTable = unetParameterShapes(spec.unet);
    const unet = recordingWeights(shapesOnly(unetTable));
    withBuilder(true, (b) => buildUnet(b, unet.source, spec.unet));
    assertSameTable(unet.read, unetTable, `${spec.name} UNet`);

    const vaeTable = vaeParameterShapes(spec.vae);
    const vae = recordingWeights(shapesOnly(vaeTable));
    withBuilder(true, (b) => {
      buildVaeEncoder(b, vae.source, spec.vae);
      buildVaeDecoder(b, vae.source, spec.vae);
    });
    assertSameTable(vae.read, vaeTable, `${spec.name} VAE`);
  });
}

test('a VAE without mid-block attention has no attention weights in its plan, and its graph reads none', async () => {
  const m = await fixtureModel('tiny-sd1');
  const config = { ...m.vaeConfig, mid_block_add_attention: false };
  const table = vaeParameterShapes(config);
  assert.ok(![...table.keys()].some((n) => n.includes('mid_block.attentions')));
  const vae = recordingWeights(m.vae);
  withBuilder(false, (b) => buildVaeDecoder(b, vae.source, config));
  assert.ok(![...vae.read.keys()].some((n) => n.includes('mid_block.attentions')));
});

/** The UNet FLOP count as it was written by hand before the plan (the reference the fold must reproduce). */
function handCountedUnetFlops(config: Record<string, unknown>, dims: UnetDims): number {
  const cfg = parseUnetConfig(config);
  const n = cfg.blockOutChannels.length;
  const B = dims.batch;
  let macs = 0;
  const convMacs = (cin: number, cout: number, k: number, hw: number) => (macs += B * hw * cin * cout * k * k);
  const resnet = (cin: number, cout: number, hw: number) => {
    convMacs(cin, cout, 3, hw);
    convMacs(cout, cout, 3, hw);
    if (cin !== cout) convMacs(cin, cout, 1, hw);
  };
  const transformer = (c: number, layers: number, hw: number) => {
    const T = dims.tokens;
    macs += 2 * B * hw * c * c;
    for (let l = 0; l < layers; l++) {
      macs += B * hw * c * c * 4;
      macs += B * hw * c * c * 2 + B * T * cfg.crossAttentionDim * c * 2;
      macs += B * hw * hw * c * 2;
      macs += B * hw * T * c * 2;
      macs += B * hw * c * 8 * c + B * hw * 4 * c * c;
    }
  };
  let hw = dims.height * dims.width;
  const sizes: number[] = [];
  let hh = dims.height;
  let ww = dims.width;
  convMacs(cfg.inChannels, cfg.blockOutChannels[0]!, 3, hw);
  const skipCh: number[] = [cfg.blockOutChannels[0]!];
  let ch = cfg.blockOutChannels[0]!;
  for (let i = 0; i < n; i++) {
    const out = cfg.blockOutChannels[i]!;
    sizes.push(hw);
    for (let j = 0; j < cfg.layersPerBlock[i]!; j++) {
      resnet(ch, out, hw);
      ch = out;
      if (cfg.downBlockTypes[i] === 'CrossAttnDownBlock2D') transformer(out, cfg.transformerLayers[i]!, hw);
      skipCh.push(out);
    }
    if (i < n - 1) {
      hh = Math.floor((hh - 1) / 2) + 1;
      ww = Math.floor((ww - 1) / 2) + 1;
      hw = hh * ww;
      convMacs(out, out, 3, hw);
      skipCh.push(out);
    }
  }
  resnet(ch, ch, hw);
  transformer(ch, cfg.transformerLayers[n - 1]!, hw);
  resnet(ch, ch, hw);
  const rev = [...cfg.blockOutChannels].reverse();
  const reversedLayers = [...cfg.layersPerBlock].reverse();
  for (let i = 0; i < n; i++) {
    const out = rev[i]!;
    for (let j = 0; j < reversedLayers[i]! + 1; j++) {
      resnet(ch + skipCh.pop()!, out, hw);
      ch = out;
      if (cfg.upBlockTypes[i] === 'CrossAttnUpBlock2D') transformer(out, cfg.upTransformerLayers[i]!, hw);
    }
    if (i < n - 1) {
      hw = sizes[n - 2 - i]!;
      convMacs(out, out, 3, hw);
    }
  }
  convMacs(ch, cfg.outChannels, 3, hw);
  return 2 * macs;
}

/** The VAE decoder FLOP count as it was written by hand before the plan. */
function handCountedVaeDecoderFlops(config: VaeNetConfig, dims: { batch: number; height: number; width: number }, upsample: UpsampleKind): number {
  const ch = [...config.block_out_channels].reverse();
  let hw = dims.height * dims.width;
  let macs = 0;
  const conv = (cin: number, cout: number, k: number) => (macs += dims.batch * hw * cin * cout * k * k);
  const resnet = (cin: number, cout: number) => {
    conv(cin, cout, 3);
    conv(cout, cout, 3);
    if (cin !== cout) conv(cin, cout, 1);
  };
  conv(config.latent_channels, config.latent_channels, 1);
  conv(config.latent_channels, ch[0]!, 3);
  resnet(ch[0]!, ch[0]!);
  if (config.mid_block_add_attention ?? true) macs += dims.batch * (4 * hw * ch[0]! * ch[0]! + 2 * hw * hw * ch[0]!);
  resnet(ch[0]!, ch[0]!);
  let cin = ch[0]!;
  for (let i = 0; i < ch.length; i++) {
    for (let j = 0; j <= config.layers_per_block; j++) {
      resnet(cin, ch[i]!);
      cin = ch[i]!;
    }
    if (i < ch.length - 1) {
      if (upsample === 'phases') macs += dims.batch * hw * cin * cin * 16;
      hw *= 4;
      if (upsample === 'resize') conv(cin, cin, 3);
    }
  }
  conv(cin, config.out_channels, 3);
  return 2 * macs;
}

test("the UNet FLOP fold gives the hand count's numbers (fixtures and full-size SD1.5/SDXL; odd sizes, long prompts, batches)", async () => {
  const configs: [string, Record<string, unknown>][] = [
    ['sd15', SD15.unet],
    ['sdxl', SDXL.unet],
  ];
  for (const model of ['tiny-sd1', 'tiny-sd2', 'tiny-sdxl'] as const) configs.push([model, (await fixtureModel(model)).unetConfig!]);
  for (const [name, config] of configs) {
    for (const dims of [
      { batch: 1, height: 64, width: 64, tokens: 77 },
      { batch: 2, height: 128, width: 96, tokens: 154 },
      { batch: 3, height: 13, width: 21, tokens: 77 },
    ]) {
      assert.equal(unetFlops(config, dims), handCountedUnetFlops(config, dims), `${name} ${JSON.stringify(dims)}`);
    }
  }
});

test("the VAE decoder FLOP fold gives the hand count's numbers (both upsamplers, with and without mid-block attention)", async () => {
  const configs: [string, VaeNetConfig][] = [
    ['sd', SD15.vae],
    ['sd without mid attention', { ...SD15.vae, mid_block_add_attention: false }],
  ];
  for (const model of ['tiny-sd1', 'tiny-sdxl'] as const) configs.push([model, (await fixtureModel(model)).vaeConfig]);
  for (const [name, config] of configs) {
    for (const upsample of ['phases', 'resize'] as const) {
      for (const dims of [
        { batch: 1, height: 64, width: 64 },
        { batch: 2, height: 12, width: 20 },
      ]) {
        assert.equal(
          vaeDecoderFlops(config, dims, { upsample }),
          handCountedVaeDecoderFlops(config, dims, upsample),
          `${name} ${upsample} ${JSON.stringify(dims)}`,
        );
      }
    }
  }
});
