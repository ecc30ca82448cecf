// One door to the image upscaler networks: detects the architecture from the weight names and describes how to
// build and feed it (scale, the size multiple its input must have). Adding an architecture is a branch here.
import type { GraphBuilder } from '../onnx/graph.ts';
import { buildCompact, compactConfig, isCompact } from './compact.ts';
import { buildRrdbNet, isRrdbNet, rrdbConfig, toOldRrdbLayout } from './rrdbnet.ts';
import { stripCommonPrefix, type TensorSource, UpscalerFormatError } from './upscaler-weights.ts';

export type UpscalerArch = 'ESRGAN' | 'Compact';

export interface UpscalerNet {
  arch: UpscalerArch;
  /** Output size / input size. */
  scale: number;
  inChannels: number;
  /** The input's height and width must be multiples of this; callers reflect-pad right/bottom, then crop (spandrel). */
  multipleOf: number;
  /** A short description of the hyper-parameters (part of the graph-cache key). */
  describe: Record<string, number | string>;
  build(b: GraphBuilder): void;
}

export function detectUpscaler(source: TensorSource): UpscalerNet {
  const names = stripCommonPrefix(source).names();
  if (isRrdbNet(names)) {
    const old = toOldRrdbLayout(source);
    const cfg = rrdbConfig(old);
    // spandrel's ESRGAN descriptor: multiple_of 4 when the input is pixel-unshuffled (A1111 >= 1.8 loads through it).
    const multipleOf = cfg.shuffle > 1 ? 4 : 1;
    return { arch: 'ESRGAN', scale: cfg.scale, inChannels: cfg.inChannels, multipleOf, describe: { ...cfg }, build: (b) => buildRrdbNet(b, old, cfg) };
  }
  if (isCompact(names)) {
    const cfg = compactConfig(source);
    return { arch: 'Compact', scale: cfg.scale, inChannels: cfg.inChannels, multipleOf: 1, describe: { ...cfg }, build: (b) => buildCompact(b, source, cfg) };
  }
  throw new UpscalerFormatError('not an ESRGAN/RRDBNet or SRVGGNetCompact state dict (no model.0/conv_first/body.0 keys)');
}

export { type TensorSource, UpscalerFormatError } from './upscaler-weights.ts';
