// The restricted torch reader (.ckpt/.pt/.pth/.bin): fixtures equal their .safetensors twins bit for bit (zip and
// legacy layouts, fp16 storages, wrapper dicts); forbidden globals are refused by name before anything runs;
// every bound (depth, memo, tensor vs storage size, truncation, unknown opcodes) answers a clear ModelFileError.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, mkdtempSync, readFileSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ModelFileError } from '../../../src/engine/api.ts';
import { SafetensorsFile, TorchPickleFile, openTensorFile, type TensorFile } from '../../../src/engine/weights/index.ts';
import { f16ToF32, f32ToF16Bits } from '../../../src/engine/weights/float.ts';
import { restrictedUnpickle, DEFAULT_UNPICKLE_LIMITS } from '../../../src/engine/weights/pickle/unpickler.ts';
import { PickleBuilder, f32Bytes, stateDictPickle, writeTorchLegacy, writeTorchZip, writeZip } from './pickle-helpers.ts';

const FIX = 'test/fixtures';
const UP = `${FIX}/tiny-upscalers`;
const dir = mkdtempSync(join(tmpdir(), 'kiln-pickle-'));
after(() => rmSync(dir, { recursive: true, force: true }));

function sameTensors(a: TensorFile, b: TensorFile): void {
  assert.deepEqual(a.names().sort(), b.names().sort());
  for (const n of b.names()) {
    assert.deepEqual([a.entry(n).dtype, a.entry(n).shape], [b.entry(n).dtype, b.entry(n).shape], n);
    assert.deepEqual(Buffer.from(a.readBytes(n)), Buffer.from(b.readBytes(n)), `${n} bytes`);
  }
}

const refused = (pattern: RegExp) => (e: unknown) => {
  assert.ok(e instanceof ModelFileError, `a ModelFileError, got ${String(e)}`);
  assert.match((e as Error).message, pattern);
  return true;
};

test('tiny-sd1.ckpt (zip, wrapped in state_dict, float + int64 storages) equals tiny-sd1.safetensors bit for bit', () => {
  const ckpt = openTensorFile(`${FIX}/tiny-sd1.ckpt`);
  assert.ok(ckpt instanceof TorchPickleFile);
  assert.equal(ckpt.format, 'zip');
  assert.equal(ckpt.names().length, 513);
  sameTensors(ckpt, SafetensorsFile.open(`${FIX}/tiny-sd1.safetensors`));
  assert.deepEqual(ckpt.metadata, { epoch: '0', global_step: '470000' });
  const ids = ckpt.readInt('cond_stage_model.transformer.text_model.embeddings.position_ids');
  assert.ok(ids instanceof BigInt64Array);
  assert.equal(ids[76], 76n);
  // Partial reads (what fused q/k/v splitting uses) read only the asked-for range.
  const key = 'model.diffusion_model.input_blocks.0.0.weight';
  assert.deepEqual([...ckpt.readFloat32(key, 10, 5)], [...ckpt.readFloat32(key).subarray(10, 15)]);
});

test('upscaler .pth files: zip with params / params_ema wrappers, and the legacy (pre-1.6) layout', () => {
  const compact = openTensorFile(`${UP}/compact-x4.pth`);
  sameTensors(compact, SafetensorsFile.open(`${UP}/compact-x4.safetensors`));
  sameTensors(openTensorFile(`${UP}/realesrgan-x2.pth`), SafetensorsFile.open(`${UP}/realesrgan-x2.safetensors`));
  assert.ok(openTensorFile(`${UP}/realesrgan-x2.pth`).has('conv_first.weight'), 'params_ema unwrapped');
  // openTensorFile still opens safetensors, whatever the name.
  assert.ok(openTensorFile(`${UP}/compact-x4.safetensors`) instanceof SafetensorsFile);
});

test('a legacy file with fp16 (HalfStorage) storages widens exactly to float32', () => {
  const half = openTensorFile(`${UP}/compact-x4-fp16-legacy.pth`) as TorchPickleFile;
  assert.equal(half.format, 'legacy');
  const ref = SafetensorsFile.open(`${UP}/compact-x4.safetensors`);
  assert.deepEqual(half.names().sort(), ref.names().sort());
  for (const n of ref.names()) {
    assert.equal(half.entry(n).dtype, 'F16');
    const want = f16ToF32(Uint16Array.from(ref.readFloat32(n), (v) => f32ToF16Bits(v)));
    assert.deepEqual(half.readFloat32(n), want, n);
    assert.deepEqual(half.tensor(n).shape, ref.entry(n).shape);
  }
});

