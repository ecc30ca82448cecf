// What the upscaler networks read their weights from: a flat name -> tensor source. A .safetensors file is one;
// a .pth state dict (through the restricted pickle reader) plugs in the same way once unwrapped.
import type { Tensor } from '../tensor.ts';

export interface TensorSource {
  names(): string[];
  shape(name: string): number[];
  /** The tensor as float32 (fp16 widened exactly). */
  get(name: string): Tensor;
}

/** Thrown when a weights file is not an upscaler this engine can build; the message says what was expected. */
export class UpscalerFormatError extends Error {
  override name = 'UpscalerFormatError';
}

/** Prefixes training frameworks leave on state-dict keys (DataParallel's `module.`, BasicSR's `netG.`). */
const STRIPPED_PREFIXES = ['module.', 'netG.'];

/** The source with a prefix every key shares (from STRIPPED_PREFIXES) removed, as spandrel canonicalises. */
export function stripCommonPrefix(src: TensorSource): TensorSource {
  const names = src.names();
  const prefix = STRIPPED_PREFIXES.find((p) => names.length > 0 && names.every((n) => n.startsWith(p)));
  if (!prefix) return src;
  return renamed(src, new Map(names.map((n) => [n.slice(prefix.length), n])));
}

/** A view of `src` under new names: `map` goes from the new name to the source's name. */
export function renamed(src: TensorSource, map: Map<string, string>): TensorSource {
  const lookup = (name: string): string => {
    const from = map.get(name);
    if (from === undefined) throw new UpscalerFormatError(`weight ${name} is missing`);
    return from;
  };
  return {
    names: () => [...map.keys()],
    shape: (name) => src.shape(lookup(name)),
    get: (name) => src.get(lookup(name)),
  };
}

export function requireShape(src: TensorSource, name: string, rank: number): number[] {
  const shape = src.shape(name);
  if (shape.length !== rank) throw new UpscalerFormatError(`weight ${name} has shape [${shape}], expected rank ${rank}`);
  return shape;
}
