// Step reuse (DeepCache) on the tiny models. The cut is exact: the whole graph with the deep-feature output
// predicts exactly what the plain UNet does, and the shallow graph fed that feature predicts exactly what the
// whole graph does, so every difference a generation shows comes from reusing an older feature, never from
// wiring. Through the engine, reuse changes the image (the shallow graph really runs) within the bound documented
// in docs/step-reuse.md, also on top of the int8 UNet; bad settings are refused naming the field.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createEngine } from '../../../src/engine/engine.ts';
import { KilnInputError, type GenerateRequest } from '../../../src/engine/api.ts';
import { ModelSessions } from '../../../src/engine/pipelines/model-sessions.ts';
import { runPipeline } from '../../../src/engine/pipelines/generate.ts';
import { runSession, type Feed } from '../../../src/engine/runtime.ts';
import { maxStepReuseBranch, UNET_IO } from '../../../src/engine/nets/unet.ts';
import { requireUnetConfig } from '../../../src/engine/weights/model.ts';
import { cosineSimilarity, imageDifference } from '../../../src/engine/precision/quality.ts';

/** docs/step-reuse.md: tiny fixtures, 20 Euler steps, interval <= 3 (measured 47-54 dB, latent cosine >= 0.9997). */
const TINY_BOUND = { minPsnr: 40, minLatentCosine: 0.999 };

const root = mkdtempSync(join(tmpdir(), 'kiln-step-reuse-'));
const engines: { close(): Promise<void> }[] = [];
const sessions: ModelSessions[] = [];
after(async () => {
  for (const e of engines) await e.close();
  for (const s of sessions) await s.release();
  rmSync(root, { recursive: true, force: true });
});

function engine(name: string, opts: Parameters<typeof createEngine>[0] = {}) {
  const e = createEngine({ cacheDir: join(root, name), threads: 1, ...opts });
  engines.push(e);
  return e;
}

const request = (model: string, extra: Partial<GenerateRequest> = {}): GenerateRequest => ({
  model: { path: `test/fixtures/${model}` },
  prompts: ['a red apple on a wooden table'],
  negativePrompt: 'blurry',
  width: 64,
  height: 64,
  steps: 20,
  cfgScale: 7,
  sampler: 'Euler',
  seed: 3,
  ...extra,
});

async function generate(e: ReturnType<typeof engine>, req: GenerateRequest) {
  let final = new Float32Array();
  const res = await e.generate(req, {}, { onFinalLatents: (t) => (final = t.data.slice()) });
  return { image: res.images[0]!.image.data, final, infotext: res.images[0]!.infotext ?? '' };
}

/** Deterministic pseudo-random values in [-1, 1). */
function values(n: number, seed: number): Float32Array {
  let s = seed >>> 0;
  return Float32Array.from({ length: n }, () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 31 - 1;
  });
}

for (const model of ['tiny-sd1', 'tiny-sdxl']) {
  test(`${model}: the step-reuse cut is exact (whole graph = plain UNet, shallow graph on the fresh feature = whole graph)`, async () => {
    const ms = await ModelSessions.load({ path: `test/fixtures/${model}` }, { device: 'cpu', cacheDir: join(root, `graphs-${model}`), threads: 1 });
    sessions.push(ms);
    const config = requireUnetConfig(ms.model) as unknown as Record<string, number>;
    const [c, h, w] = [config.in_channels!, 16, 16];
    const context = config.cross_attention_dim!;
    const feeds: Record<string, Feed> = {
      [UNET_IO.sample]: { shape: [2, c, h, w], data: values(2 * c * h * w, 1) },
      [UNET_IO.timestep]: { shape: [2], data: Float32Array.of(700, 700) },
      [UNET_IO.context]: { shape: [2, 77, context], data: values(2 * 77 * context, 2) },
    };
    const plain = await ms.unet();
    for (const name of plain.inputNames) {
      if (feeds[name]) continue;
      // SDXL's pooled text embeddings and size conditioning.
      const dim = name === UNET_IO.timeIds ? 6 : config.projection_class_embeddings_input_dim! - 6 * config.addition_time_embed_dim!;
      feeds[name] = { shape: [2, dim], data: name === UNET_IO.timeIds ? Float32Array.of(64, 64, 0, 0, 64, 64, 64, 64, 0, 0, 64, 64) : values(2 * dim, 3) };
    }
    const expected = (await runSession(plain, feeds))[UNET_IO.out]!.data;
    for (const branch of [0, 1, maxStepReuseBranch(config)]) {
      const reuse = await ms.unetReuse(branch);
      assert.ok(reuse, 'fp32 step reuse is always available');
      const whole = await runSession(reuse.full, feeds);
      assert.deepEqual(whole[UNET_IO.out]!.data, expected, `branch ${branch}: the whole graph's prediction is the plain UNet's, bit for bit`);
      const feature = whole[UNET_IO.deepFeature]!;
      assert.equal(feature.shape[0], 2);
      const shallow = await runSession(reuse.shallow, { ...feeds, [UNET_IO.deepFeature]: feature });
      const got = shallow[UNET_IO.out]!.data;
      let worst = 0;
      for (let i = 0; i < got.length; i++) worst = Math.max(worst, Math.abs(got[i]! - expected[i]!));
      assert.ok(worst <= 1e-5, `branch ${branch}: shallow graph on the fresh feature differs by ${worst}`);
      // The shallow graph must depend on the feature (it is not a second whole UNet).
      const zero = await runSession(reuse.shallow, { ...feeds, [UNET_IO.deepFeature]: { shape: feature.shape, data: new Float32Array(feature.data.length) } });
      assert.ok(cosineSimilarity(zero[UNET_IO.out]!.data, expected) < 0.999, `branch ${branch}: the shallow graph ignores the deep feature`);
    }
    await assert.rejects(ms.unetReuse(99), (e: unknown) => e instanceof KilnInputError && e.field === 'deep_cache.branch' && /from 0 to \d+/.test(e.message));
  });
}

