import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ModelFileError } from '../../../src/engine/api.ts';
import { gridOrigins, upscaleWithModel } from '../../../src/engine/pipelines/upscale-image.ts';
import { openUpscaler, type UpscalerModel } from '../../../src/engine/pipelines/upscaler-model.ts';
import { SafetensorsFile } from '../../../src/engine/weights/safetensors.ts';
import { assertClose, FIXTURES, ref } from './fixture-io.ts';

const cache = mkdtempSync(join(tmpdir(), 'kiln-upscalers-'));
test.after(() => rmSync(cache, { recursive: true, force: true }));

const models = new Map<string, Promise<UpscalerModel>>();
function upscaler(name: string): Promise<UpscalerModel> {
  let m = models.get(name);
  if (!m) {
    m = openUpscaler(join(FIXTURES, 'tiny-upscalers', `${name}.safetensors`), { device: 'cpu', cacheDir: cache, threads: 1 });
    models.set(name, m);
  }
  return m;
}

/** The raw (unclamped) forward, as the references store it: the graph without the runner's clamp. */
async function rawForward(name: string, input: Parameters<UpscalerModel['run']>[0]) {
  const { createSession, runSession } = await import('../../../src/engine/runtime.ts');
  const { getOrBuildGraph } = await import('../../../src/engine/onnx/cache.ts');
  const m = await upscaler(name);
  const g = getOrBuildGraph(cache, { network: `raw-${name}`, weightsIdentity: name, precision: 'fp32' }, (b) => m.net.build(b));
  const s = await createSession(g.modelPath, { device: 'cpu', intraOpThreads: 1 });
  return (await runSession(s, { image: input })).upscaled!;
}

for (const [name, refName, arch, scale] of [
  ['esrgan-x4-old', 'esrgan_x4', 'ESRGAN', 4],
  ['realesrgan-x4-new', 'esrgan_x4', 'ESRGAN', 4],
  ['realesrgan-x2', 'realesrgan_x2', 'ESRGAN', 2],
  ['compact-x4', 'compact_x4', 'Compact', 4],
] as const) {
  test(`${name}: detected as ${arch} x${scale}, forward matches the reference (atol 1e-5, rtol 1e-4)`, async () => {
    const m = await upscaler(name);
    assert.equal(m.net.arch, arch);
    assert.equal(m.net.scale, scale);
    const r = ref(`upscalers/${refName}`);
    assertClose(await rawForward(name, r.float('input')), r.float('output'), 1e-5, 1e-4, name);
    // The runner is spandrel's descriptor call: the same, clamped to [0,1].
    const clamped = r.float('output');
    const expected = { shape: clamped.shape, data: clamped.data.map((v) => Math.min(1, Math.max(0, v))) };
    assertClose(await m.run(r.float('input')), expected, 1e-5, 1e-4, `${name} clamped`);
  });
}

test('realesrgan-x2 on an odd-sized input: reflect-padded to a multiple of 4, clamped and cropped as spandrel', async () => {
  const m = await upscaler('realesrgan-x2');
  const r = ref('upscalers/realesrgan_x2');
  assertClose(await m.run(r.float('odd_input')), r.float('odd_output_spandrel'), 1e-5, 1e-4, 'odd');
});

/** Exact on >= 99.5 % of values, never more than 1 off (the fixtures' tolerance for uint8 model outputs). */
function assertNearlyExact(actual: Uint8Array, expected: Uint8Array, what: string): void {
  assert.equal(actual.length, expected.length, `${what}: size`);
  let off = 0;
  for (let i = 0; i < expected.length; i++) {
    const d = Math.abs(actual[i]! - expected[i]!);
    assert.ok(d <= 1, `${what}: value ${i} is ${actual[i]}, expected ${expected[i]}`);
    if (d) off++;
  }
  assert.ok(off <= expected.length * 0.005, `${what}: ${off} of ${expected.length} values differ by 1`);
}

test("A1111's upscale_with_model (BGR, tile 32, overlap 8, and untiled) matches the reference pixels", async () => {
  const m = await upscaler('esrgan-x4-old');
  const file = SafetensorsFile.open(join(FIXTURES, 'refs', 'upscalers', 'a1111_tiled_esrgan_x4.safetensors'));
  const image = { data: file.readBytes('image'), width: 80, height: 64, channels: 3 as const };
  assert.deepEqual(gridOrigins(80, 32, 8), [0, 24, 48]);
  assert.deepEqual(gridOrigins(64, 32, 8), [0, 16, 32]);
  const untiled = await upscaleWithModel(m.run, image, 0, 8);
  assert.deepEqual([untiled.width, untiled.height], [320, 256]);
  assertNearlyExact(untiled.data, file.readBytes('untiled'), 'untiled');
  const progress: number[] = [];
  const tiled = await upscaleWithModel(m.run, image, 32, 8, (done, total) => progress.push(done / total));
  assert.deepEqual([tiled.width, tiled.height], [320, 256]);
  assert.deepEqual(progress.length, 9);
  assert.equal(progress.at(-1), 1);
  assertNearlyExact(tiled.data, file.readBytes('tiled'), 'tiled');
});

test('a file that is not an upscaler, or is missing, fails naming the file', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'kiln-bad-upscaler-'));
  try {
    await assert.rejects(
      openUpscaler(join(FIXTURES, 'tiny-sd1.safetensors'), { device: 'cpu', cacheDir: cache }),
      (e: unknown) => e instanceof ModelFileError && /tiny-sd1\.safetensors: not an ESRGAN/.test((e as Error).message),
    );
    const empty = join(dir, 'empty.safetensors');
    writeFileSync(empty, '');
    await assert.rejects(
      openUpscaler(empty, { device: 'cpu', cacheDir: cache }),
      (e: unknown) => e instanceof ModelFileError && (e as Error).message.includes('empty.safetensors'),
    );
    await assert.rejects(
      openUpscaler(join(dir, 'x.pth'), { device: 'cpu', cacheDir: cache }),
      (e: unknown) => e instanceof ModelFileError && /x\.pth: file not found/.test((e as Error).message),
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('.pth upscalers (read by the restricted unpickler) give the same output as their .safetensors twins', async () => {
  const r = ref('upscalers/compact_x4');
  for (const [pth, twin] of [
    ['compact-x4', 'compact-x4'],
    ['realesrgan-x2', 'realesrgan-x2'],
  ] as const) {
    const a = await openUpscaler(join(FIXTURES, 'tiny-upscalers', `${pth}.pth`), { device: 'cpu', cacheDir: cache, threads: 1 });
    const b = await upscaler(twin);
    const input = pth === 'compact-x4' ? r.float('input') : ref('upscalers/realesrgan_x2').float('input');
    assert.deepEqual(Array.from((await a.run(input)).data), Array.from((await b.run(input)).data), `${pth}.pth equals ${twin}.safetensors`);
  }
  // The legacy (pre-1.6) fp16 file holds the same weights rounded to fp16: close, not identical.
  const legacy = await openUpscaler(join(FIXTURES, 'tiny-upscalers', 'compact-x4-fp16-legacy.pth'), { device: 'cpu', cacheDir: cache, threads: 1 });
  assertClose(await legacy.run(r.float('input')), await (await upscaler('compact-x4')).run(r.float('input')), 1e-2, 1e-2, 'fp16 legacy .pth');
  await assert.rejects(
    openUpscaler(join(FIXTURES, 'tiny-upscalers', 'malicious-system.pth'), { device: 'cpu', cacheDir: cache }),
    (e: unknown) => e instanceof ModelFileError && /posix system/.test((e as Error).message),
  );
});
