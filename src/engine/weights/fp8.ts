// 8-bit float weights as stored by fp8 checkpoints (safetensors dtypes F8_E4M3 = torch.float8_e4m3fn and
// F8_E5M2 = torch.float8_e5m2, e.g. flux1-dev-fp8.safetensors). The CPU runtime has no fp8 kernels, so they are
// widened to float32 on load (exactly: every fp8 value is a float32), and requantised by --quantize if asked.
//   e4m3fn: sign, 4 exponent bits (bias 7), 3 mantissa bits; no infinities; S.1111.111 is NaN; max 448.
//   e5m2:   sign, 5 exponent bits (bias 15), 2 mantissa bits; IEEE-style infinities and NaNs (exponent 31).

function table(expBits: number, mantBits: number, bias: number, ieeeSpecials: boolean): Float32Array {
  const t = new Float32Array(256);
  const maxExp = (1 << expBits) - 1;
  for (let code = 0; code < 256; code++) {
    const sign = code & 0x80 ? -1 : 1;
    const exp = (code >> mantBits) & maxExp;
    const mant = code & ((1 << mantBits) - 1);
    let v: number;
    if (ieeeSpecials && exp === maxExp) v = mant === 0 ? Infinity : NaN;
    else if (!ieeeSpecials && exp === maxExp && mant === (1 << mantBits) - 1) v = NaN;
    else if (exp === 0) v = (mant / (1 << mantBits)) * 2 ** (1 - bias);
    else v = (1 + mant / (1 << mantBits)) * 2 ** (exp - bias);
    t[code] = sign * v;
  }
  return t;
}

export const F8_E4M3_VALUES = table(4, 3, 7, false);
export const F8_E5M2_VALUES = table(5, 2, 15, true);

export function f8e4m3ToF32(src: Uint8Array): Float32Array {
  const out = new Float32Array(src.length);
  for (let i = 0; i < src.length; i++) out[i] = F8_E4M3_VALUES[src[i]!]!;
  return out;
}

export function f8e5m2ToF32(src: Uint8Array): Float32Array {
  const out = new Float32Array(src.length);
  for (let i = 0; i < src.length; i++) out[i] = F8_E5M2_VALUES[src[i]!]!;
  return out;
}
