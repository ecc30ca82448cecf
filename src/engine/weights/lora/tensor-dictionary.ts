// What the LoRA and embedding loaders read: named float32 tensors plus string metadata, whatever the file format.
// `.safetensors` is read here; a pickled file (.pt/.ckpt/.bin) plugs in through `registerTensorDictionaryReader`
// once the restricted unpickler (weights/pickle/) provides one, so no loader here knows about pickles.
import { extname } from 'node:path';
import { ModelFileError } from '../../api.ts';
import type { Tensor } from '../../tensor.ts';
import { SafetensorsFile } from '../safetensors.ts';

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

export function safetensorsDictionary(file: SafetensorsFile): TensorDictionary {
  return {
    file: file.file,
    names: () => file.names(),
    shape: (name) => [...file.entry(name).shape],
    get: (name) => ({ shape: [...file.entry(name).shape], data: file.readFloat32(name) }),
    metadata: () => file.metadata,
  };
}

type Reader = (path: string) => TensorDictionary;
const readers = new Map<string, Reader>([['.safetensors', (path) => safetensorsDictionary(SafetensorsFile.open(path))]]);

/** Lets another reader (the safe pickle loader) handle files with these extensions. */
export function registerTensorDictionaryReader(extensions: string[], reader: Reader): void {
  for (const ext of extensions) readers.set(ext.toLowerCase(), reader);
}

/** Opens a LoRA or embedding file by its extension; an unreadable file is a ModelFileError naming it. */
export function openTensorDictionary(path: string): TensorDictionary {
  const ext = extname(path).toLowerCase();
  const reader = readers.get(ext);
  if (!reader) throw new ModelFileError(path, `cannot read "${ext}" files here (supported: ${[...readers.keys()].join(', ')})`);
  return reader(path);
}
