// SDXL at its released shapes (or a narrower spec of the same topology) with seeded random weights (nothing
// downloaded), for benchmarks through the real pipeline.
import { unetParameterShapes } from '../src/engine/nets/unet.ts';
import { vaeParameterShapes } from '../src/engine/nets/vae.ts';
import { loadModel, type LoadedModel } from '../src/engine/weights/model.ts';
import type { UnetConfig, VaeConfig } from '../src/engine/weights/types.ts';
import { clipTextParameterShapes, RandomWeights } from './random-weights.ts';
import { SDXL, type ModelSpec } from './specs.ts';

/** SDXL's real configs and random weights, on tiny-sdxl's tokenizers and scheduler (they do not change the shapes). */
export async function randomSdxl(spec: ModelSpec = SDXL): Promise<LoadedModel> {
  const tiny = await loadModel({ path: 'test/fixtures/tiny-sdxl' }, { hashCacheFile: null });
  const unetConfig = { ...tiny.unetConfig, ...spec.unet, sample_size: 128 } as UnetConfig;
  const vaeConfig = {
    ...tiny.vaeConfig,
    ...spec.vae,
    down_block_types: Array(4).fill('DownEncoderBlock2D'),
    up_block_types: Array(4).fill('UpDecoderBlock2D'),
  } as VaeConfig;
  return {
    ...tiny,
    name: 'random-sdxl',
    path: 'random-sdxl',
    unetConfig,
    vaeConfig,
    unet: new RandomWeights('UNet', unetParameterShapes(spec.unet)),
    vae: new RandomWeights('VAE', vaeParameterShapes(spec.vae), 20),
    textEncoders: spec.textEncoders.map((te, i) => {
      const part = tiny.textEncoders[i]!;
      return { ...part, config: { ...part.config, ...te.config }, weights: new RandomWeights(`CLIP ${i}`, clipTextParameterShapes(te.config), 10 + i) };
    }),
    identity: `bench-random-${spec.name}-seed-1`,
    hash: async () => '00000000',
    warnings: [],
  };
}