test('the malicious fixtures are refused by the name of the forbidden global, before anything is called', () => {
  assert.throws(
    () => openTensorFile(`${UP}/malicious-system.pth`),
    refused(/malicious-system\.pth: refused: the pickle names the global "posix system".*nothing was executed/s),
  );
  assert.throws(() => openTensorFile(`${UP}/malicious-eval-legacy.pth`), refused(/malicious-eval-legacy\.pth: refused: .*"__builtin__ eval"/s));
});

test('any global beyond the allow-list is refused, through GLOBAL and STACK_GLOBAL alike', () => {
  const pid = () => {
    throw new Error('persistent_load must not be reached');
  };
  const forbidden: [string, string][] = [
    ['os', 'system'],
    ['builtins', 'eval'],
    ['builtins', 'getattr'],
    ['torch', 'load'],
    ['torch.nn.modules.conv', 'Conv2d'],
    ['numpy.core.multiarray', '_reconstruct'],
    ['collections', 'defaultdict'],
  ];
  for (const [module, name] of forbidden) {
    const viaGlobal = new PickleBuilder().proto().global(module, name).str('echo hi').raw(0x85).reduce().stop().bytes();
    assert.throws(() => restrictedUnpickle(viaGlobal, 'x.pt', pid), refused(new RegExp(`x\\.pt: refused: the pickle names the global "${module} ${name}"`)));
    const viaStack = new PickleBuilder().proto(4).str(module).str(name).raw(0x93).str('1+1').raw(0x85).reduce().stop().bytes();
    assert.throws(() => restrictedUnpickle(viaStack, 'x.pt', pid), refused(new RegExp(`"${module} ${name}"`)));
  }
  // An allow-listed global still cannot be applied to arbitrary arguments.
  const odd = new PickleBuilder().proto().global('torch._utils', '_rebuild_tensor_v2').str('x').raw(0x85).reduce().stop().bytes();
  assert.throws(() => restrictedUnpickle(odd, 'x.pt', pid), refused(/_rebuild_tensor_v2 without a storage/));
});

test('bounds: nesting depth, memo size, unknown opcodes, truncated pickles', () => {
  const none = () => null;
  const deep = new PickleBuilder().proto();
  for (let i = 0; i < 100; i++) deep.raw(0x5d);
  for (let i = 0; i < 99; i++) deep.raw(0x61);
  deep.stop();
  assert.throws(() => restrictedUnpickle(deep.bytes(), 'd.pt', none), refused(/d\.pt: .*nest deeper than 64/));
  const memo = new PickleBuilder().proto().raw(0x4e);
  for (let i = 0; i < 20; i++) memo.raw(0x72, i, 0, 0, 0);
  assert.throws(
    () => restrictedUnpickle(memo.stop().bytes(), 'm.pt', none, 0, { ...DEFAULT_UNPICKLE_LIMITS, maxMemo: 10 }),
    refused(/memo is over 10 entries/),
  );
  assert.throws(() => restrictedUnpickle(Uint8Array.of(0x80, 2, 0x69), 'o.pt', none), refused(/opcode 0x69 is not one a tensor file needs/)); // INST
  assert.throws(() => restrictedUnpickle(Uint8Array.of(0x80, 2, 0x58, 0xff, 0xff, 0xff, 0x7f), 't.pt', none), refused(/over the .*-byte limit/));
  assert.throws(() => restrictedUnpickle(Uint8Array.of(0x80, 2, 0x7d), 't.pt', none), refused(/ends early/));
  assert.throws(() => restrictedUnpickle(Uint8Array.of(0x80, 2, 0x68, 7, 0x2e), 'g.pt', none), refused(/memo entry 7 was never stored/));
});

