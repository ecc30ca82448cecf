// Flux and SD3 end to end through the engine on the tiny models (test/engine/tiny-flow-models.ts): the pipeline's
// final latents equal a run chained here from the verified pieces (T5 and the transformer, checked against the
// references in nets/flux.test.ts and nets/t5.test.ts; flow Euler over the FluxPipeline schedule, checked in
// samplers/flow.test.ts), the run is deterministic, and every layout loads to the same model.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, cpSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createEngine } from '../../../src/engine/engine.ts';
import { KilnInputError, type GenerateRequest } from '../../../src/engine/api.ts';
import { fluxVelocity } from '../../../src/engine/families/flux-latents.ts';
import { buildClipTextEncoder, CLIP_TEXT_IO } from '../../../src/engine/nets/clip-text.ts';
import { buildFluxTransformer, fluxConfigFromWeights } from '../../../src/engine/nets/flux.ts';
import { buildT5Encoder, T5_IO, type T5EncoderConfig } from '../../../src/engine/nets/t5.ts';
import { getOrBuildGraph } from '../../../src/engine/onnx/cache.ts';
import { ClipTokenizer, encodePromptIds } from '../../../src/engine/prompt/index.ts';
import { T5Tokenizer } from '../../../src/engine/prompt/t5-tokenizer.ts';
import { createRng } from '../../../src/engine/rng.ts';
import { createSession, runSession, type Feed } from '../../../src/engine/runtime.ts';
import { FLUX_DEV_SCHEDULE, FLUX_SCHNELL_SCHEDULE, flowSchedule, flowTableSigmas, SD3_SCHEDULE, sampleFlowEuler } from '../../../src/engine/samplers/flow.ts';
import { betaPpf } from '../../../src/engine/samplers/schedules.ts';
import { type TensorToWrite, writeSafetensors } from '../../../src/engine/weights/safetensors.ts';
import type { Tensor } from '../../../src/engine/tensor.ts';
import { inspectModel } from '../../../src/engine/inspect.ts';
import { storedWeights } from '../../../src/engine/weights/sources.ts';
import { openTensorFile } from '../../../src/engine/weights/tensor-file.ts';
import type { ClipTextConfig } from '../../../src/engine/weights/types.ts';
import { readFileSync } from 'node:fs';
import { FIXTURES } from '../nets/fixture-io.ts';
import { writeGguf } from '../weights/gguf-writer.ts';
import { writeFluxCompanion, writeTinyFluxFolder, writeTinySd3Folder, writeTinySd3SingleFile } from '../tiny-flow-models.ts';

const work = mkdtempSync(join(tmpdir(), 'kiln-flow-pipe-'));
const cacheDir = join(work, 'cache');
const engine = createEngine({ cacheDir });
after(async () => {
  await engine.close();
  rmSync(work, { recursive: true, force: true });
});
const fluxDir = writeTinyFluxFolder(join(work, 'tiny-flux'));
const sd3Dir = writeTinySd3Folder(join(work, 'tiny-sd3'));

const PROMPT = 'a photo of a red fox';
const base = (model: GenerateRequest['model'], over: Partial<GenerateRequest> = {}): GenerateRequest => ({
  model,
  prompts: [PROMPT],
  width: 64,
  height: 64,
  steps: 3,
  cfgScale: 7,
  sampler: 'Euler',
  seed: 42,
  ...over,
});

async function latentsOf(req: GenerateRequest) {
  let latents: Tensor | undefined;
  const result = await engine.generate(req, {}, { onFinalLatents: (l) => (latents = l) });
  return { latents: latents!, result };
}

async function session(name: string, build: Parameters<typeof getOrBuildGraph>[2]) {
  const { modelPath } = getOrBuildGraph(join(work, 'chain'), { network: name, weightsIdentity: 'chain', precision: 'fp32' }, build);
  const s = await createSession(modelPath, { device: 'cpu' });
  return (feeds: Record<string, Feed>) => runSession(s, feeds);
}

const ids = (list: number[]): Feed => ({ int64: BigInt64Array.from(list.map((i) => BigInt(i))), shape: [1, list.length] });

