// Minimal reader for int64 tensors in the reference .safetensors files (token ids), for tests only.
import { readFileSync } from 'node:fs';

export function readInt64Tensor(file: string, name: string): number[] {
  const buf = readFileSync(file);
  const headerLength = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + headerLength).toString('utf8'));
  const entry = header[name];
  if (!entry) throw new Error(`${file}: no tensor ${name}`);
  if (entry.dtype !== 'I64') throw new Error(`${file}: ${name} is ${entry.dtype}, expected I64`);
  const [begin, end] = entry.data_offsets as [number, number];
  const out: number[] = [];
  for (let off = 8 + headerLength + begin; off < 8 + headerLength + end; off += 8) out.push(Number(buf.readBigInt64LE(off)));
  return out;
}
