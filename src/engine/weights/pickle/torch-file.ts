// torch.save files (.ckpt/.pt/.pth/.bin) read without running any of their code: the pickle goes through the
// restricted VM (unpickler.ts), which yields tensors as strided views of storages; storages are byte ranges of
// the file, read only when a tensor is asked for. Both layouts torch writes are read:
//  * zip (torch >= 1.6): `<stem>/data.pkl` + `<stem>/data/<key>` raw little-endian storages (zip.ts);
//  * legacy (< 1.6): five pickles in a row (magic number, protocol 1001, sys_info, the object, the storage keys),
//    then per storage an 8-byte element count and its raw bytes.
// The state dict is found under the usual wrappers (state_dict, params_ema, params, model, module.) and nested
// dicts of tensors are flattened with "." (an embedding's string_to_param.* ).
import { closeSync, fstatSync, openSync } from 'node:fs';
import { ModelFileError } from '../../api.ts';
import type { Tensor } from '../../tensor.ts';
import { decodeFloat32, decodeInt, dtypeBytes, type IntArray } from '../decode.ts';
import type { TensorFile, TensorInfo } from '../tensor-file.ts';
import type { WeightDType } from '../types.ts';
import { PickleEndsEarlyError, PyDict, STORAGE_DTYPES, type StorageRef, type StorageTypeName, type TensorRef, restrictedUnpickle } from './unpickler.ts';
import { type ZipEntry, entryDataOffset, readAt, readEntry, readZipDirectory } from './zip.ts';

/** Pickles bigger than this are not state dicts (an SDXL checkpoint's data.pkl is ~300 KB). */
export const MAX_PICKLE_BYTES = 256 * 1024 * 1024;
/** Larger files are not plausible checkpoints (the biggest real ones are ~25 GB). */
export const MAX_FILE_BYTES = 128 * 1024 ** 3;
/** Most tensors one file may hold. */
export const MAX_TENSORS = 1_000_000;

const LEGACY_MAGIC = 0x1950a86a20f9469cfc6cn;
const LEGACY_PROTOCOL = 1001;
/** Wrapper keys whose value is the real state dict, most specific first (Real-ESRGAN prefers params_ema). */
const WRAPPER_KEYS = ['state_dict', 'params_ema', 'params', 'model', 'module', 'net', 'generator'];

/** Whether a file's first bytes are a zip archive or a pickle stream: the two shapes torch.save writes. */
export function isTorchPickleHead(head: Uint8Array): boolean {
  if (head.length >= 4 && head[0] === 0x50 && head[1] === 0x4b && head[2] === 0x03 && head[3] === 0x04) return true;
  return head.length >= 2 && head[0] === 0x80 && head[1]! >= 2 && head[1]! <= 5;
}

interface StorageLocation {
  dtype: WeightDType;
  numel: number;
  /** Absolute offset of the raw bytes in the file (STORED zip entries, legacy files). */
  offset?: number;
  /** A DEFLATED zip entry: inflated when read. */
  deflated?: ZipEntry;
}

interface Entry extends TensorInfo {
  ref: TensorRef;
  storage: StorageLocation;
}

export class TorchPickleFile implements TensorFile {
  readonly format: 'zip' | 'legacy';

  private constructor(
    readonly file: string,
    readonly size: number,
    readonly mtimeMs: number,
    format: 'zip' | 'legacy',
    private readonly entries: Map<string, Entry>,
    readonly metadata: Record<string, string>,
  ) {
    this.format = format;
  }

  static open(file: string): TorchPickleFile {
    let fd: number;
    try {
      fd = openSync(file, 'r');
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      throw new ModelFileError(file, code === 'ENOENT' ? 'file not found' : `cannot open: ${(e as Error).message}`);
    }
    try {
      const st = fstatSync(fd);
      if (st.size < 4) throw new ModelFileError(file, `truncated file: ${st.size} bytes`);
      if (st.size > MAX_FILE_BYTES) throw new ModelFileError(file, `${st.size} bytes is beyond the ${MAX_FILE_BYTES}-byte limit for a tensor file`);
      const head = readAt(fd, file, 0, 4);
      const isZip = head[0] === 0x50 && head[1] === 0x4b;
      const { root, storages } = isZip ? readZipLayout(fd, file, st.size) : readLegacyLayout(fd, file, st.size);
      const { tensors, metadata } = stateDict(root, file);
      const entries = new Map<string, Entry>();
      for (const [name, ref] of tensors) entries.set(name, checkedEntry(file, name, ref, storages));
      return new TorchPickleFile(file, st.size, st.mtimeMs, isZip ? 'zip' : 'legacy', entries, metadata);
    } finally {
      closeSync(fd);
    }
  }