/**
 * A Flux txt2img run chained by hand from the pieces: T5 over `t5Tokens` (FluxPipeline's max_sequence_length: 512 dev,
 * 256 schnell), CLIP-L pooled (the folder's tiny one), the transformer of `transformerFile`, flow Euler over `sigmas`
 * from seed 42's noise.
 */
async function chainedFlux(transformerFile: string, t5Tokens: number, sigmas: number[], guidance?: number): Promise<Float32Array> {
  const t5Dir = join(FIXTURES, 'tiny-flux', 'text_encoder_2');
  const t5Config = JSON.parse(readFileSync(join(t5Dir, 'config.json'), 'utf8')) as T5EncoderConfig;
  const t5 = await session(`t5-${t5Tokens}`, (b) =>
    buildT5Encoder(b, storedWeights('t5', [openTensorFile(join(t5Dir, 'model.safetensors'))]), t5Config, { sequenceLength: t5Tokens }),
  );
  const t5Ids = T5Tokenizer.fromTokenizerJson(join(fluxDir, 'tokenizer_2', 'tokenizer.json')).encode(PROMPT, t5Tokens).ids;
  const txt = (await t5({ [T5_IO.inputIds]: ids(t5Ids) }))[T5_IO.hidden]!;
  const clipConfig = JSON.parse(readFileSync(join(fluxDir, 'text_encoder', 'config.json'), 'utf8')) as ClipTextConfig;
  const tok = await ClipTokenizer.fromDir(join(fluxDir, 'tokenizer'));
  const clipOpts = { hidden: false, pooled: true, eosTokenId: tok.eos };
  const clip = await session('clip', (b) =>
    buildClipTextEncoder(b, storedWeights('clip', [openTensorFile(join(fluxDir, 'text_encoder', 'model.safetensors'))]), clipConfig, clipOpts),
  );
  const y = (await clip({ [CLIP_TEXT_IO.inputIds]: ids(encodePromptIds(tok, PROMPT)) }))[CLIP_TEXT_IO.pooled]!;
  const w = storedWeights('flux', [openTensorFile(transformerFile)]);
  const transformer = await session(`flux-${t5Tokens}-${guidance}`, (b) =>
    buildFluxTransformer(b, w, fluxConfigFromWeights(w, [4, 6, 6]), { textTokens: t5Tokens }),
  );
  const velocity = fluxVelocity(transformer, { txt, y, guidance, height: 8, width: 8 });
  return sampleFlowEuler(velocity, createRng('cpu', 42).randn(16 * 8 * 8), sigmas);
}

function maxDiff(a: Float32Array, b: Float32Array): number {
  assert.equal(a.length, b.length);
  let worst = 0;
  a.forEach((v, i) => (worst = Math.max(worst, Math.abs(v - b[i]!))));
  return worst;
}

test('tiny Flux txt2img: the pipeline latents equal T5 -> transformer -> flow Euler chained from the verified pieces, and repeat exactly', async (t) => {
  const { latents, result } = await latentsOf(base({ path: fluxDir }));
  // FLUX.1-dev's schedule, dynamically shifted at the image's 16 tokens; guidance 3.5 as an input.
  const { sigmas } = flowSchedule(3, FLUX_DEV_SCHEDULE, { spacing: 'flux', imageSeqLen: 16 });
  const chained = await chainedFlux(join(FIXTURES, 'tiny-flux', 'flux-bfl.safetensors'), 512, sigmas, 3.5);
  assert.deepEqual(latents.shape, [1, 16, 8, 8]);
  const worst = maxDiff(chained, latents.data);
  t.diagnostic(`pipeline vs chained pieces: max abs difference ${worst}`);
  assert.ok(worst <= 1e-6, `pipeline vs chained pieces: max difference ${worst}`);
  assert.ok(latents.data.every(Number.isFinite));

  const again = await latentsOf(base({ path: fluxDir }));
  assert.deepEqual(again.latents.data, latents.data, 'same request, same latents');
  assert.deepEqual(again.result.images[0]!.image.data, result.images[0]!.image.data, 'same request, same pixels');
  const img = result.images[0]!;
  assert.equal(img.image.width, 64);
  assert.equal(img.image.channels, 3);
  assert.match(img.infotext, /Steps: 3, Sampler: Euler, CFG scale: 1, Distilled CFG Scale: 3\.5, Seed: 42, Size: 64x64/);
});

