// The `embed-image` and `interrogate` operations through the engine on the tiny fixtures: the documented shapes,
// the seed-003 flow's CLIP embedding, and the interrogator ranking first the phrase that an independent
// computation (transformers' reference image embedding, text embeddings at CLIP's full 77 tokens) says is closest.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createEngine, KilnInputError } from '../../src/engine/index.ts';
import { buildClipTextEncoder } from '../../src/engine/nets/clip-text.ts';
import { getOrBuildGraph } from '../../src/engine/onnx/cache.ts';
import { ClipTokenizer } from '../../src/engine/prompt/index.ts';
import { encodePromptIds } from '../../src/engine/prompt/tokenizer.ts';
import { createSession, runSession } from '../../src/engine/runtime.ts';
import { openClipModelWeights } from '../../src/engine/weights/clip-keys.ts';
import { SafetensorsFile, writeSafetensors } from '../../src/engine/weights/safetensors.ts';
import { assertClose, FIXTURES, ref } from './nets/fixture-io.ts';
import { writeTinyClipModel } from './tiny-clip-model.ts';

const tmp = mkdtempSync(join(tmpdir(), 'kiln-vision-ops-'));
const cacheDir = join(tmp, 'graphs');
const engine = createEngine({ cacheDir, threads: 1 });
after(async () => {
  await engine.close();
  rmSync(tmp, { recursive: true, force: true });
});

const r = ref('clip_vision/clip_vision');
const u8 = (name: string) => Uint8Array.from(r.float(name).data);
const image48x40 = { data: u8('image_48x40'), width: 48, height: 40, channels: 3 as const };
const image30x52 = { data: u8('image_30x52'), width: 30, height: 52, channels: 3 as const };
const visionOnly = { path: join(FIXTURES, 'tiny-clip-vision'), name: 'tiny-clip-vision' };
const sd1 = { path: join(FIXTURES, 'tiny-sd1') };
const fullClip = { path: writeTinyClipModel(join(tmp, 'tiny-clip')), name: 'tiny-clip' };

test('embed-image: CLIP image_embeds (projection width) and the VAE latent mean x 0.18215 at the native size [4, 32, 32]; deterministic', async () => {
  const a = await engine.run('embed-image', { image: image48x40, clip: visionOnly, model: sd1 });
  assert.equal(a.clip.length, 16);
  assertClose({ shape: [1, 16], data: a.clip }, { shape: [1, 16], data: r.float('image_embeds').data.subarray(0, 16) }, 1e-4, 1e-4, 'image_embeds');
  assert.deepEqual(a.vaeShape, [4, 32, 32]);
  assert.equal(a.vae!.length, 4 * 32 * 32);
  assert.ok(a.vae!.every(Number.isFinite));
  const again = await engine.run('embed-image', { image: image48x40, clip: visionOnly, model: sd1 });
  assert.deepEqual(again.vae, a.vae, 'the mean, not a sample: the same image gives the same latent');
  const other = await engine.run('embed-image', { image: image30x52, clip: visionOnly, model: sd1, vaeSize: 16 });
  assert.deepEqual(other.vaeShape, [4, 8, 8]);
  const clipOnly = await engine.run('embed-image', { image: image48x40, clip: visionOnly });
  assert.equal(clipOnly.vae, undefined);
});

test("embed-image with the seed's square resize (64 here, 512 in the seed) gives UniDiffuser's CLIP embedding", async () => {
  const e = await engine.run('embed-image', { image: image48x40, clip: visionOnly, squareResize: 64 });
  assertClose({ shape: [1, 16], data: e.clip }, r.float('seedflow_image_embeds'), 1e-4, 1e-4, 'seedflow_image_embeds');
});

test('embed-image refuses a VAE size that is not a multiple of the latent factor, naming vae_size', async () => {
  await assert.rejects(
    engine.run('embed-image', { image: image48x40, clip: visionOnly, model: sd1, vaeSize: 15 }),
    (e: unknown) => e instanceof KilnInputError && e.field === 'vae_size',
  );
});