  names(): string[] {
    return [...this.entries.keys()];
  }

  has(name: string): boolean {
    return this.entries.has(name);
  }

  entry(name: string): TensorInfo {
    const e = this.entries.get(name);
    if (!e) throw new ModelFileError(this.file, `has no tensor named "${name}"`);
    return { dtype: e.dtype, shape: e.shape };
  }

  readBytes(name: string, start = 0, count?: number): Uint8Array {
    const e = this.entries.get(name);
    if (!e) throw new ModelFileError(this.file, `has no tensor named "${name}"`);
    const width = dtypeBytes(e.dtype);
    const total = e.shape.reduce((a, d) => a * d, 1);
    const n = count ?? total - start;
    if (start < 0 || n < 0 || start + n > total) {
      throw new ModelFileError(this.file, `tensor "${name}": element range [${start}, ${start + n}) is outside its ${total} elements`);
    }
    const out = new Uint8Array(new ArrayBuffer(n * width));
    if (n === 0) return out;
    const { ref } = e;
    if (isContiguous(ref)) {
      out.set(this.storageBytes(e.storage, ref.offset + start, n, width));
      return out;
    }
    // A strided view (saved from a transpose or slice): gather element by element from the spanned storage range.
    const span = maxIndex(ref) + 1;
    const src = this.storageBytes(e.storage, ref.offset, span, width);
    const idx = new Array<number>(ref.shape.length).fill(0);
    let flat = start;
    for (let d = ref.shape.length - 1; d >= 0; d--) {
      idx[d] = flat % ref.shape[d]!;
      flat = Math.floor(flat / ref.shape[d]!);
    }
    for (let i = 0; i < n; i++) {
      let at = 0;
      for (let d = 0; d < idx.length; d++) at += idx[d]! * ref.stride[d]!;
      out.set(src.subarray(at * width, (at + 1) * width), i * width);
      for (let d = idx.length - 1; d >= 0; d--) {
        if (++idx[d]! < ref.shape[d]!) break;
        idx[d] = 0;
      }
    }
    return out;
  }

  readFloat32(name: string, start = 0, count?: number): Float32Array {
    return decodeFloat32(this.entry(name).dtype, this.readBytes(name, start, count));
  }

  readInt(name: string, start = 0, count?: number): IntArray {
    const { dtype } = this.entry(name);
    const out = decodeInt(dtype, this.readBytes(name, start, count));
    if (!out) throw new ModelFileError(this.file, `tensor "${name}" is ${dtype}, not an integer type`);
    return out;
  }

  tensor(name: string): Tensor {
    return { shape: [...this.entry(name).shape], data: this.readFloat32(name) };
  }

  /** `count` elements of a storage from element `first`. */
  private storageBytes(s: StorageLocation, first: number, count: number, width: number): Uint8Array {
    const fd = openSync(this.file, 'r');
    try {
      if (s.deflated) return readEntry(fd, this.file, this.size, s.deflated).subarray(first * width, (first + count) * width);
      return readAt(fd, this.file, s.offset! + first * width, count * width);
    } finally {
      closeSync(fd);
    }
  }
}

function isContiguous(t: TensorRef): boolean {
  let expect = 1;
  for (let d = t.shape.length - 1; d >= 0; d--) {
    if (t.shape[d] !== 1 && t.stride[d] !== expect) return false;
    expect *= t.shape[d]!;
  }
  return true;
}

/** The largest element index (relative to the offset) the view touches. */
function maxIndex(t: TensorRef): number {
  let m = 0;
  for (let d = 0; d < t.shape.length; d++) m += (t.shape[d]! - 1) * t.stride[d]!;
  return m;
}

function checkedEntry(file: string, name: string, ref: TensorRef, storages: Map<string, StorageLocation>): Entry {
  const storage = storages.get(ref.storage.key);
  if (!storage) throw new ModelFileError(file, `tensor "${name}": its storage "${ref.storage.key}" is missing from the file`);
  const numel = ref.shape.reduce((a, d) => a * d, 1);
  if (!Number.isSafeInteger(numel)) throw new ModelFileError(file, `tensor "${name}": shape [${ref.shape}] is not plausible`);
  if (numel > 0 && ref.offset + maxIndex(ref) >= storage.numel) {
    throw new ModelFileError(
      file,
      `tensor "${name}": shape [${ref.shape}] with stride [${ref.stride}] at offset ${ref.offset} reaches past its storage of ${storage.numel} elements`,
    );
  }
  return { dtype: storage.dtype, shape: [...ref.shape], ref, storage };
}

