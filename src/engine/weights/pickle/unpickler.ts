// A restricted pickle VM: it reads the opcodes torch.save emits (protocols 2-5) and builds plain data only.
// GLOBAL/STACK_GLOBAL may name only the allow-listed torch/collections globals below; anything else (os.system,
// builtins.eval, any class) is refused with the global's name before any REDUCE, BUILD or NEWOBJ runs. Nothing
// in a pickle is ever called: the allow-listed "callables" are interpreted here as data constructors.
import { ModelFileError } from '../../api.ts';

/** The storage dtypes torch pickles name (torch.<X>Storage), with safetensors-style dtype names. */
export const STORAGE_DTYPES = {
  FloatStorage: 'F32',
  HalfStorage: 'F16',
  BFloat16Storage: 'BF16',
  DoubleStorage: 'F64',
  LongStorage: 'I64',
  IntStorage: 'I32',
  ShortStorage: 'I16',
  CharStorage: 'I8',
  ByteStorage: 'U8',
  BoolStorage: 'BOOL',
} as const;
export type StorageTypeName = keyof typeof STORAGE_DTYPES;

/** A global the pickle named and the allow-list accepted. */
export class PyGlobal {
  constructor(
    readonly module: string,
    readonly name: string,
  ) {}
  get qualified(): string {
    return `${this.module}.${this.name}`;
  }
}

/** A Python dict/OrderedDict: insertion-ordered, keys are strings or numbers. */
export class PyDict {
  readonly map = new Map<unknown, unknown>();
}

/** The persistent id of a storage: ('storage', <type>, key, location, numel[, view_metadata]). */
export interface StorageRef {
  readonly kind: 'storage';
  readonly type: StorageTypeName;
  readonly key: string;
  readonly numel: number;
}

/** A tensor as torch._utils._rebuild_tensor_v2 describes it: a strided view of a storage. */
export interface TensorRef {
  readonly kind: 'tensor';
  readonly storage: StorageRef;
  readonly offset: number;
  readonly shape: number[];
  readonly stride: number[];
}

const CONVERT_ADVICE =
  'If you trust the file, convert it once to .safetensors with a trusted Python setup (torch.load with weights_only=True, then safetensors.torch.save_file).';

/** The bytes ran out before STOP: a truncated file, or (legacy files) a head read that was too short. */
export class PickleEndsEarlyError extends ModelFileError {}

const ALLOWED_GLOBALS = new Set([
  'collections.OrderedDict',
  'torch._utils._rebuild_tensor',
  'torch._utils._rebuild_tensor_v2',
  'torch._utils._rebuild_parameter',
  'torch._utils._rebuild_parameter_with_state',
  'torch.Size',
  '_codecs.encode',
  ...Object.keys(STORAGE_DTYPES).map((s) => `torch.${s}`),
  // dtype objects appear as plain values in some metadata; fetching them calls nothing.
  ...['float16', 'float32', 'float64', 'bfloat16', 'int64', 'int32', 'uint8', 'bool'].map((d) => `torch.${d}`),
]);

export interface UnpickleLimits {
  /** Most entries the memo may hold. */
  maxMemo: number;
  /** Most values on the stack (including marks). */
  maxStack: number;
  /** Deepest nesting of containers the result may have. */
  maxDepth: number;
  /** Longest single string/bytes value. */
  maxStringBytes: number;
  /** Most dimensions of a tensor. */
  maxDims: number;
}

export const DEFAULT_UNPICKLE_LIMITS: UnpickleLimits = {
  maxMemo: 4_000_000,
  maxStack: 4_000_000,
  maxDepth: 64,
  maxStringBytes: 64 * 1024 * 1024,
  maxDims: 16,
};

export interface UnpickleResult {
  value: unknown;
  /** Offset just after the STOP opcode (legacy torch files hold several pickles in a row). */
  end: number;
}

/**
 * Runs one pickle from `bytes[start]`. `persistentLoad` turns a persistent id into a value (torch: storages).
 * `file` names the file in every error.
 */