test('Flux: the BFL single file with a companion folder gives the diffusers folder latents; guidance is an input', async () => {
  const companion = writeFluxCompanion(join(work, 'flux-companion'));
  const single = { path: join(FIXTURES, 'tiny-flux', 'flux-bfl.safetensors'), tokenizerDir: companion };
  const info = await inspectModel(single);
  assert.equal(info.family, 'flux');
  assert.equal(info.prediction, 'flow');
  const a = await latentsOf(base(single, { steps: 2 }));
  const b = await latentsOf(base({ path: fluxDir }, { steps: 2 }));
  assert.deepEqual(a.latents.data, b.latents.data);
  const g = await latentsOf(base({ path: fluxDir }, { steps: 2, guidance: 1.5 }));
  assert.notDeepEqual(g.latents.data, b.latents.data, 'the distilled guidance changes the result');
  assert.match(g.result.images[0]!.infotext, /Distilled CFG Scale: 1\.5/);
  // The VAE may come as a separate file instead of the companion's vae/ (BFL's ae.safetensors is one).
  const noVae = join(work, 'flux-companion-no-vae');
  cpSync(companion, noVae, { recursive: true });
  rmSync(join(noVae, 'vae'), { recursive: true });
  const withVae = await latentsOf(base({ path: single.path, tokenizerDir: noVae, vae: join(companion, 'vae') }, { steps: 2 }));
  assert.deepEqual(withVae.latents.data, b.latents.data);
  assert.deepEqual(withVae.result.images[0]!.image.data, b.result.images[0]!.image.data);
  await assert.rejects(engine.generate(base({ path: single.path, tokenizerDir: noVae }, { steps: 1 })), /^KilnInputError: vae: flux-bfl holds no VAE/);
  // Without the encoders beside it the single file says what it lacks.
  const bare = join(work, 'flux-axes-only');
  mkdirSync(join(bare, 'transformer'), { recursive: true });
  copyFileSync(join(companion, 'transformer', 'config.json'), join(bare, 'transformer', 'config.json'));
  await assert.rejects(engine.generate(base({ path: single.path, tokenizerDir: bare })), /holds no text_encoder \(clip-l\)/);
});

test('Flux samplers and schedules: Heun and Beta run; ancestral samplers, Karras and bad sizes are refused naming the field', async () => {
  const heun = await latentsOf(base({ path: fluxDir }, { steps: 2, sampler: 'Heun', schedule: 'Beta' }));
  assert.ok(heun.latents.data.every(Number.isFinite));
  assert.match(heun.result.images[0]!.infotext, /Sampler: Heun, Schedule type: Beta/);
  const refused = async (over: Partial<GenerateRequest>, field: string) => {
    const e = await engine.generate(base({ path: fluxDir }, over)).then(
      () => undefined,
      (err: unknown) => err,
    );
    assert.ok(e instanceof KilnInputError, `expected a KilnInputError for ${field}, got ${String(e)}`);
    assert.equal((e as KilnInputError).field, field, (e as Error).message);
  };
  await refused({ sampler: 'Euler a' }, 'sampler_name');
  await refused({ sampler: 'DPM++ 2M' }, 'sampler_name');
  await refused({ schedule: 'Karras' }, 'scheduler');
  await refused({ width: 72 }, 'width');
  await refused({ height: 40 }, 'height');
  await refused({ hires: { scale: 2, denoisingStrength: 0.5 } as GenerateRequest['hires'] }, 'hires');
  await refused({ clipSkip: 2 }, 'clip_skip');
});