/** A test-only phrase list: made-up two-word phrases (the tiny tokenizer splits any text). */
const PHRASES = ['red', 'green', 'blue', 'small', 'large', 'quiet', 'bright'].flatMap((a) =>
  ['cat', 'house', 'river', 'cloud', 'stone', 'violin'].map((n) => `${a} ${n}`),
);

/** Cosine similarities computed without the engine's interrogator: text at 77 tokens, transformers' image embedding. */
async function independentSimilarities(): Promise<number[]> {
  const m = openClipModelWeights(fullClip.path);
  const opts = { hidden: false, textEmbeds: true, sequenceLength: 77 };
  const key = { network: 'test-clip-text-77', weightsIdentity: 'tiny-clip', precision: 'fp32' as const, options: opts };
  const { modelPath } = getOrBuildGraph(join(tmp, 'independent'), key, (b) => buildClipTextEncoder(b, m.weights.text!, m.config.text!, opts));
  const session = await createSession(modelPath, { device: 'cpu' });
  const tokenizer = await ClipTokenizer.fromDir(fullClip.path);
  const ids = PHRASES.flatMap((p) => encodePromptIds(tokenizer, p));
  const out = await runSession(session, { input_ids: { int64: BigInt64Array.from(ids.map(BigInt)), shape: [PHRASES.length, 77] } });
  const img = r.float('image_embeds').data.subarray(0, 16);
  const norm = (v: Float32Array) => Math.sqrt(v.reduce((s, x) => s + x * x, 0));
  return PHRASES.map((_, i) => {
    const t = out.text_embeds!.data.subarray(i * 16, (i + 1) * 16);
    return t.reduce((s, x, k) => s + x * img[k]!, 0) / (norm(t) * norm(img));
  });
}