for (const model of ['tiny-sd1', 'tiny-sdxl', 'tiny-sd2']) {
  test(`${model}: reuse every 2nd and 3rd step changes the image within the documented bound and says so in the infotext`, async () => {
    const e = engine(`gen-${model}`);
    const base = await generate(e, request(model));
    const off = await generate(e, request(model, { deepCache: { interval: 1 } }));
    assert.deepEqual(off.image, base.image, 'interval 1 is off');
    assert.doesNotMatch(off.infotext, /DeepCache/);
    for (const interval of [2, 3]) {
      const r = await generate(e, request(model, { deepCache: { interval } }));
      const { psnr } = imageDifference(r.image, base.image);
      const cos = cosineSimilarity(r.final, base.final);
      assert.ok(Number.isFinite(psnr), `interval ${interval}: the image did not change, so no evaluation reused a feature`);
      assert.ok(psnr >= TINY_BOUND.minPsnr, `interval ${interval}: PSNR ${psnr.toFixed(2)} dB`);
      assert.ok(cos >= TINY_BOUND.minLatentCosine, `interval ${interval}: final latent cosine ${cos}`);
      assert.match(r.infotext, new RegExp(`DeepCache interval: ${interval}, DeepCache branch: 0`));
    }
  });
}

test('tiny-sd1 int8: step reuse runs on the int8 graphs once calibrated, close to int8 without reuse', async () => {
  const e = engine('int8', { precision: 'int8', int8: { calibrationEvaluations: 4 } });
  // While calibrating, reuse is skipped (the ranges need whole evaluations): the image is the fp32 one.
  const fp32 = await generate(engine('int8-fp32'), request('tiny-sd1', { steps: 4 }));
  const calibrating = await generate(e, request('tiny-sd1', { steps: 4, deepCache: { interval: 2 } }));
  assert.deepEqual(calibrating.image, fp32.image);
  const int8 = await generate(e, request('tiny-sd1'));
  const reused = await generate(e, request('tiny-sd1', { deepCache: { interval: 2 } }));
  // The reuse pair was built as int8 graphs (the same ranges), not taken from fp32.
  const keys = readdirSync(join(root, 'int8'))
    .filter((d) => d.startsWith('unet-') && existsSync(join(root, 'int8', d, 'key.json')))
    .map((d) => JSON.parse(readFileSync(join(root, 'int8', d, 'key.json'), 'utf8')).options as Record<string, unknown>);
  const int8Parts = keys.filter((o) => o.quantized === 'int8' && o.stepReuse).map((o) => (o.stepReuse as { part: string }).part);
  assert.deepEqual(int8Parts.sort(), ['full', 'shallow']);
  assert.ok(!keys.some((o) => o.stepReuse && o.quantized === undefined), 'no fp32 step-reuse graph was built for the int8 model');
  const { psnr } = imageDifference(reused.image, int8.image);
  assert.ok(Number.isFinite(psnr) && psnr >= TINY_BOUND.minPsnr, `int8 with reuse vs int8: PSNR ${psnr.toFixed(2)} dB`);
  assert.ok(cosineSimilarity(reused.final, int8.final) >= TINY_BOUND.minLatentCosine);
});

test('bad step-reuse settings are refused naming the field', async () => {
  const e = engine('bad');
  for (const [deepCache, field] of [
    [{ interval: 0 }, 'deep_cache.interval'],
    [{ interval: 11 }, 'deep_cache.interval'],
    [{ interval: 2.5 }, 'deep_cache.interval'],
    [{ interval: 2, branch: -1 }, 'deep_cache.branch'],
    [{ interval: 2, branch: 40 }, 'deep_cache.branch'],
  ] as const) {
    await assert.rejects(
      e.generate(request('tiny-sd1', { steps: 2, deepCache }), {}),
      (err: unknown) => err instanceof KilnInputError && err.field === field,
      JSON.stringify(deepCache),
    );
  }
});

test('one whole fp32 UNet in memory: the step-reuse pair and the plain UNet take turns, also when int8 was refused', async () => {
  // An impossible bound: the int8 check refuses, and the model runs the plain fp32 graph (int8's fallback).
  const ms = await ModelSessions.load(
    { path: 'test/fixtures/tiny-sd1' },
    {
      device: 'cpu',
      cacheDir: join(root, 'turns'),
      threads: 1,
      precision: 'int8',
      int8: { calibrationEvaluations: 2, bound: { minCosine: 2, maxRelativeError: 0 } },
    },
  );
  sessions.push(ms);
  const small = request('tiny-sd1', { steps: 2 });
  const run = (req: GenerateRequest) => runPipeline({ base: ms }, req);
  await run(small); // calibrates
  await run(small); // verdict: refused, plain fp32
  assert.equal(ms.int8Unet().state, 'fp32');
  const open = () =>
    [...(ms as unknown as { shared: { sessions: Map<string, unknown> } }).shared.sessions.keys()].filter((k) => k.includes('"network":"unet"'));
  const plain = open().filter((k) => !k.includes('stepReuse'));
  assert.equal(plain.length, 1, 'the refused model runs the plain fp32 UNet');
  await run({ ...small, deepCache: { interval: 2 } });
  assert.deepEqual(
    open().filter((k) => !k.includes('stepReuse')),
    [],
    'the plain whole UNet was freed for the reuse pair',
  );
  assert.equal(open().filter((k) => k.includes('stepReuse')).length, 2);
  await run(small);
  assert.deepEqual(open(), plain, 'and the pair was freed for the plain UNet');
});