test('tiny SD3: CFG with the negative prompt, deterministic; the all-in-one file loads the same family', async () => {
  const a = await latentsOf(base({ path: sd3Dir }, { negativePrompt: 'blue', steps: 2 }));
  const b = await latentsOf(base({ path: sd3Dir }, { negativePrompt: 'blue', steps: 2 }));
  assert.deepEqual(a.latents.data, b.latents.data);
  const noCfg = await latentsOf(base({ path: sd3Dir }, { negativePrompt: 'blue', steps: 2, cfgScale: 1 }));
  assert.notDeepEqual(noCfg.latents.data, a.latents.data, 'cfg_scale matters on SD3');
  assert.match(a.result.images[0]!.infotext, /CFG scale: 7, Seed: 42/);
  assert.doesNotMatch(a.result.images[0]!.infotext, /Distilled/);
  // SD3 has no guidance input: the field is ignored, as Forge sends its default with every model.
  const ignored = await latentsOf(base({ path: sd3Dir }, { negativePrompt: 'blue', steps: 2, guidance: 3 }));
  assert.deepEqual(ignored.latents.data, a.latents.data);
  // The tiny MMDiT's position table covers 8x8 patches: 128 px.
  await assert.rejects(engine.generate(base({ path: sd3Dir }, { width: 144 })), /width must be at most 128/);
  const single = writeTinySd3SingleFile(join(work, 'tiny-sd3.safetensors'), sd3Dir);
  const info = await inspectModel({ path: single });
  assert.equal(info.family, 'sd3');
  const s = await latentsOf(base({ path: single, tokenizerDir: sd3Dir }, { steps: 1 }));
  assert.ok(s.latents.data.every(Number.isFinite));
});

test('Flux img2img: the init image latents are noised along the straight path and the run repeats exactly', async () => {
  const first = await engine.generate(base({ path: fluxDir }, { steps: 2 }));
  const init = { image: first.images[0]!.image, strength: 0.5 };
  const a = await latentsOf(base({ path: fluxDir }, { steps: 4, init }));
  const b = await latentsOf(base({ path: fluxDir }, { steps: 4, init }));
  assert.deepEqual(a.latents.data, b.latents.data);
  assert.match(a.result.images[0]!.infotext, /Denoising strength: 0\.5/);
});

test('FLUX.1 schnell (a transformer without guidance_in): no guidance input, no shift, 256 T5 tokens', async () => {
  const src = openTensorFile(join(FIXTURES, 'tiny-flux', 'flux-bfl.safetensors'));
  const tensors: Record<string, TensorToWrite> = {};
  for (const n of src.names()) {
    if (!n.startsWith('guidance_in.')) tensors[n] = { dtype: src.entry(n).dtype, shape: [...src.entry(n).shape], bytes: src.readBytes(n) };
  }
  const file = join(work, 'tiny-schnell.safetensors');
  writeSafetensors(file, tensors);
  // The companion is the dev folder (the encoders and VAE are the same): the schedule still follows the transformer.
  const companion = writeFluxCompanion(join(work, 'schnell-companion'));
  const { latents, result } = await latentsOf(base({ path: file, tokenizerDir: companion }, { steps: 4, guidance: 9 }));
  // No "Distilled CFG Scale": schnell takes none (the request's guidance is ignored, as Forge does).
  assert.doesNotMatch(result.images[0]!.infotext, /Distilled/);
  // The unshifted grid linspace(1, 1/4, 4) (FluxPipeline with schnell's scheduler, shift 1), T5 over 256 tokens.
  const { sigmas } = flowSchedule(4, FLUX_SCHNELL_SCHEDULE, { spacing: 'flux' });
  assert.deepEqual(sigmas, [1, 0.75, 0.5, 0.25, 0]);
  const worst = maxDiff(await chainedFlux(file, 256, sigmas), latents.data);
  assert.ok(worst <= 1e-6, `schnell pipeline vs chained pieces: max difference ${worst}`);
});