function shuffled<T>(items: T[], seed: number): T[] {
  const out = [...items];
  let s = seed;
  for (let i = out.length - 1; i > 0; i--) {
    s = (s * 1103515245 + 12345) % 2147483648;
    const j = s % (i + 1);
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}

test('interrogate ranks first the phrase an independent computation finds closest to the image, in any list order', async () => {
  const sims = await independentSimilarities();
  const order = sims.map((_, i) => i).sort((a, b) => sims[b]! - sims[a]!);
  const target = PHRASES[order[0]!]!;
  assert.ok(sims[order[0]!]! - sims[order[1]!]! > 1e-3, 'the closest phrase is clearly closest (no near tie)');
  for (const items of [PHRASES, shuffled(PHRASES, 7), [...PHRASES.filter((p) => p !== target), target]]) {
    const res = await engine.run('interrogate', { image: image48x40, clip: fullClip, categories: [{ name: 'test', topn: 3, items }] });
    const matches = res.categories[0]!.matches;
    assert.equal(matches[0]!.phrase, target);
    assert.deepEqual(
      matches.map((m) => m.phrase),
      order.slice(0, 3).map((i) => PHRASES[i]),
    );
    for (const m of matches)
      assert.ok(Math.abs(m.similarity - sims[PHRASES.indexOf(m.phrase)]!) < 1e-4, `${m.phrase}: ${m.similarity} vs ${sims[PHRASES.indexOf(m.phrase)]}`);
    assert.equal(res.prompt, matches.map((m) => m.phrase).join(', '));
    assert.equal(res.textTower, 'clip-model');
  }
  // Without the target the runner-up leads.
  const without = await engine.run('interrogate', {
    image: image48x40,
    clip: fullClip,
    categories: [{ name: 'test', topn: 1, items: PHRASES.filter((p) => p !== target) }],
  });
  assert.equal(without.prompt, PHRASES[order[1]!]);
});

test("interrogate composes A1111's prompt: each category's top phrases in order, optionally with their probabilities", async () => {
  const cats = [
    { name: 'colours', topn: 1, items: PHRASES.slice(0, 12) },
    { name: 'things', topn: 2, items: PHRASES.slice(12) },
  ];
  const plain = await engine.run('interrogate', { image: image30x52, clip: fullClip, categories: cats });
  const parts = plain.categories.flatMap((c) => c.matches.map((m) => m.phrase));
  assert.equal(parts.length, 3);
  assert.equal(plain.prompt, parts.join(', '));
  const ranked = await engine.run('interrogate', { image: image30x52, clip: fullClip, categories: cats, returnRanks: true });
  const probs = ranked.categories.flatMap((c) => c.matches.map((m) => m.probability));
  assert.equal(ranked.prompt, parts.map((p, i) => `(${p}:${probs[i]!.toFixed(3)})`).join(', '));
  const cat = ranked.categories[1]!.matches;
  assert.ok(cat[0]!.probability >= cat[1]!.probability && cat[0]!.probability <= 1);
});

test('interrogate with the built-in lists (flavors, mediums, movements) gives one phrase of each and caches their embeddings on disk', async () => {
  const res = await engine.run('interrogate', { image: image48x40, clip: fullClip });
  assert.deepEqual(
    res.categories.map((c) => c.name),
    ['flavors', 'mediums', 'movements'],
  );
  assert.equal(res.prompt.split(', ').length, 3);
  const files = readdirSync(join(tmp, 'clip-phrases')).filter((f) => f.endsWith('.f32'));
  assert.ok(files.length >= 3);
  // A fresh engine reads the cached embeddings; a damaged cache file is recomputed, not trusted.
  for (const damage of [false, true]) {
    if (damage) for (const f of files) writeFileSync(join(tmp, 'clip-phrases', f), new Uint8Array(8));
    const fresh = createEngine({ cacheDir, threads: 1 });
    try {
      const again = await fresh.run('interrogate', { image: image48x40, clip: fullClip });
      assert.deepEqual(again.categories, res.categories);
    } finally {
      await fresh.close();
    }
  }
});

test("without a text tower in the CLIP file, a checkpoint text encoder of the same projection width ranks (SDXL's second); else a 4xx naming clip_model", async () => {
  await assert.rejects(
    engine.run('interrogate', { image: image48x40, clip: visionOnly, model: sd1, categories: [{ name: 't', topn: 1, items: PHRASES }] }),
    (e: unknown) => e instanceof KilnInputError && e.field === 'clip_model' && /no text tower/.test(e.message) && /models\/clip_vision/.test(e.message),
  );
  // A vision-only file projecting to 32, the width of tiny-sdxl's text_encoder_2 projection.
  const src = SafetensorsFile.open(join(FIXTURES, 'tiny-clip-vision', 'model.safetensors'));
  const tensors = Object.fromEntries(src.names().map((n) => [n, { dtype: src.entry(n).dtype, shape: [...src.entry(n).shape], bytes: src.readBytes(n) }]));
  const proj = Float32Array.from({ length: 32 * 32 }, (_, i) => Math.sin(i * 12.9898) * 0.3);
  tensors['visual_projection.weight'] = { dtype: 'F32', shape: [32, 32], bytes: new Uint8Array(proj.buffer) };
  // A single file this small cannot say its head count: a folder with the config does.
  const file = join(tmp, 'vision-32');
  mkdirSync(file);
  writeSafetensors(join(file, 'model.safetensors'), tensors);
  copyFileSync(join(FIXTURES, 'tiny-clip-vision', 'config.json'), join(file, 'config.json'));
  const res = await engine.run('interrogate', {
    image: image48x40,
    clip: { path: file },
    model: { path: join(FIXTURES, 'tiny-sdxl') },
    categories: [{ name: 't', topn: 2, items: PHRASES }],
  });
  assert.equal(res.textTower, 'checkpoint');
  assert.equal(res.categories[0]!.matches.length, 2);
  assert.ok(res.categories[0]!.matches[0]!.similarity >= res.categories[0]!.matches[1]!.similarity);
});

test('interrogate refuses empty or oversized phrase lists, naming categories', async () => {
  for (const categories of [
    [],
    [{ name: 'e', topn: 1, items: [] }],
    [{ name: 'l', topn: 1, items: ['x'.repeat(301)] }],
    [{ name: 't', topn: 0, items: ['a'] }],
  ]) {
    await assert.rejects(
      engine.run('interrogate', { image: image48x40, clip: fullClip, categories }),
      (e: unknown) => e instanceof KilnInputError && e.field === 'categories',
    );
  }
});
