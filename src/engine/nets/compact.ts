// SRVGGNetCompact (Real-ESRGAN "Compact": realesr-general-x4v3, realesr-animevideov3) as an ONNX graph:
// conv + PReLU, num_conv x (conv + PReLU), a last conv to out*s^2 channels, PixelShuffle(s) (DepthToSpace CRD),
// plus a nearest-upsampled copy of the input. Hyper-parameters come from the keys as spandrel reads them.
import type { GraphBuilder } from '../onnx/graph.ts';
import { nearestUpsample } from './rrdbnet.ts';
import { requireShape, stripCommonPrefix, type TensorSource, UpscalerFormatError } from './upscaler-weights.ts';

export interface CompactConfig {
  inChannels: number;
  outChannels: number;
  features: number;
  convs: number;
  scale: number;
  /** Index of the last conv under `body.`. */
  lastIndex: number;
}

export function isCompact(names: readonly string[]): boolean {
  return names.includes('body.0.weight') && names.includes('body.1.weight');
}

export function compactConfig(source: TensorSource): CompactConfig {
  const src = stripCommonPrefix(source);
  const lastIndex = Math.max(...src.names().map((n) => Number(/^body\.(\d+)\./.exec(n)?.[1] ?? -1)));
  const [features, inChannels] = requireShape(src, 'body.0.weight', 4) as [number, number];
  const lastOut = requireShape(src, `body.${lastIndex}.weight`, 4)[0]!;
  // spandrel's get_scale_and_output_channels: the first plausible output channel count with a square quotient.
  for (const outChannels of [inChannels, 3, 4, 1]) {
    const sq = lastOut / outChannels;
    const scale = Math.round(Math.sqrt(sq));
    if (Number.isInteger(sq) && scale * scale === sq) return { inChannels, outChannels, features, convs: (lastIndex - 2) / 2, scale, lastIndex };
  }
  throw new UpscalerFormatError(`Compact last conv has ${lastOut} outputs, not channels x scale^2`);
}

/** Builds the net: input `image` [1, C, H, W], output `upscaled` [1, out, H*s, W*s]. */
export function buildCompact(b: GraphBuilder, source: TensorSource, cfg: CompactConfig): void {
  const src = stripCommonPrefix(source);
  const input = b.input('image', [1, cfg.inChannels, 'height', 'width']);
  let x = input;
  for (let i = 0; i < cfg.lastIndex; i += 2) {
    x = b.conv(x, src.get(`body.${i}.weight`), src.get(`body.${i}.bias`), `body.${i}`, { pad: 1 });
    const slope = src.get(`body.${i + 1}.weight`);
    x = b.op('PRelu', [x, b.weight(`body.${i + 1}.weight`, slope, [slope.shape[0]!, 1, 1])]);
  }
  x = b.conv(x, src.get(`body.${cfg.lastIndex}.weight`), src.get(`body.${cfg.lastIndex}.bias`), `body.${cfg.lastIndex}`, { pad: 1 });
  const shuffled = b.op('DepthToSpace', [x], { blocksize: cfg.scale, mode: 'CRD' });
  b.output(b.add(shuffled, nearestUpsample(b, input, cfg.scale)), 'upscaled', [1, cfg.outChannels, 'out_height', 'out_width']);
}