test('flow schedules: Simple equals the FluxPipeline grid when the steps divide 1000; Beta starts at 1, falls and ends at 0', () => {
  for (const steps of [4, 8, 20]) {
    const simple = flowTableSigmas('simple', steps, FLUX_DEV_SCHEDULE, { imageSeqLen: 1024, betaPpf });
    const pipeline = flowSchedule(steps, FLUX_DEV_SCHEDULE, { spacing: 'flux', imageSeqLen: 1024 }).sigmas;
    simple.forEach((s, i) => assert.ok(Math.abs(s - pipeline[i]!) < 1e-6, `${steps} steps, sigma ${i}: ${s} vs ${pipeline[i]}`));
  }
  const beta = flowTableSigmas('beta', 10, SD3_SCHEDULE, { betaPpf });
  assert.equal(beta[0], 1);
  assert.equal(beta[beta.length - 1], 0);
  assert.ok(beta.length <= 11);
  for (let i = 1; i < beta.length; i++) assert.ok(beta[i]! < beta[i - 1]!, `beta sigmas fall: ${beta}`);
  // Beta(0.6, 0.6) spends more steps near both ends than the middle.
  assert.ok(beta[0]! - beta[1]! < beta[4]! - beta[5]!);
});

test('Flux batch window (a split job chunk): images 4.. of a 6-image batch equal the whole batch run image for image', async () => {
  const req = base({ path: fluxDir }, { steps: 2, prompts: ['a red fox', 'a blue bird'], imagesPerPrompt: 3 });
  const whole = await engine.generate(req);
  assert.equal(whole.images.length, 6);
  const part = await engine.generate({ ...req, batchWindow: { start: 4, count: 2 } });
  assert.equal(part.images.length, 2);
  part.images.forEach((img, i) => {
    const ref = whole.images[4 + i]!;
    assert.equal(img.seed, ref.seed);
    assert.equal(img.prompt, ref.prompt);
    assert.ok(Buffer.from(img.image.data).equals(Buffer.from(ref.image.data)), `image ${4 + i}: pixels differ`);
  });
});

function relativeRms(a: Float32Array, b: Float32Array): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < a.length; i++) {
    num += (a[i]! - b[i]!) ** 2;
    den += b[i]! ** 2;
  }
  return Math.sqrt(num / den);
}

test('Flux from a GGUF Q8_0 transformer file and with --quantize q8: end to end, deterministic, close to the float run', async () => {
  const companion = writeFluxCompanion(join(work, 'flux-companion-gguf'));
  const bflPath = join(FIXTURES, 'tiny-flux', 'flux-bfl.safetensors');
  const bfl = openTensorFile(bflPath);
  const ggufPath = join(work, 'flux-q8.gguf');
  writeGguf(
    ggufPath,
    bfl.names().map((name) => {
      const shape = bfl.entry(name).shape;
      return { name, shape, type: shape.length === 2 && shape[1]! % 32 === 0 ? 'Q8_0' : 'F32', data: bfl.readFloat32(name) };
    }),
    { 'general.architecture': 'flux' },
  );
  const float = await latentsOf(base({ path: bflPath, tokenizerDir: companion }, { steps: 2 }));
  const gguf = await latentsOf(base({ path: ggufPath, tokenizerDir: companion }, { steps: 2 }));
  const again = await latentsOf(base({ path: ggufPath, tokenizerDir: companion }, { steps: 2 }));
  assert.deepEqual(gguf.latents.data, again.latents.data, 'deterministic');
  assert.notDeepEqual(gguf.latents.data, float.latents.data, 'the Q8_0 weights really run');
  const ggufError = relativeRms(gguf.latents.data as Float32Array, float.latents.data as Float32Array);
  assert.ok(ggufError < 0.05, `Q8_0 latents within 5% RMS of float, got ${ggufError}`);

  const quantEngine = createEngine({ cacheDir, quantize: 'q8' });
  try {
    const q = await quantEngine.generate(base({ path: fluxDir }, { steps: 2 }), {}, {});
    const f = await latentsOf(base({ path: fluxDir }, { steps: 2 }));
    let qLatents: Tensor | undefined;
    await quantEngine.generate(base({ path: fluxDir }, { steps: 2 }), {}, { onFinalLatents: (l) => (qLatents = l) });
    assert.equal(q.images.length, 1);
    const qError = relativeRms(qLatents!.data as Float32Array, f.latents.data as Float32Array);
    assert.ok(qError > 0 && qError < 0.05, `--quantize q8 latents within 5% RMS of float and not equal, got ${qError}`);
  } finally {
    await quantEngine.close();
  }
});
