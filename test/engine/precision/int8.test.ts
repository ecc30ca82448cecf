// int8 UNets and VAE decoders on the tiny fixtures: the int8 graphs (calibrated from the engine's first generation)
// stay within the bound documented in docs/int8.md of their fp32 twins — final image PSNR, largest pixel difference, latent cosine per
// step — for a fixed seed and prompt set; a model whose calibration error exceeds the bound stays fp32 (same pixels
// as fp32) with a log line; the verdict survives a restart; the graph cache keys int8 graphs apart.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createEngine, type EngineOptions } from '../../../src/engine/engine.ts';
import type { GenerateRequest } from '../../../src/engine/api.ts';
import { precisionApplies } from '../../../src/engine/model-pool.ts';
import { cosineSimilarity, imageDifference, relativeError } from '../../../src/engine/precision/quality.ts';
import { quantizeRowsInt8, uint8Range } from '../../../src/engine/precision/quantize-int8.ts';
import { DEFAULT_INT8_BOUND } from '../../../src/engine/precision/int8-network.ts';

/** The tiny-fixture bound of docs/int8.md (measured: PSNR 45-49 dB, max diff 4-11, latent cosine >= 0.9995). */
const TINY_BOUND = { minPsnr: 38, maxPixelDiff: 24, minStepCosine: 0.998 };
const STEPS = 8;

const root = mkdtempSync(join(tmpdir(), 'kiln-int8-'));
const engines: { close(): Promise<void> }[] = [];
after(async () => {
  for (const e of engines) await e.close();
  rmSync(root, { recursive: true, force: true });
});

function engine(name: string, opts: EngineOptions = {}) {
  const e = createEngine({ cacheDir: join(root, name), threads: 1, ...opts });
  engines.push(e);
  return e;
}

const request = (model: string, prompt: string, seed: number): GenerateRequest => ({
  model: { path: `test/fixtures/${model}` },
  prompts: [prompt],
  negativePrompt: 'blurry',
  width: 64,
  height: 64,
  steps: STEPS,
  cfgScale: 7,
  sampler: 'Euler',
  seed,
});

async function generate(e: ReturnType<typeof engine>, req: GenerateRequest) {
  const steps: Float32Array[] = [];
  let final = new Float32Array();
  const res = await e.generate(req, {}, { onModelInput: (x) => steps.push(x.slice()), onFinalLatents: (t) => (final = t.data.slice()) });
  return { image: res.images[0]!.image.data, steps, final };
}

function warnings(): { lines: string[]; stop(): void } {
  const lines: string[] = [];
  const on = (w: Error) => {
    if (w.name === 'KilnPrecision') lines.push(w.message);
  };
  process.on('warning', on);
  return { lines, stop: () => process.off('warning', on) };
}

test('per-channel int8: every weight within half a step of its row scale; uint8 ranges include zero', () => {
  const w = Float32Array.from([0.5, -1, 0.25, 0, 0, 0, 3, 2.9, -0.001]);
  const { q, scales } = quantizeRowsInt8(w, 3, 3);
  assert.deepEqual(
    [...scales].map((s) => Number(s.toFixed(6))),
    [Number((1 / 127).toFixed(6)), 1, Number((3 / 127).toFixed(6))],
  );
  for (let i = 0; i < w.length; i++) assert.ok(Math.abs(q[i]! * scales[Math.floor(i / 3)]! - w[i]!) <= scales[Math.floor(i / 3)]! / 2 + 1e-7);
  assert.deepEqual([q[1], q[6]], [-127, 127]);
  assert.deepEqual(uint8Range(-1, 3), { scale: 4 / 255, zeroPoint: 64 });
  assert.deepEqual(uint8Range(2, 5), { scale: 5 / 255, zeroPoint: 0 }, 'a positive-only range still represents 0');
  assert.throws(() => quantizeRowsInt8(w, 2, 3), /9 values are not 2 x 3/);
});

test('quality measures: cosine, relative error, PSNR and max pixel difference', () => {
  assert.equal(cosineSimilarity([1, 0], [2, 0]), 1);
  assert.ok(Math.abs(cosineSimilarity([1, 0], [0, 1])) < 1e-12);
  assert.ok(Math.abs(relativeError([1.1, 0], [1, 0]) - 0.1) < 1e-12);
  assert.deepEqual(imageDifference(Uint8Array.of(10, 20), Uint8Array.of(10, 20)), { psnr: Number.POSITIVE_INFINITY, maxDiff: 0 });
  const d = imageDifference(Uint8Array.of(0, 0), Uint8Array.of(255, 0));
  assert.equal(d.maxDiff, 255);
  assert.ok(Math.abs(d.psnr - 10 * Math.log10(2)) < 1e-9);
});

test('--precision-models: names with or without extension, or paths; none means every model', () => {
  assert.equal(precisionApplies('/m/a.safetensors', undefined), true);
  assert.equal(precisionApplies('/m/a.safetensors', []), true);
  assert.equal(precisionApplies('/m/a.safetensors', ['a']), true);
  assert.equal(precisionApplies('/m/a.safetensors', ['a.safetensors']), true);
  assert.equal(precisionApplies('/m/a.safetensors', ['/m/a.safetensors']), true);
  assert.equal(precisionApplies('/m/a.safetensors', ['b', 'tiny-sd1']), false);
  assert.equal(precisionApplies('test/fixtures/tiny-sd1', ['tiny-sd1']), true);
});

