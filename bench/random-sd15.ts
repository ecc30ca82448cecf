// SD1.5 at its real shapes with seeded random weights (nothing downloaded), for benchmarks through the real pipeline.
import { unetParameterShapes } from '../src/engine/nets/unet.ts';
import { vaeParameterShapes } from '../src/engine/nets/vae.ts';
import { loadModel, type LoadedModel } from '../src/engine/weights/model.ts';
import type { UnetConfig, VaeConfig } from '../src/engine/weights/types.ts';
import { clipTextParameterShapes, RandomWeights } from './random-weights.ts';
import { SD15 } from './specs.ts';

/** SD1.5's real configs and random weights, on the tiny fixture's tokenizer and scheduler (they do not change the shapes). */
export async function randomSd15(): Promise<LoadedModel> {
  const tiny = await loadModel({ path: 'test/fixtures/tiny-sd1' }, { hashCacheFile: null });
  const unetConfig = { ...tiny.unetConfig, ...SD15.unet, sample_size: 64 } as UnetConfig;
  const vaeConfig = { ...tiny.vaeConfig, ...SD15.vae, block_out_channels: SD15.vae.block_out_channels } as VaeConfig;
  const te = SD15.textEncoders[0]!.config;
  const part = tiny.textEncoders[0]!;
  return {
    ...tiny,
    name: 'random-sd15',
    path: 'random-sd15',
    unetConfig,
    vaeConfig: { ...vaeConfig, down_block_types: Array(4).fill('DownEncoderBlock2D'), up_block_types: Array(4).fill('UpDecoderBlock2D') },
    unet: new RandomWeights('UNet', unetParameterShapes(SD15.unet)),
    vae: new RandomWeights('VAE', vaeParameterShapes(SD15.vae)),
    textEncoders: [{ ...part, config: { ...part.config, ...te }, weights: new RandomWeights('CLIP', clipTextParameterShapes(te)) }],
    identity: 'bench-random-sd15-seed-1',
    hash: async () => '00000000',
    warnings: [],
  };
}