test('hand-made archives: deflated entries, strided views, module. prefixes, and size checks', () => {
  const values = [1, 2, 3, 4, 5, 6];
  const pickle = stateDictPickle([
    { name: 'module.w', type: 'FloatStorage', key: '0', numel: 6, shape: [2, 3] },
    // The transpose of w, saved as a view with strides (1, 3) of the same storage.
    { name: 'module.wt', type: 'FloatStorage', key: '0', numel: 6, shape: [3, 2], stride: [1, 3] },
    { name: 'module.tail', type: 'FloatStorage', key: '0', numel: 6, offset: 4, shape: [2] },
  ]);
  for (const deflate of [false, true]) {
    const file = join(dir, `hand-${deflate}.pt`);
    writeTorchZip(file, pickle, { 0: f32Bytes(values) }, deflate);
    const f = openTensorFile(file);
    assert.deepEqual(f.names(), ['w', 'wt', 'tail'], 'module. stripped');
    assert.deepEqual([...f.readFloat32('w')], values);
    assert.deepEqual([...f.readFloat32('wt')], [1, 4, 2, 5, 3, 6]);
    assert.deepEqual([...f.readFloat32('wt', 3, 2)], [5, 3]);
    assert.deepEqual([...f.readFloat32('tail')], [5, 6]);
  }

  const past = join(dir, 'past.pt');
  writeTorchZip(past, stateDictPickle([{ name: 'w', type: 'FloatStorage', key: '0', numel: 6, offset: 2, shape: [2, 3] }]), { 0: f32Bytes(values) });
  assert.throws(() => openTensorFile(past), refused(/past\.pt: tensor "w": shape \[2,3\] .* reaches past its storage of 6 elements/));
  const short = join(dir, 'short-storage.pt');
  writeTorchZip(short, stateDictPickle([{ name: 'w', type: 'FloatStorage', key: '0', numel: 6, shape: [6] }]), { 0: f32Bytes([1, 2]) });
  assert.throws(() => openTensorFile(short), refused(/storage "0" should hold 6 F32 values but its entry has only 8 bytes/));
  const missing = join(dir, 'missing-storage.pt');
  writeTorchZip(missing, stateDictPickle([{ name: 'w', type: 'FloatStorage', key: '3', numel: 1, shape: [1] }]), {});
  assert.throws(() => openTensorFile(missing), refused(/storage "3" is missing from the archive/));
  const noPkl = join(dir, 'no-pkl.pt');
  writeZip(noPkl, [['readme.txt', new TextEncoder().encode('hi')]]);
  assert.throws(() => openTensorFile(noPkl), refused(/not a torch\.save archive: expected one <folder>\/data\.pkl entry, found none/));
  const cut = join(dir, 'cut.ckpt');
  copyFileSync(`${FIX}/tiny-upscalers/compact-x4.pth`, cut);
  truncateSync(cut, 4000);
  assert.throws(() => openTensorFile(cut), refused(/cut\.ckpt: corrupt or unsupported zip archive: no end-of-central-directory record/));
  const plain = join(dir, 'plain.pkl');
  writeFileSync(plain, new PickleBuilder().proto().emptyDict().stop().bytes());
  assert.throws(() => openTensorFile(plain), refused(/a plain Python pickle, not a torch\.save file/));
  const noTensors = join(dir, 'no-tensors.pt');
  writeTorchZip(noTensors, new PickleBuilder().proto().emptyDict().str('epoch').int(3).setitem().stop().bytes(), {});
  assert.throws(() => openTensorFile(noTensors), refused(/holds no tensors/));
});

test('a legacy file cut inside its storage section is refused as truncated', () => {
  const bytes = readFileSync(`${UP}/compact-x4-fp16-legacy.pth`);
  const cut = join(dir, 'cut-legacy.pth');
  writeFileSync(cut, bytes.subarray(0, bytes.length - 100));
  assert.throws(() => openTensorFile(cut), refused(/cut-legacy\.pth: truncated file: storage/));
});

test('a legacy file whose pickles exceed the first read, and a dict that contains itself', () => {
  // {"name": <2 MB text>, "state_dict": {"w": tensor}}: the reader must fetch more than its first 1 MiB head.
  const big = 'x'.repeat(2 * 1024 * 1024);
  const object = new PickleBuilder().proto().emptyDict().str('name').str(big).setitem().str('state_dict').emptyDict();
  object.str('w').tensor('FloatStorage', '94000000000000', 3, 0, [3], [1]).setitem().setitem().stop();
  const legacy = join(dir, 'big-legacy.pt');
  writeTorchLegacy(legacy, object.bytes(), [['94000000000000', 3, f32Bytes([7, 8, 9])]]);
  const f = openTensorFile(legacy) as TorchPickleFile;
  assert.equal(f.format, 'legacy');
  assert.deepEqual([...f.readFloat32('w')], [7, 8, 9]);
  assert.equal(f.metadata.name?.length, big.length);

  // d = {}; d["self"] = d: refused with a clear error, not a stack overflow.
  const cyclic = new PickleBuilder().proto().emptyDict().raw(0x71, 0).str('self').raw(0x68, 0).setitem().stop().bytes();
  const file = join(dir, 'cyclic.pt');
  writeTorchZip(file, cyclic, {});
  assert.throws(() => openTensorFile(file), refused(/cyclic\.pt: (dicts nest deeper than 64 levels|the file holds no tensors)/));
});