export function restrictedUnpickle(
  bytes: Uint8Array,
  file: string,
  persistentLoad: (pid: unknown) => unknown,
  start = 0,
  limits: UnpickleLimits = DEFAULT_UNPICKLE_LIMITS,
): UnpickleResult {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const stack: unknown[] = [];
  const marks: number[] = [];
  const memo = new Map<number, unknown>();
  const depth = new WeakMap<object, number>();
  let pos = start;
  const fail = (why: string) => new ModelFileError(file, `cannot read this pickle safely: ${why} (at byte ${pos}). ${CONVERT_ADVICE}`);
  const need = (n: number) => {
    if (pos + n > bytes.length)
      throw new PickleEndsEarlyError(file, `cannot read this pickle safely: the pickle ends early (truncated file?) (at byte ${pos})`);
  };
  const u8 = () => {
    need(1);
    return bytes[pos++]!;
  };
  const u16 = () => {
    need(2);
    const v = view.getUint16(pos, true);
    pos += 2;
    return v;
  };
  const u32 = () => {
    need(4);
    const v = view.getUint32(pos, true);
    pos += 4;
    return v;
  };
  const i32 = () => {
    need(4);
    const v = view.getInt32(pos, true);
    pos += 4;
    return v;
  };
  const u64 = () => {
    need(8);
    const v = view.getBigUint64(pos, true);
    pos += 8;
    if (v > BigInt(limits.maxStringBytes)) throw fail(`a ${v}-byte value is over the ${limits.maxStringBytes}-byte limit`);
    return Number(v);
  };
  const take = (n: number) => {
    if (n > limits.maxStringBytes) throw fail(`a ${n}-byte value is over the ${limits.maxStringBytes}-byte limit`);
    need(n);
    const out = bytes.subarray(pos, pos + n);
    pos += n;
    return out;
  };
  const line = () => {
    const end = bytes.indexOf(0x0a, pos);
    if (end < 0 || end - pos > 4096) throw fail('an unterminated text argument');
    const s = new TextDecoder('latin1').decode(bytes.subarray(pos, end));
    pos = end + 1;
    return s;
  };
  const utf8 = (b: Uint8Array) => new TextDecoder('utf-8', { fatal: false }).decode(b);
  const push = (v: unknown) => {
    if (stack.length >= limits.maxStack) throw fail(`the stack is over ${limits.maxStack} values`);
    stack.push(v);
  };
  const pop = () => {
    if (stack.length === 0 || (marks.length && stack.length <= marks[marks.length - 1]!)) throw fail('stack underflow');
    return stack.pop();
  };
  const top = () => {
    if (stack.length === 0) throw fail('stack underflow');
    return stack[stack.length - 1];
  };
  const popMark = () => {
    const m = marks.pop();
    if (m === undefined) throw fail('a MARK was expected');
    return stack.splice(m);
  };
  const nested = (container: object, children: unknown[]) => {
    let d = depth.get(container) ?? 1;
    for (const c of children) if (c && typeof c === 'object') d = Math.max(d, (depth.get(c) ?? 1) + 1);
    if (d > limits.maxDepth) throw fail(`containers nest deeper than ${limits.maxDepth}`);
    depth.set(container, d);
  };
  const memoPut = (index: number, v: unknown) => {
    if (!memo.has(index) && memo.size >= limits.maxMemo) throw fail(`the memo is over ${limits.maxMemo} entries`);
    memo.set(index, v);
  };
  const memoGet = (index: number) => {
    if (!memo.has(index)) throw fail(`memo entry ${index} was never stored`);
    return memo.get(index);
  };
  const global = (module: string, name: string) => {
    const qualified = `${module}.${name}`;
    if (!ALLOWED_GLOBALS.has(qualified)) {
      throw new ModelFileError(
        file,
        `refused: the pickle names the global "${module} ${name}", which is not a tensor, storage or OrderedDict. ` +
          'Kiln reads only plain tensor data from pickled files and never runs code from them; nothing was executed. ' +
          `${CONVERT_ADVICE} Otherwise delete it.`,
      );
    }
    return new PyGlobal(module, name);
  };
  const addItems = (d: unknown, items: unknown[]) => {
    if (!(d instanceof PyDict)) throw fail('SETITEM(S) on something that is not a dict');
    if (items.length % 2) throw fail('SETITEMS with an odd number of values');
    for (let i = 0; i < items.length; i += 2) {
      const k = items[i];
      if (k !== null && typeof k === 'object') throw fail('a dict key that is not a string or number');
      d.map.set(k, items[i + 1]);
    }
    nested(d, items);
  };
  const append = (l: unknown, items: unknown[]) => {
    if (!Array.isArray(l)) throw fail('APPEND(S) on something that is not a list');
    for (const x of items) l.push(x);
    nested(l, items);
  };
  const tuple = (items: unknown[]) => {
    nested(items, items);
    return items;
  };

  for (;;) {
    const op = u8();
    switch (op) {
      case 0x80: // PROTO
        if (u8() > 5) throw fail('pickle protocol above 5');
        break;
      case 0x95: // FRAME: a length hint only
        need(8);
        pos += 8;
        break;
      case 0x2e: // STOP
        if (stack.length !== 1 || marks.length) throw fail('the pickle does not end with exactly one value');
        return { value: stack[0], end: pos };
      case 0x28: // MARK
        marks.push(stack.length);
        if (marks.length > limits.maxStack) throw fail('too many MARKs');
        break;
      case 0x30: // POP
        if (marks.length && stack.length === marks[marks.length - 1]) marks.pop();
        else pop();
        break;
      case 0x31: // POP_MARK
        popMark();
        break;
      case 0x32: // DUP
        push(top());
        break;
      case 0x4e: // NONE
        push(null);
        break;
      case 0x88: // NEWTRUE
        push(true);
        break;
      case 0x89: // NEWFALSE
        push(false);
        break;
      case 0x4a: // BININT
        push(i32());
        break;
      case 0x4b: // BININT1
        push(u8());
        break;
      case 0x4d: // BININT2
        push(u16());
        break;
      case 0x8a: // LONG1
      case 0x8b: {
        // LONG4
        const n = op === 0x8a ? u8() : u32();
        if (n > 64) throw fail(`a ${n}-byte integer`);
        const b = take(n);
        let v = 0n;
        for (let i = n - 1; i >= 0; i--) v = (v << 8n) | BigInt(b[i]!);
        if (n > 0 && b[n - 1]! & 0x80) v -= 1n << BigInt(8 * n);
        push(v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v);
        break;
      }
      case 0x49: {
        // INT (protocol 0 text): "01"/"00" are booleans
        const s = line();
        if (s === '01' || s === '00') push(s === '01');
        else if (/^-?\d+$/.test(s)) push(Number(s));
        else throw fail(`bad INT "${s}"`);
        break;
      }
      case 0x47: // BINFLOAT (big-endian)
        need(8);
        push(view.getFloat64(pos, false));
        pos += 8;
        break;
      case 0x58: // BINUNICODE
        push(utf8(take(u32())));
        break;
      case 0x8c: // SHORT_BINUNICODE
        push(utf8(take(u8())));
        break;
      case 0x8d: // BINUNICODE8
        push(utf8(take(u64())));
        break;
      case 0x54: // BINSTRING (Python 2 str): read as latin-1 text
        push(new TextDecoder('latin1').decode(take(i32())));
        break;
      case 0x55: // SHORT_BINSTRING
        push(new TextDecoder('latin1').decode(take(u8())));
        break;
      case 0x42: // BINBYTES
        push(take(u32()).slice());
        break;
      case 0x43: // SHORT_BINBYTES
        push(take(u8()).slice());
        break;
      case 0x8e: // BINBYTES8
      case 0x96: // BYTEARRAY8
        push(take(u64()).slice());
        break;
      case 0x7d: // EMPTY_DICT
        push(new PyDict());
        break;
      case 0x5d: // EMPTY_LIST
        push([]);
        break;
      case 0x29: // EMPTY_TUPLE
        push([]);
        break;
      case 0x8f: // EMPTY_SET: read as a list
        push([]);
        break;
      case 0x90: // ADDITEMS
        append(stack[(marks[marks.length - 1] ?? 0) - 1], popMark());
        break;
      case 0x91: // FROZENSET
        push(tuple(popMark()));
        break;
      case 0x74: // TUPLE
        push(tuple(popMark()));
        break;
      case 0x85: // TUPLE1
        push(tuple([pop()]));
        break;
      case 0x86: {
        // TUPLE2
        const b = pop();
        push(tuple([pop(), b]));
        break;
      }
      case 0x87: {
        // TUPLE3
        const c = pop();
        const b = pop();
        push(tuple([pop(), b, c]));
        break;
      }
      case 0x6c: // LIST
        push(tuple(popMark()));
        break;
      case 0x64: {
        // DICT
        const d = new PyDict();
        addItems(d, popMark());
        push(d);
        break;
      }
      case 0x73: {
        // SETITEM
        const v = pop();
        const k = pop();
        addItems(top(), [k, v]);
        break;
      }
      case 0x75: {
        // SETITEMS
        const items = popMark();
        addItems(top(), items);
        break;
      }
      case 0x61: {
        // APPEND
        const v = pop();
        append(top(), [v]);
        break;
      }
      case 0x65: {
        // APPENDS
        const items = popMark();
        append(top(), items);
        break;
      }
      case 0x71: // BINPUT
        memoPut(u8(), top());
        break;
      case 0x72: // LONG_BINPUT
        memoPut(u32(), top());
        break;
      case 0x94: // MEMOIZE
        memoPut(memo.size, top());
        break;
      case 0x68: // BINGET
        push(memoGet(u8()));
        break;
      case 0x6a: // LONG_BINGET
        push(memoGet(u32()));
        break;
      case 0x63: {
        // GLOBAL "module\nname\n"
        const module = line();
        push(global(module, line()));
        break;
      }
      case 0x93: {
        // STACK_GLOBAL
        const name = pop();
        const module = pop();
        if (typeof module !== 'string' || typeof name !== 'string') throw fail('STACK_GLOBAL without two strings');
        push(global(module, name));
        break;
      }
      case 0x51: // BINPERSID
        push(persistentLoad(pop()));
        break;
      case 0x52: {
        // REDUCE: callable(*args), interpreted (never called) for the allow-listed globals only
        const args = pop();
        const callable = pop();
        push(construct(callable, args, fail, limits));
        break;
      }
      case 0x81: {
        // NEWOBJ: cls.__new__(cls, *args) — only OrderedDict() qualifies
        const args = pop();
        const cls = pop();
        push(construct(cls, args, fail, limits));
        break;
      }
      case 0x62: {
        // BUILD: state on an object. Torch sets OrderedDict._metadata (module versions): accepted and dropped.
        const state = pop();
        const obj = top();
        if (!(obj instanceof PyDict) && !isTensor(obj)) throw fail('BUILD on an object that is not a dict or tensor');
        void state;
        break;
      }
      default:
        throw fail(`opcode 0x${op.toString(16).padStart(2, '0')} is not one a tensor file needs (refused)`);
    }
  }
}

