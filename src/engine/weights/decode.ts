// Raw little-endian tensor bytes -> typed arrays (fp8 widened on load: weights/fp8.ts), the same for every tensor file format (safetensors, torch
// pickles). The bytes must be a fresh buffer of their own (offset 0), as the readers' readBytes return them.
import { bf16ToF32, f16ToF32 } from './float.ts';
import { f8e4m3ToF32, f8e5m2ToF32 } from './fp8.ts';
import type { WeightDType } from './types.ts';

export type IntArray = BigInt64Array | Int32Array | Int16Array | Int8Array | Uint8Array;

const WIDTH: Record<WeightDType, number> = { F64: 8, F32: 4, F16: 2, BF16: 2, F8_E4M3: 1, F8_E5M2: 1, I64: 8, I32: 4, I16: 2, I8: 1, U8: 1, BOOL: 1 };

/** Bytes per element of a stored dtype. */
export function dtypeBytes(dtype: WeightDType): number {
  return WIDTH[dtype];
}

/** Whether `dtype` names a dtype the readers can decode. */
export function isKnownDType(dtype: string): dtype is WeightDType {
  return Object.hasOwn(WIDTH, dtype);
}

export const KNOWN_DTYPES = Object.keys(WIDTH);

/** Widened/converted to float32 (F16/BF16 exactly; F64 rounds; integers by value). */
export function decodeFloat32(dtype: WeightDType, bytes: Uint8Array): Float32Array {
  const n = bytes.byteLength / WIDTH[dtype];
  switch (dtype) {
    case 'F32':
      return new Float32Array(bytes.buffer, 0, n);
    case 'F16':
      return f16ToF32(new Uint16Array(bytes.buffer, 0, n));
    case 'BF16':
      return bf16ToF32(new Uint16Array(bytes.buffer, 0, n));
    case 'F8_E4M3':
      return f8e4m3ToF32(bytes);
    case 'F8_E5M2':
      return f8e5m2ToF32(bytes);
    case 'F64':
      return Float32Array.from(new Float64Array(bytes.buffer, 0, n));
    case 'I64': {
      const src = new BigInt64Array(bytes.buffer, 0, n);
      const out = new Float32Array(n);
      for (let i = 0; i < n; i++) out[i] = Number(src[i]);
      return out;
    }
    default:
      return Float32Array.from(decodeInt(dtype, bytes) as Exclude<IntArray, BigInt64Array>);
  }
}

/** Integer tensors in their own width (I64 as BigInt64Array; BOOL as Uint8Array of 0/1); undefined for float types. */
export function decodeInt(dtype: WeightDType, bytes: Uint8Array): IntArray | undefined {
  const n = bytes.byteLength / WIDTH[dtype];
  switch (dtype) {
    case 'I64':
      return new BigInt64Array(bytes.buffer, 0, n);
    case 'I32':
      return new Int32Array(bytes.buffer, 0, n);
    case 'I16':
      return new Int16Array(bytes.buffer, 0, n);
    case 'I8':
      return new Int8Array(bytes.buffer, 0, n);
    case 'U8':
    case 'BOOL':
      return bytes;
    default:
      return undefined;
  }
}
