// One interface over every tensor file format Kiln reads (.safetensors, and torch's pickled .ckpt/.pt/.pth/.bin
// through the restricted reader), and the one door to open them: openTensorFile picks the reader by magic bytes.
import { closeSync, readSync } from 'node:fs';
import { ModelFileError } from '../api.ts';
import type { NBitsWeight } from '../onnx/matmul-nbits.ts';
import type { Tensor } from '../tensor.ts';
import { GGUF_MAGIC, GgufFile } from './gguf.ts';
import { openWeightsFile } from './open-file.ts';
import { TorchPickleFile, isTorchPickleHead } from './pickle/torch-file.ts';
import { type IntArray, SafetensorsFile } from './safetensors.ts';
import type { WeightDType } from './types.ts';

export interface TensorInfo {
  dtype: WeightDType;
  shape: number[];
}

/** A file of named tensors, read lazily (only what is asked for). */
export interface TensorFile {
  readonly file: string;
  readonly size: number;
  readonly mtimeMs: number;
  /** safetensors __metadata__; for pickles, the scalar entries beside the state dict (epoch, global_step, name...). */
  readonly metadata: Record<string, string>;
  names(): string[];
  has(name: string): boolean;
  entry(name: string): TensorInfo;
  /** Raw little-endian bytes of `count` elements from element `start` (flat row-major order). */
  readBytes(name: string, start?: number, count?: number): Uint8Array;
  /** Widened/converted to float32 (F16/BF16 exactly; F64 rounds; integers by value). */
  readFloat32(name: string, start?: number, count?: number): Float32Array;
  /** Integer tensors in their own width (I64 as BigInt64Array; BOOL as Uint8Array of 0/1). */
  readInt(name: string, start?: number, count?: number): IntArray;
  tensor(name: string): Tensor;
  /** A 2-D tensor stored block-quantised (GGUF Q8_0/Q4_0/Q4_K) as MatMulNBits blocks; undefined otherwise. */
  nbits?(name: string): NBitsWeight | undefined;
}

/**
 * Opens a tensor file of any supported format, chosen by its first bytes (not its name): safetensors, a torch
 * zip archive, or a legacy (pre-1.6) torch file. Pickles are read by the restricted reader, which refuses any
 * global beyond tensors, storages and OrderedDict. Throws ModelFileError naming the file.
 */
export function openTensorFile(file: string): TensorFile {
  const head = readHead(file);
  if (isTorchPickleHead(head)) return TorchPickleFile.open(file);
  if (new TextDecoder().decode(head.subarray(0, 4)) === GGUF_MAGIC) return GgufFile.open(file);
  return SafetensorsFile.open(file, { allowPickleName: true });
}

function readHead(file: string): Uint8Array {
  const fd = openWeightsFile(file, 'tensor file (.safetensors, .gguf, .ckpt, .pt, .pth, .bin)');
  try {
    const head = new Uint8Array(8);
    const got = readSync(fd, head, 0, 8, 0);
    return head.subarray(0, got);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'EISDIR') throw new ModelFileError(file, 'is a folder, expected a tensor file (.safetensors, .gguf, .ckpt, .pt, .pth, .bin)');
    throw new ModelFileError(file, `cannot read: ${(e as Error).message}`);
  } finally {
    closeSync(fd);
  }
}
