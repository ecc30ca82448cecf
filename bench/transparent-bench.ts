// LayerDiffuse's transparent decoder (UNet1024) at the released shapes with seeded random weights: graph build +
// session, then one whole transparent decode of a size x size image with TTA off (1 pass) and on (8 passes +
// the per-element median), timed as the pipeline runs it (pipelines/transparent-tta.ts), rated on the graph's FLOPs.
import {
  RELEASED_TRANSPARENT_DECODER,
  buildTransparentDecoder,
  TRANSPARENT_DECODER_IO,
  TRANSPARENT_DECODER_MULTIPLE,
  transparentDecoderFlops,
  transparentDecoderParameterShapes,
} from '../src/engine/nets/transparent-decoder.ts';
import { getOrBuildGraph } from '../src/engine/onnx/cache.ts';
import { transparentDecode, type Planes } from '../src/engine/pipelines/transparent-tta.ts';
import { openSession, runSession } from '../src/engine/runtime.ts';
import { parameterCount, RandomWeights } from './random-weights.ts';

export interface TransparentReport {
  size: number;
  params: number;
  /** GFLOP of one pass. */
  passGflop: number;
  buildS: number;
  cached: boolean;
  sessionS: number;
  /** Whole decode (padding, passes, median, crop) with tta off / on, best of `runs`. */
  ttaOffS: number;
  ttaOnS: number;
  /** One pass's FLOPs / the tta-off time. */
  passGflops: number;
  maxRssGB: number;
}

function planes(channels: number, height: number, width: number, seed: number, scale: number, offset: number): Planes {
  const data = new Float32Array(channels * height * width);
  let s = seed;
  for (let i = 0; i < data.length; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    data[i] = offset + scale * (s / 2 ** 32);
  }
  return { channels, height, width, data };
}

export async function benchTransparentDecoder(
  size: number,
  opts: { cacheDir: string; threads: number; spinning: boolean; cacheOptimized: boolean; runs: number },
): Promise<TransparentReport> {
  const shapes = transparentDecoderParameterShapes(RELEASED_TRANSPARENT_DECODER);
  const weights = new RandomWeights('transparent-decoder', shapes, 30);
  const t0 = performance.now();
  const { modelPath, built } = getOrBuildGraph(opts.cacheDir, { network: 'layerdiffuse-decoder', weightsIdentity: 'random-seed-30', precision: 'fp32' }, (b) =>
    buildTransparentDecoder(b, weights, 'random UNet1024'),
  );
  const buildS = (performance.now() - t0) / 1000;
  const t1 = performance.now();
  const { session } = await openSession(modelPath, {
    device: 'cpu',
    intraOpThreads: opts.threads,
    spinning: opts.spinning,
    cacheOptimized: opts.cacheOptimized,
  });
  const sessionS = (performance.now() - t1) / 1000;
  const run = async (pixel: { shape: number[]; data: Float32Array }, latent: { shape: number[]; data: Float32Array }) =>
    (await runSession(session, { [TRANSPARENT_DECODER_IO.pixel]: pixel, [TRANSPARENT_DECODER_IO.latent]: latent }))[TRANSPARENT_DECODER_IO.rgba]!;
  const pixel = planes(3, size, size, 1, 1, 0);
  const latent = planes(4, size / 8, size / 8, 2, 8, -4);
  const time = async (tta: boolean) => {
    let best = Infinity;
    for (let i = 0; i < opts.runs; i++) {
      const t = performance.now();
      const out = await transparentDecode(run, pixel, latent, TRANSPARENT_DECODER_MULTIPLE, { tta });
      if (!out.data.every(Number.isFinite)) throw new Error('transparent decoder output has non-finite values');
      best = Math.min(best, (performance.now() - t) / 1000);
    }
    return best;
  };
  const ttaOffS = await time(false);
  const ttaOnS = await time(true);
  await session.release();
  const passGflop = transparentDecoderFlops(RELEASED_TRANSPARENT_DECODER, size, size) / 1e9;
  return {
    size,
    params: parameterCount(shapes),
    passGflop,
    buildS,
    cached: !built,
    sessionS,
    ttaOffS,
    ttaOnS,
    passGflops: passGflop / ttaOffS,
    maxRssGB: (process.resourceUsage().maxRSS * 1024) / 2 ** 30,
  };
}