/** The persistent-id loader for both layouts: records each storage's type and size, returns its reference. */
function storageLoader(file: string, seen: Map<string, StorageRef>) {
  return (pid: unknown): StorageRef => {
    if (!Array.isArray(pid) || pid[0] !== 'storage' || pid.length < 5)
      throw new ModelFileError(file, 'cannot read this pickle safely: a persistent id that is not a torch storage');
    const [, type, key, , numel, view] = pid as [string, unknown, unknown, unknown, unknown, unknown];
    if (!(type && typeof type === 'object' && 'module' in type && 'name' in type)) throw new ModelFileError(file, 'storage without a storage type');
    const typeName = (type as { name: string }).name;
    if (!(typeName in STORAGE_DTYPES)) throw new ModelFileError(file, `storage type torch.${typeName} is not supported`);
    if (typeof key !== 'string' && typeof key !== 'number') throw new ModelFileError(file, 'storage with a bad key');
    if (!Number.isSafeInteger(numel) || (numel as number) < 0) throw new ModelFileError(file, `storage "${key}" has a bad size`);
    if (view !== undefined && view !== null)
      throw new ModelFileError(file, `storage "${key}" is a legacy storage view, which is not supported; re-save the file with a current torch`);
    const ref: StorageRef = { kind: 'storage', type: typeName as StorageTypeName, key: String(key), numel: numel as number };
    const prev = seen.get(ref.key);
    if (prev && (prev.type !== ref.type || prev.numel !== ref.numel)) throw new ModelFileError(file, `storage "${key}" is described twice, differently`);
    seen.set(ref.key, ref);
    return ref;
  };
}

function readZipLayout(fd: number, file: string, size: number): { root: unknown; storages: Map<string, StorageLocation> } {
  const zip = readZipDirectory(fd, file, size);
  const pkls = [...zip.keys()].filter((n) => /^[^/]+\/data\.pkl$/.test(n));
  if (pkls.length !== 1) {
    throw new ModelFileError(file, `not a torch.save archive: expected one <folder>/data.pkl entry, found ${pkls.length ? pkls.join(', ') : 'none'}`);
  }
  const prefix = pkls[0]!.slice(0, -'data.pkl'.length);
  const byteorder = zip.get(`${prefix}byteorder`);
  if (byteorder && new TextDecoder().decode(readEntry(fd, file, size, byteorder)).trim() !== 'little') {
    throw new ModelFileError(file, 'big-endian torch archives are not supported');
  }
  const pklEntry = zip.get(pkls[0]!)!;
  if (pklEntry.size > MAX_PICKLE_BYTES)
    throw new ModelFileError(file, `data.pkl is ${pklEntry.size} bytes (limit ${MAX_PICKLE_BYTES}); this is not a plain state dict`);
  const seen = new Map<string, StorageRef>();
  const pkl = readEntry(fd, file, size, pklEntry);
  const { value } = restrictedUnpickle(pkl, file, storageLoader(file, seen));
  const storages = new Map<string, StorageLocation>();
  for (const ref of seen.values()) {
    const entry = zip.get(`${prefix}data/${ref.key}`);
    if (!entry) throw new ModelFileError(file, `storage "${ref.key}" is missing from the archive (${prefix}data/${ref.key})`);
    const dtype = STORAGE_DTYPES[ref.type];
    if (ref.numel * dtypeBytes(dtype) > entry.size) {
      throw new ModelFileError(file, `storage "${ref.key}" should hold ${ref.numel} ${dtype} values but its entry has only ${entry.size} bytes`);
    }
    storages.set(
      ref.key,
      entry.method === 0 ? { dtype, numel: ref.numel, offset: entryDataOffset(fd, file, size, entry) } : { dtype, numel: ref.numel, deflated: entry },
    );
  }
  return { root: value, storages };
}

function readLegacyLayout(fd: number, file: string, size: number): { root: unknown; storages: Map<string, StorageLocation> } {
  // The pickles' total length is not recorded: read a small head first and a larger one only when it runs out.
  for (let want = 1 << 20; ; want *= 16) {
    const head = readAt(fd, file, 0, Math.min(size, want, MAX_PICKLE_BYTES));
    try {
      return readLegacyPickles(fd, file, size, head);
    } catch (e) {
      if (!(e instanceof PickleEndsEarlyError) || head.length >= Math.min(size, MAX_PICKLE_BYTES)) throw e;
    }
  }
}

