// What the LoRA and embedding loaders read: named float32 tensors plus string metadata, whatever the file format.
// Files open through openTensorFile, which reads safetensors and (through the restricted unpickler) torch's
// .pt/.ckpt/.pth/.bin alike, chosen by magic bytes, so no loader here knows about pickles.
import type { Tensor } from '../../tensor.ts';
import { openTensorFile, type TensorFile } from '../tensor-file.ts';

export interface TensorDictionary {
  /** The file, for error messages and identity. */
  readonly file: string;
  names(): string[];
  shape(name: string): number[];
  /** The tensor widened to float32 (a fresh array the caller may modify). */
  get(name: string): Tensor;
  /** String metadata (safetensors `__metadata__`; a pickle's scalar fields). */
  metadata(): Record<string, string>;
}

export function tensorFileDictionary(file: TensorFile): TensorDictionary {
  return {
    file: file.file,
    names: () => file.names(),
    shape: (name) => [...file.entry(name).shape],
    get: (name) => ({ shape: [...file.entry(name).shape], data: file.readFloat32(name) }),
    metadata: () => file.metadata,
  };
}

/** Opens a LoRA or embedding file of any supported format; an unreadable file is a ModelFileError naming it. */
export function openTensorDictionary(path: string): TensorDictionary {
  return tensorFileDictionary(openTensorFile(path));
}
