// Builders for hand-made torch files in tests: a tiny pickle assembler and a zip writer (stored or deflated),
// so hostile and unusual inputs can be produced without Python.
import { cpSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { deflateRawSync } from 'node:zlib';
import { SafetensorsFile } from '../../../src/engine/weights/index.ts';

/** Pickle assembler: chain ops, then bytes(). */
export class PickleBuilder {
  private readonly parts: number[] = [];
  raw(...b: number[]): this {
    return this.append(b);
  }
  private append(b: ArrayLike<number>): this {
    for (let i = 0; i < b.length; i++) this.parts.push(b[i]!);
    return this;
  }
  proto(v = 2): this {
    return this.raw(0x80, v);
  }
  str(s: string): this {
    const b = new TextEncoder().encode(s);
    if (b.length < 256) return this.raw(0x8c, b.length).append(b);
    return this.raw(0x58, b.length & 0xff, (b.length >> 8) & 0xff, (b.length >> 16) & 0xff, b.length >>> 24).append(b);
  }
  int(n: number): this {
    return this.raw(0x4a, n & 0xff, (n >> 8) & 0xff, (n >> 16) & 0xff, (n >>> 24) & 0xff);
  }
  global(module: string, name: string): this {
    return this.raw(0x63, ...new TextEncoder().encode(`${module}\n${name}\n`));
  }
  mark(): this {
    return this.raw(0x28);
  }
  tuple(): this {
    return this.raw(0x74);
  }
  emptyDict(): this {
    return this.raw(0x7d);
  }
  setitem(): this {
    return this.raw(0x73);
  }
  reduce(): this {
    return this.raw(0x52);
  }
  stop(): this {
    return this.raw(0x2e);
  }
  /** _rebuild_tensor_v2(persistent storage, offset, shape, stride, False, OrderedDict()) as torch writes it. */
  tensor(storageType: string, key: string, numel: number, offset: number, shape: number[], stride: number[]): this {
    this.global('torch._utils', '_rebuild_tensor_v2').mark();
    this.mark().str('storage').global('torch', storageType).str(key).str('cpu').int(numel).tuple().raw(0x51);
    this.int(offset).mark();
    for (const d of shape) this.int(d);
    this.tuple().mark();
    for (const s of stride) this.int(s);
    this.tuple().raw(0x89);
    this.global('collections', 'OrderedDict').raw(0x29).reduce();
    return this.tuple().reduce();
  }
  bytes(): Uint8Array {
    return Uint8Array.from(this.parts);
  }
}

/** A flat state dict {name: tensor} pickle. */
export function stateDictPickle(
  tensors: { name: string; type: string; key: string; numel: number; offset?: number; shape: number[]; stride?: number[] }[],
): Uint8Array {
  const p = new PickleBuilder().proto().emptyDict();
  for (const t of tensors) {
    const stride = t.stride ?? t.shape.map((_, i) => t.shape.slice(i + 1).reduce((a, d) => a * d, 1));
    p.str(t.name)
      .tensor(t.type, t.key, t.numel, t.offset ?? 0, t.shape, stride)
      .setitem();
  }
  return p.stop().bytes();
}

function crc32(data: Uint8Array): number {
  let c = ~0;
  for (const b of data) {
    c ^= b;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0xedb88320 : c >>> 1;
  }
  return ~c >>> 0;
}

/** Writes a zip with the given entries (STORED, or DEFLATED when `deflate`). */
export function writeZip(file: string, entries: [string, Uint8Array][], deflate = false): void {
  const chunks: Uint8Array[] = [];
  const central: Uint8Array[] = [];
  let offset = 0;
  for (const [name, data] of entries) {
    const nameBytes = new TextEncoder().encode(name);
    const body = deflate ? new Uint8Array(deflateRawSync(data)) : data;
    const method = deflate ? 8 : 0;
    const local = new DataView(new ArrayBuffer(30));
    local.setUint32(0, 0x04034b50, true);
    local.setUint16(4, 20, true);
    local.setUint16(8, method, true);
    local.setUint32(14, crc32(data), true);
    local.setUint32(18, body.length, true);
    local.setUint32(22, data.length, true);
    local.setUint16(26, nameBytes.length, true);
    const cd = new DataView(new ArrayBuffer(46));
    cd.setUint32(0, 0x02014b50, true);
    cd.setUint16(4, 20, true);
    cd.setUint16(6, 20, true);
    cd.setUint16(10, method, true);
    cd.setUint32(16, crc32(data), true);
    cd.setUint32(20, body.length, true);
    cd.setUint32(24, data.length, true);
    cd.setUint16(28, nameBytes.length, true);
    cd.setUint32(42, offset, true);
    chunks.push(new Uint8Array(local.buffer), nameBytes, body);
    central.push(new Uint8Array(cd.buffer), nameBytes);
    offset += 30 + nameBytes.length + body.length;
  }
  const cdSize = central.reduce((a, c) => a + c.length, 0);
  const end = new DataView(new ArrayBuffer(22));
  end.setUint32(0, 0x06054b50, true);
  end.setUint16(8, entries.length, true);
  end.setUint16(10, entries.length, true);
  end.setUint32(12, cdSize, true);
  end.setUint32(16, offset, true);
  writeFileSync(file, Buffer.concat([...chunks, ...central, new Uint8Array(end.buffer)]));
}

/** A torch zip archive holding `pickle` as archive/data.pkl and the given storages. */
export function writeTorchZip(file: string, pickle: Uint8Array, storages: Record<string, Uint8Array>, deflate = false): void {
  writeZip(
    file,
    [
      ['archive/data.pkl', pickle],
      ...Object.entries(storages).map(([k, v]) => [`archive/data/${k}`, v] as [string, Uint8Array]),
      ['archive/version', new TextEncoder().encode('3\n')],
    ],
    deflate,
  );
}

export function f32Bytes(values: number[]): Uint8Array {
  return new Uint8Array(Float32Array.from(values).buffer);
}

/** A legacy (pre-1.6) torch file: magic, protocol 1001, sys_info, `object`, the key list, then the storages. */
export function writeTorchLegacy(file: string, object: Uint8Array, storages: [string, number, Uint8Array][]): void {
  const magic = new PickleBuilder().proto().raw(0x8a, 10, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19).stop().bytes();
  const protocol = new PickleBuilder()
    .proto()
    .raw(0x4d, 1001 & 0xff, 1001 >> 8)
    .stop()
    .bytes();
  const sysInfo = new PickleBuilder().proto().emptyDict().str('little_endian').raw(0x88).setitem().stop().bytes();
  const keys = new PickleBuilder().proto().mark();
  for (const [k] of storages) keys.str(k);
  const parts: Uint8Array[] = [magic, protocol, sysInfo, object, keys.raw(0x6c).stop().bytes()];
  for (const [, numel, data] of storages) {
    const count = new Uint8Array(8);
    new DataView(count.buffer).setBigInt64(0, BigInt(numel), true);
    parts.push(count, data);
  }
  writeFileSync(file, Buffer.concat(parts));
}

/** Storage class torch.save names for each dtype a copied tensor may have. */
const STORAGE_OF: Record<string, string> = { F32: 'FloatStorage', F16: 'HalfStorage', BF16: 'BFloat16Storage', I64: 'LongStorage' };

/**
 * Writes `names` (default: all) of a tensor file as torch.save would: a flat state dict, one storage per tensor,
 * in the zip layout (torch >= 1.6) or the legacy one. The bytes are copied unchanged, so the result is a bit-exact
 * pickled twin, as `torch.save(safetensors.torch.load_file(src), dst)` makes it.
 */
export function writeTorchCopy(
  file: string,
  src: { names(): string[]; entry(n: string): { dtype: string; shape: number[] }; readBytes(n: string): Uint8Array },
  opts: { names?: string[]; layout?: 'zip' | 'legacy' } = {},
): void {
  const tensors = (opts.names ?? src.names()).map((name, i) => {
    const { dtype, shape } = src.entry(name);
    const type = STORAGE_OF[dtype];
    if (!type) throw new Error(`writeTorchCopy: no storage type for ${dtype}`);
    return { name, type, key: String(i), numel: shape.reduce((a, d) => a * d, 1), shape, bytes: src.readBytes(name) };
  });
  const pickle = stateDictPickle(tensors);
  if (opts.layout === 'legacy')
    writeTorchLegacy(
      file,
      pickle,
      tensors.map((t) => [t.key, t.numel, t.bytes]),
    );
  else writeTorchZip(file, pickle, Object.fromEntries(tensors.map((t) => [t.key, t.bytes])));
}

/**
 * Copies a diffusers SD1 folder (unet/, vae/, text_encoder/ with safetensors) to `dst` with every component's
 * weights as PyTorch pickles instead, covering each shape older saves come in: unet a zip
 * `diffusion_pytorch_model.bin`, vae a legacy-layout one, text_encoder transformers' sharded
 * `pytorch_model-0000N-of-00002.bin` with `pytorch_model.bin.index.json`. No .safetensors is left.
 */
export function writePickledFolder(src: string, dst: string): void {
  cpSync(src, dst, { recursive: true });
  for (const [component, layout] of [
    ['unet', 'zip'],
    ['vae', 'legacy'],
  ] as const) {
    const st = join(dst, component, 'diffusion_pytorch_model.safetensors');
    writeTorchCopy(join(dst, component, 'diffusion_pytorch_model.bin'), SafetensorsFile.open(st), { layout });
    rmSync(st);
  }
  const te = join(dst, 'text_encoder', 'model.safetensors');
  const teFile = SafetensorsFile.open(te);
  const names = teFile.names();
  const half = Math.ceil(names.length / 2);
  const shards = [names.slice(0, half), names.slice(half)];
  const weightMap: Record<string, string> = {};
  shards.forEach((shardNames, i) => {
    const shard = `pytorch_model-0000${i + 1}-of-00002.bin`;
    writeTorchCopy(join(dst, 'text_encoder', shard), teFile, { names: shardNames });
    for (const n of shardNames) weightMap[n] = shard;
  });
  writeFileSync(join(dst, 'text_encoder', 'pytorch_model.bin.index.json'), JSON.stringify({ metadata: {}, weight_map: weightMap }));
  rmSync(te);
}