function readLegacyPickles(fd: number, file: string, size: number, head: Uint8Array): { root: unknown; storages: Map<string, StorageLocation> } {
  const noStorage = () => {
    throw new ModelFileError(file, 'cannot read this pickle safely: a persistent id before the object pickle');
  };
  const magic = restrictedUnpickle(head, file, noStorage, 0);
  if (typeof magic.value !== 'bigint' || magic.value !== LEGACY_MAGIC) {
    throw new ModelFileError(file, 'a plain Python pickle, not a torch.save file: Kiln reads only torch tensor files (zip or legacy format)');
  }
  const protocol = restrictedUnpickle(head, file, noStorage, magic.end);
  if (protocol.value !== LEGACY_PROTOCOL)
    throw new ModelFileError(file, `legacy torch file with protocol ${String(protocol.value)} (only ${LEGACY_PROTOCOL} is read)`);
  const sysInfo = restrictedUnpickle(head, file, noStorage, protocol.end);
  if (sysInfo.value instanceof PyDict && sysInfo.value.map.get('little_endian') === false)
    throw new ModelFileError(file, 'big-endian torch files are not supported');
  const seen = new Map<string, StorageRef>();
  const object = restrictedUnpickle(head, file, storageLoader(file, seen), sysInfo.end);
  const keys = restrictedUnpickle(head, file, noStorage, object.end);
  if (!Array.isArray(keys.value) || !keys.value.every((k) => typeof k === 'string'))
    throw new ModelFileError(file, 'legacy torch file without its storage key list');
  const storages = new Map<string, StorageLocation>();
  let at = keys.end;
  for (const key of keys.value as string[]) {
    const ref = seen.get(key);
    if (!ref) throw new ModelFileError(file, `storage "${key}" is listed but never used`);
    const dtype = STORAGE_DTYPES[ref.type];
    if (at + 8 > size) throw new ModelFileError(file, `truncated file: storage "${key}" starts past the end`);
    const count = new DataView(readAt(fd, file, at, 8).buffer).getBigInt64(0, true);
    if (count !== BigInt(ref.numel)) throw new ModelFileError(file, `storage "${key}" holds ${count} elements, the pickle says ${ref.numel}`);
    const bytes = ref.numel * dtypeBytes(dtype);
    if (at + 8 + bytes > size) throw new ModelFileError(file, `truncated file: storage "${key}" needs ${bytes} bytes at offset ${at + 8}`);
    storages.set(key, { dtype, numel: ref.numel, offset: at + 8 });
    at += 8 + bytes;
  }
  return { root: object.value, storages };
}

function isTensorRef(v: unknown): v is TensorRef {
  return typeof v === 'object' && v !== null && (v as { kind?: unknown }).kind === 'tensor';
}

/** Whether a dict holds tensors at any depth (pickles can build cyclic dicts: each dict is visited once). */
function hasTensors(v: unknown, seen = new Set<PyDict>()): boolean {
  if (!(v instanceof PyDict) || seen.has(v)) return false;
  seen.add(v);
  return [...v.map.values()].some((x) => isTensorRef(x) || hasTensors(x, seen));
}

/** Unwraps the state dict and flattens nested dicts of tensors; scalar siblings become metadata. */
function stateDict(root: unknown, file: string): { tensors: Map<string, TensorRef>; metadata: Record<string, string> } {
  if (!(root instanceof PyDict))
    throw new ModelFileError(file, 'the pickle holds no dict of tensors (a whole pickled model object is not supported; save its state_dict)');
  const metadata: Record<string, string> = {};
  let dict = root;
  for (;;) {
    const key = WRAPPER_KEYS.find((k) => hasTensors(dict.map.get(k)));
    if (!key) break;
    for (const [k, v] of dict.map) if (k !== key && (typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean')) metadata[String(k)] = String(v);
    dict = dict.map.get(key) as PyDict;
  }
  if (dict === root)
    for (const [k, v] of root.map) if (typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean') metadata[String(k)] = String(v);
  const tensors = new Map<string, TensorRef>();
  const walk = (d: PyDict, prefix: string, depth: number) => {
    if (depth > 64) throw new ModelFileError(file, 'dicts nest deeper than 64 levels');
    for (const [k, v] of d.map) {
      const name = prefix + String(k);
      if (isTensorRef(v)) {
        if (tensors.size >= MAX_TENSORS) throw new ModelFileError(file, `more than ${MAX_TENSORS} tensors`);
        if (tensors.has(name)) throw new ModelFileError(file, `tensor name "${name}" occurs twice`);
        tensors.set(name, v);
      } else if (v instanceof PyDict) walk(v, `${name}.`, depth + 1);
    }
  };
  walk(dict, '', 0);
  if (tensors.size === 0) throw new ModelFileError(file, 'the file holds no tensors');
  // DataParallel checkpoints prefix every key with "module."
  if ([...tensors.keys()].every((k) => k.startsWith('module.'))) {
    return { tensors: new Map([...tensors].map(([k, v]) => [k.slice('module.'.length), v])), metadata };
  }
  return { tensors, metadata };
}