for (const model of ['tiny-sd1', 'tiny-sdxl']) {
  test(`${model}: int8 stays within the documented bound of fp32 (fixed seeds and prompts), and restarts without recalibrating`, async () => {
    const log = warnings();
    const fp32 = engine(`${model}-fp32`);
    const int8 = engine(`${model}-int8`, { precision: 'int8', int8: { calibrationEvaluations: STEPS } });
    // The first generation runs fp32 and calibrates: its pixels are fp32's.
    const calib = await generate(int8, request(model, 'a photograph of a cat', 100));
    const calibRef = await generate(fp32, request(model, 'a photograph of a cat', 100));
    assert.deepEqual(Buffer.from(calib.image), Buffer.from(calibRef.image), 'calibration generation = fp32');
    const cases = [
      ['a red apple on a wooden table', 1],
      ['a lighthouse at dusk, oil painting', 2],
    ] as const;
    const int8Images: Uint8Array[] = [];
    for (const [prompt, seed] of cases) {
      const a = await generate(fp32, request(model, prompt, seed));
      const b = await generate(int8, request(model, prompt, seed));
      int8Images.push(b.image);
      const { psnr, maxDiff } = imageDifference(a.image, b.image);
      assert.ok(maxDiff > 0, 'the int8 graph is in use (not fp32 pixels)');
      assert.ok(psnr >= TINY_BOUND.minPsnr, `PSNR ${psnr.toFixed(2)} dB >= ${TINY_BOUND.minPsnr}`);
      assert.ok(maxDiff <= TINY_BOUND.maxPixelDiff, `max pixel diff ${maxDiff} <= ${TINY_BOUND.maxPixelDiff}`);
      assert.equal(b.steps.length, STEPS);
      for (const [i, s] of a.steps.entries()) {
        const c = cosineSimilarity(s, b.steps[i]!);
        assert.ok(c >= TINY_BOUND.minStepCosine, `step ${i} latent cosine ${c.toFixed(5)} >= ${TINY_BOUND.minStepCosine}`);
      }
      assert.ok(cosineSimilarity(a.final, b.final) >= TINY_BOUND.minStepCosine);
    }
    log.stop();
    assert.ok(
      log.lines.some((l) => l.includes(`${model}: UNet int8 ready`)) && log.lines.some((l) => l.includes(`${model}: VAE decoder int8 ready`)),
      log.lines.join('\n'),
    );
    // The verdict and ranges are stored beside the graph cache; the int8 graph has a cache entry of its own.
    const dir = join(root, `${model}-int8`);
    const state = readdirSync(dir).find((f) => f.startsWith('unet-int8-'));
    assert.ok(state);
    const verdict = JSON.parse(readFileSync(join(dir, state), 'utf8'));
    assert.equal(verdict.status, 'ready');
    assert.ok(verdict.minCosine >= DEFAULT_INT8_BOUND.minCosine && verdict.maxRelativeError <= DEFAULT_INT8_BOUND.maxRelativeError);
    const unetGraphs = readdirSync(dir).filter((f) => f.startsWith('unet-') && !f.endsWith('.json'));
    const keys = unetGraphs.map((g) => JSON.parse(readFileSync(join(dir, g, 'key.json'), 'utf8')).options);
    assert.ok(keys.some((o) => o.quantized === 'int8' && typeof o.ranges === 'string'));
    assert.ok(keys.some((o) => o.calibration === 'int8-ranges'));
    const int8Graph = unetGraphs[keys.findIndex((o) => o.quantized === 'int8')]!;
    const onnx = readFileSync(join(dir, int8Graph, 'model.onnx')).toString('latin1');
    assert.ok(onnx.includes('QLinearConv') && onnx.includes('DynamicQuantizeMatMul'), 'integer kernels in the graph');

    // A restart on the same cache uses int8 from its first generation, with the same pixels.
    const again = engine(`${model}-int8`, { precision: 'int8', int8: { calibrationEvaluations: STEPS } });
    const c = await generate(again, request(model, cases[0][0], cases[0][1]));
    assert.deepEqual(Buffer.from(c.image), Buffer.from(int8Images[0]!));
  });
}

test('fail closed: beyond the bound the model stays fp32 (fp32 pixels) with a log line saying why', async () => {
  const log = warnings();
  const fp32 = engine('closed-fp32');
  const strict = engine('closed-int8', {
    precision: 'int8',
    int8: { calibrationEvaluations: 2, bound: { minCosine: 1.1, maxRelativeError: 0 }, vaeBound: { minCosine: 1.1, maxRelativeError: 0 } },
  });
  await strict.generate(request('tiny-sd1', 'a photograph of a cat', 100));
  const a = await generate(fp32, request('tiny-sd1', 'a red apple', 5));
  const b = await generate(strict, request('tiny-sd1', 'a red apple', 5));
  log.stop();
  assert.deepEqual(Buffer.from(b.image), Buffer.from(a.image));
  const line = log.lines.find((l) => l.includes('UNet int8 refused, running fp32'));
  assert.ok(line, log.lines.join('\n'));
  assert.match(line, /calibration error beyond the bound: cosine 0\.9\d+ \(needs >= 1\.1\)/);
  assert.ok(
    log.lines.some((l) => l.includes('VAE decoder int8 refused, running fp32')),
    log.lines.join('\n'),
  );
});