function isTensor(v: unknown): v is TensorRef {
  return typeof v === 'object' && v !== null && (v as { kind?: unknown }).kind === 'tensor' && 'storage' in v;
}

function isIntList(v: unknown): v is number[] {
  return Array.isArray(v) && v.every((x) => Number.isSafeInteger(x) && (x as number) >= 0);
}

function construct(callable: unknown, args: unknown, fail: (why: string) => Error, limits: UnpickleLimits): unknown {
  if (!(callable instanceof PyGlobal)) throw fail('REDUCE on something that is not an allowed global');
  if (!Array.isArray(args)) throw fail(`${callable.qualified} called without an argument tuple`);
  switch (callable.qualified) {
    case 'collections.OrderedDict': {
      const d = new PyDict();
      if (args.length === 0) return d;
      // OrderedDict([(k, v), ...])
      const pairs = args[0];
      if (args.length !== 1 || !Array.isArray(pairs)) throw fail('OrderedDict with unexpected arguments');
      for (const p of pairs) {
        if (!Array.isArray(p) || p.length !== 2 || (p[0] !== null && typeof p[0] === 'object')) throw fail('OrderedDict item that is not a (key, value) pair');
        d.map.set(p[0], p[1]);
      }
      return d;
    }
    case 'torch.Size':
      if (args.length !== 1 || !isIntList(args[0])) throw fail('torch.Size without a list of sizes');
      return [...args[0]];
    case '_codecs.encode': {
      // Python-2-era pickles store bytes as encode(latin-1 text, 'latin1').
      const [text, encoding] = args;
      if (typeof text !== 'string' || (encoding !== 'latin1' && encoding !== 'latin-1')) throw fail('_codecs.encode other than latin1 text');
      return Uint8Array.from(text, (c) => c.charCodeAt(0) & 0xff);
    }
    case 'torch._utils._rebuild_tensor':
    case 'torch._utils._rebuild_tensor_v2': {
      const [storage, offset, shape, stride] = args;
      if (!storage || typeof storage !== 'object' || (storage as StorageRef).kind !== 'storage') throw fail(`${callable.name} without a storage`);
      if (!Number.isSafeInteger(offset) || (offset as number) < 0) throw fail(`${callable.name} with a bad storage offset`);
      if (!isIntList(shape) || !isIntList(stride) || shape.length !== stride.length) throw fail(`${callable.name} with bad sizes or strides`);
      if (shape.length > limits.maxDims) throw fail(`a tensor with ${shape.length} dimensions (limit ${limits.maxDims})`);
      return { kind: 'tensor', storage: storage as StorageRef, offset: offset as number, shape: [...shape], stride: [...stride] } satisfies TensorRef;
    }
    case 'torch._utils._rebuild_parameter':
    case 'torch._utils._rebuild_parameter_with_state':
      if (!isTensor(args[0])) throw fail(`${callable.name} without a tensor`);
      return args[0];
    default:
      throw fail(`${callable.qualified} cannot be called`);
  }
}
