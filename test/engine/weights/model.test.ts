import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { copyFileSync, cpSync, existsSync, mkdirSync, readFileSync, readlinkSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ModelFileError } from '../../../src/engine/api.ts';
import { f16ToF32, bf16ToF32, f32ToF16Bits, f32ToBf16Bits } from '../../../src/engine/weights/float.ts';
import { loadModel, type LoadOptions } from '../../../src/engine/weights/model.ts';
import { ensureTokenizers } from '../../../src/server/models/tokenizers.ts';
import { SafetensorsFile, writeSafetensors, type TensorToWrite } from '../../../src/engine/weights/safetensors.ts';
import { assertSameWeights, bytesOf, copyTensors, FIXTURES, tempDir } from './helpers.ts';
import { writePickledFolder } from './pickle-helpers.ts';

const dir = tempDir();
const emptyConfigDir = join(dir, 'no-configs');
mkdirSync(emptyConfigDir);
const opts: LoadOptions = { hashCacheFile: null };
const fx = (p: string) => join(FIXTURES, p);
const META = new Set(['_class_name', '_diffusers_version', 'transformers_version', 'torch_dtype', 'architectures']);

function readConfig(path: string): Record<string, unknown> {
  return JSON.parse(readFileSync(path, 'utf8')) as Record<string, unknown>;
}

/** Fields of `expected` (a folder's config.json) where `actual` differs, minus bookkeeping and `ignore`. */
function configDiff(actual: object, expected: Record<string, unknown>, ignore: string[] = []): string[] {
  const a = actual as Record<string, unknown>;
  return Object.keys(expected)
    .filter((k) => !META.has(k) && !ignore.includes(k))
    .filter((k) => JSON.stringify(a[k]) !== JSON.stringify(expected[k]))
    .map((k) => `${k}: ${JSON.stringify(a[k])} != ${JSON.stringify(expected[k])}`);
}

test('family, prediction, encoders and tokenizers of every fixture', async () => {
  const cases: [string, string | undefined, string, string, string[]][] = [
    ['tiny-sd1', undefined, 'sd1', 'epsilon', ['tiny-sd1/tokenizer']],
    ['tiny-sd2', undefined, 'sd2', 'v_prediction', ['tiny-sd2/tokenizer']],
    ['tiny-sdxl', undefined, 'sdxl', 'epsilon', ['tiny-sdxl/tokenizer', 'tiny-sdxl/tokenizer_2']],
    ['tiny-sd1.safetensors', 'tiny-sd1', 'sd1', 'epsilon', ['tiny-sd1/tokenizer']],
    ['tiny-sdxl.safetensors', 'tiny-sdxl', 'sdxl', 'epsilon', ['tiny-sdxl/tokenizer', 'tiny-sdxl/tokenizer_2']],
  ];
  for (const [path, tok, family, prediction, tokenizers] of cases) {
    const m = await loadModel({ path: fx(path), tokenizerDir: tok && fx(tok) }, opts);
    assert.equal(m.family, family, path);
    assert.equal(m.prediction, prediction, path);
    assert.equal(m.schedulerConfig.prediction_type, prediction, path);
    assert.equal(m.format, path.endsWith('.safetensors') ? 'single-file' : 'diffusers');
    assert.deepEqual(m.tokenizerDirs, tokenizers.map(fx), path);
    assert.equal(m.textEncoders.length, tokenizers.length);
    assert.deepEqual(m.warnings, [], path);
    const roles = { sd1: ['clip-l'], sd2: ['openclip-h'], sdxl: ['clip-l', 'openclip-bigG'] }[family];
    assert.deepEqual(
      m.textEncoders.map((t) => t.tokenizerRole),
      roles,
      path,
    );
  }
});

test('folder configs are the folder config.json files (with diffusers defaults for omitted fields)', async () => {
  for (const name of ['tiny-sd1', 'tiny-sd2', 'tiny-sdxl']) {
    const m = await loadModel({ path: fx(name) }, opts);
    assert.deepEqual(configDiff(m.unetConfig!, readConfig(fx(`${name}/unet/config.json`))), []);
    assert.deepEqual(configDiff(m.vaeConfig, readConfig(fx(`${name}/vae/config.json`))), []);
    m.textEncoders.forEach((t) => assert.deepEqual(configDiff(t.config, readConfig(fx(`${name}/${t.component}/config.json`))), []));
    const sched = readConfig(fx(`${name}/scheduler/scheduler_config.json`));
    assert.deepEqual(configDiff(m.schedulerConfig, sched), []);
  }
  const sd1 = await loadModel({ path: fx('tiny-sd1') }, opts);
  assert.equal(sd1.schedulerConfig.timestep_spacing, undefined, 'a missing timestep_spacing stays missing');
});

test('tiny-sd1.safetensors: configs inferred from the weights alone equal the folder configs', async () => {
  const m = await loadModel({ path: fx('tiny-sd1.safetensors'), tokenizerDir: fx('tiny-sd1') }, { ...opts, configDir: emptyConfigDir });
  // sample_size is only the default resolution, not part of the network
  assert.deepEqual(configDiff(m.unetConfig!, readConfig(fx('tiny-sd1/unet/config.json')), ['sample_size']), []);
  assert.deepEqual(configDiff(m.vaeConfig, readConfig(fx('tiny-sd1/vae/config.json')), ['sample_size']), []);
  // The head count is not stored in CLIP weights; real encoders use 64-dim heads, this toy one 8-dim.
  assert.deepEqual(configDiff(m.textEncoders[0]!.config, readConfig(fx('tiny-sd1/text_encoder/config.json'))), ['num_attention_heads: 1 != 4']);
  assert.deepEqual(m.warnings, ['text_encoder: guessed num_attention_heads: hidden size 32 is not a multiple of 64, used 1 head']);
  assert.deepEqual(m.schedulerConfig, {
    _class_name: 'DDIMScheduler',
    beta_start: 0.00085,
    beta_end: 0.012,
    beta_schedule: 'scaled_linear',
    num_train_timesteps: 1000,
    prediction_type: 'epsilon',
    timestep_spacing: 'leading',
    steps_offset: 1,
    clip_sample: false,
    set_alpha_to_one: false,
    trained_betas: null,
  });
});

test('tiny-sdxl.safetensors: inferred structure matches; unknowable fields are reported as guesses', async () => {
  const m = await loadModel({ path: fx('tiny-sdxl.safetensors'), tokenizerDir: fx('tiny-sdxl') }, { ...opts, configDir: emptyConfigDir });
  assert.deepEqual(configDiff(m.unetConfig!, readConfig(fx('tiny-sdxl/unet/config.json')), ['sample_size']), [
    'attention_head_dim: [1,1] != [2,4]',
    'norm_num_groups: 8 != 4',
  ]);
  assert.equal(m.unetConfig!.addition_time_embed_dim, 8); // (80 - 32 pooled) / 6 time ids
  assert.deepEqual(m.unetConfig!.transformer_layers_per_block, [1, 2]);
  assert.deepEqual(configDiff(m.vaeConfig, readConfig(fx('tiny-sdxl/vae/config.json')), ['sample_size']), ['norm_num_groups: 8 != 4']);
  assert.equal(m.vaeConfig.scaling_factor, 0.13025);
  assert.deepEqual(configDiff(m.textEncoders[0]!.config, readConfig(fx('tiny-sdxl/text_encoder/config.json'))), [
    'hidden_act: "quick_gelu" != "gelu"', // real SDXL CLIP-L is quick_gelu; this toy one is not
    'num_attention_heads: 1 != 4',
  ]);
  assert.deepEqual(configDiff(m.textEncoders[1]!.config, readConfig(fx('tiny-sdxl/text_encoder_2/config.json'))), ['num_attention_heads: 1 != 4']);
  assert.equal(m.textEncoders[1]!.config.architectures?.[0], 'CLIPTextModelWithProjection');
  for (const field of ['attention_head_dim', 'unet: guessed norm_num_groups', 'vae: guessed norm_num_groups', 'text_encoder_2: guessed num_attention_heads']) {
    assert.ok(
      m.warnings.some((w) => w.includes(field)),
      `warning about ${field}`,
    );
  }
});

test('with a companion diffusers folder, single-file configs equal the folder configs exactly', async () => {
  for (const name of ['tiny-sd1', 'tiny-sdxl']) {
    const single = await loadModel({ path: fx(`${name}.safetensors`), tokenizerDir: fx(name) }, opts);
    const folder = await loadModel({ path: fx(name) }, opts);
    assert.deepEqual(single.unetConfig, folder.unetConfig);
    assert.deepEqual(single.vaeConfig, folder.vaeConfig);
    assert.deepEqual(
      single.textEncoders.map((t) => t.config),
      folder.textEncoders.map((t) => t.config),
    );
    assert.deepEqual(single.warnings, []);
  }
  // A companion whose structure does not match is ignored, with a warning.
  const m = await loadModel({ path: fx('tiny-sd1.safetensors'), tokenizerDir: fx('tiny-sd1') }, { ...opts, configDir: fx('tiny-sdxl') });
  assert.deepEqual(m.unetConfig!.block_out_channels, [32, 64]);
  assert.ok(m.warnings.some((w) => /^unet: ignored the companion config\.json, it disagrees with the weights on .*block_out_channels/.test(w)));
});

test('prediction override', async () => {
  const m = await loadModel({ path: fx('tiny-sd1.safetensors'), tokenizerDir: fx('tiny-sd1') }, { ...opts, prediction: 'v_prediction' });
  assert.equal(m.prediction, 'v_prediction');
  assert.equal(m.schedulerConfig.prediction_type, 'v_prediction');
  const sd2 = await loadModel({ path: fx('tiny-sd2') }, { ...opts, prediction: 'epsilon' });
  assert.equal(sd2.schedulerConfig.prediction_type, 'epsilon');
});

// ---------------------------------------------------------------- synthetic single files

/** Writes an HF CLIPTextModel's weights in OpenCLIP layout (fused q/k/v, text_projection stored [hidden, proj]). */
function openClipTensors(teFile: SafetensorsFile, prefix: string, extraLayer: boolean): Record<string, TensorToWrite> {
  const out: Record<string, TensorToWrite> = {};
  const f32 = (shape: number[], data: Float32Array): TensorToWrite => ({ dtype: 'F32', shape, bytes: bytesOf(data) });
  const get = (k: string) => teFile.readFloat32(k);
  const shape = (k: string) => teFile.entry(k).shape;
  const layers = new Set(
    teFile
      .names()
      .map((k) => /encoder\.layers\.(\d+)\./.exec(k)?.[1])
      .filter(Boolean),
  ).size;
  const simple: Record<string, string> = {
    'text_model.embeddings.position_embedding.weight': 'positional_embedding',
    'text_model.embeddings.token_embedding.weight': 'token_embedding.weight',
    'text_model.final_layer_norm.weight': 'ln_final.weight',
    'text_model.final_layer_norm.bias': 'ln_final.bias',
  };
  for (const [from, to] of Object.entries(simple)) out[prefix + to] = f32(shape(from), get(from));
  const layerIds = [...Array(layers).keys()];
  for (const i of extraLayer ? [...layerIds, layers] : layerIds) {
    const src = `text_model.encoder.layers.${Math.min(i, layers - 1)}.`;
    const dst = `${prefix}transformer.resblocks.${i}.`;
    const scale = i === layers ? -3 : 1; // the extra layer differs, so keeping it by mistake would show
    const sc = (d: Float32Array) => d.map((v) => v * scale);
    const renames: Record<string, string> = {
      layer_norm1: 'ln_1',
      layer_norm2: 'ln_2',
      'self_attn.out_proj': 'attn.out_proj',
      'mlp.fc1': 'mlp.c_fc',
      'mlp.fc2': 'mlp.c_proj',
    };
    for (const [from, to] of Object.entries(renames)) {
      for (const wb of ['weight', 'bias']) out[`${dst}${to}.${wb}`] = f32(shape(`${src}${from}.${wb}`), sc(get(`${src}${from}.${wb}`)));
    }
    for (const wb of ['weight', 'bias']) {
      const parts = ['q_proj', 'k_proj', 'v_proj'].map((p) => get(`${src}self_attn.${p}.${wb}`));
      const fused = new Float32Array(parts.reduce((n, p) => n + p.length, 0));
      let o = 0;
      for (const p of parts) {
        fused.set(sc(p), o);
        o += p.length;
      }
      const s = shape(`${src}self_attn.q_proj.${wb}`);
      out[`${dst}attn.in_proj_${wb}`] = f32([s[0]! * 3, ...s.slice(1)], fused);
    }
  }
  if (teFile.has('text_projection.weight')) {
    const [proj, hidden] = shape('text_projection.weight') as [number, number];
    const w = get('text_projection.weight');
    const t = new Float32Array(w.length);
    for (let p = 0; p < proj; p++) for (let h = 0; h < hidden; h++) t[h * proj + p] = w[p * hidden + h]!;
    out[`${prefix}text_projection`] = f32([hidden, proj], t);
  }
  return out;
}

function ldmPart(file: SafetensorsFile, prefixes: string[]): Record<string, TensorToWrite> {
  const out: Record<string, TensorToWrite> = {};
  for (const k of file.names()) {
    if (prefixes.some((p) => k.startsWith(p))) out[k] = { ...file.entry(k), bytes: file.readBytes(k) };
  }
  return out;
}

test('SD2 single file (OpenCLIP text encoder): detected, v-prediction by default, last layer dropped, q/k/v split', async () => {
  const sd1 = SafetensorsFile.open(fx('tiny-sd1.safetensors'));
  const te = SafetensorsFile.open(fx('tiny-sd2/text_encoder/model.safetensors'));
  const file = join(dir, 'sd2-like.safetensors');
  const tensors = {
    ...ldmPart(sd1, ['model.diffusion_model.', 'first_stage_model.']),
    ...openClipTensors(te, 'cond_stage_model.model.', true),
    'cond_stage_model.model.text_projection': { dtype: 'F32', shape: [32, 32], bytes: new Uint8Array(32 * 32 * 4) } as TensorToWrite,
  };
  writeSafetensors(file, tensors);
  const m = await loadModel({ path: file, tokenizerDir: fx('tiny-sd2') }, opts);
  assert.equal(m.family, 'sd2');
  assert.equal(m.prediction, 'v_prediction');
  // The UNet here is tiny-sd1's, so tiny-sd2's unet config does not fit it and is not used.
  assert.ok(m.warnings.some((w) => w.startsWith('unet: ignored the companion config.json')));
  const folder = await loadModel({ path: fx('tiny-sd2') }, opts);
  assertSameWeights(m.textEncoders[0]!.weights, folder.textEncoders[0]!.weights, 'sd2 text_encoder');
  assert.deepEqual(m.textEncoders[0]!.config, folder.textEncoders[0]!.config);
  assert.equal(m.textEncoders[0]!.tokenizerRole, 'openclip-h');

  const inferred = await loadModel({ path: file, tokenizerDir: fx('tiny-sd2') }, { ...opts, configDir: emptyConfigDir });
  assert.equal(inferred.textEncoders[0]!.config.num_hidden_layers, 5);
  assert.equal(inferred.textEncoders[0]!.config.hidden_act, 'gelu');
  assert.equal(inferred.unetConfig!.upcast_attention, true);
  assert.equal(inferred.unetConfig!.sample_size, 96);
  const eps = await loadModel({ path: file, tokenizerDir: fx('tiny-sd2') }, { ...opts, prediction: 'epsilon' });
  assert.equal(eps.prediction, 'epsilon');
});

test('SDXL refiner single file: bigG only, as text_encoder_2', async () => {
  const xl = SafetensorsFile.open(fx('tiny-sdxl.safetensors'));
  const file = join(dir, 'refiner-like.safetensors');
  copyTensors(file, [
    {
      file: xl,
      rename: (k) => (k.startsWith('conditioner.embedders.0.') ? undefined : k.replace('conditioner.embedders.1.model.', 'conditioner.embedders.0.model.')),
    },
  ]);
  const m = await loadModel({ path: file, tokenizerDir: fx('tiny-sdxl') }, opts);
  assert.equal(m.family, 'sdxl-refiner');
  assert.deepEqual(
    m.textEncoders.map((t) => t.component),
    ['text_encoder_2'],
  );
  assert.deepEqual(m.tokenizerDirs, [fx('tiny-sdxl/tokenizer_2')]);
  const folder = await loadModel({ path: fx('tiny-sdxl') }, opts);
  assertSameWeights(m.textEncoders[0]!.weights, folder.textEncoders[1]!.weights, 'refiner text_encoder_2');
});

test('F16 and BF16 copies of a checkpoint load, widened exactly', async () => {
  const src = SafetensorsFile.open(fx('tiny-sd1.safetensors'));
  const original = await loadModel({ path: fx('tiny-sd1.safetensors'), tokenizerDir: fx('tiny-sd1') }, opts);
  for (const [dtype, narrow, widen] of [
    ['F16', f32ToF16Bits, f16ToF32],
    ['BF16', f32ToBf16Bits, bf16ToF32],
  ] as const) {
    const file = join(dir, `tiny-sd1-${dtype}.safetensors`);
    copyTensors(file, [{ file: src, rename: (k) => k }], dtype);
    const m = await loadModel({ path: file, tokenizerDir: fx('tiny-sd1') }, opts);
    assert.deepEqual(m.unetConfig!, original.unetConfig);
    for (const [a, b] of [
      [m.unet, original.unet],
      [m.vae, original.vae],
      [m.textEncoders[0]!.weights, original.textEncoders[0]!.weights],
    ] as const) {
      assert.deepEqual(a.names().sort(), b.names().sort());
      for (const name of b.names()) {
        const got = a.get(name);
        const want = b.get(name);
        assert.deepEqual(got.shape, want.shape);
        if (b.dtype(name) !== 'F32') continue; // position_ids stay I64
        assert.equal(a.dtype(name), dtype);
        assert.deepEqual(got.data, widen(Uint16Array.from(want.data, narrow)), `${dtype} ${name}`);
      }
    }
  }
});

// ---------------------------------------------------------------- hash and identity

test('A1111 short hash is the first 10 hex digits of the file sha256, cached on disk', async () => {
  const sha = (f: string) => createHash('sha256').update(readFileSync(f)).digest('hex');
  const cacheFile = join(dir, 'hashes.json');
  const single = await loadModel({ path: fx('tiny-sd1.safetensors'), tokenizerDir: fx('tiny-sd1') }, { ...opts, hashCacheFile: cacheFile });
  assert.equal(await single.hash(), sha(fx('tiny-sd1.safetensors')).slice(0, 10));
  const folder = await loadModel({ path: fx('tiny-sdxl') }, opts);
  assert.equal(await folder.hash(), sha(fx('tiny-sdxl/unet/diffusion_pytorch_model.safetensors')).slice(0, 10));

  // A cached entry with matching size+mtime is trusted (that is the point of the cache): use a copy so the
  // in-memory cache of the fixture does not answer first.
  const copy = join(dir, 'copy.safetensors');
  copyFileSync(fx('tiny-sd1.safetensors'), copy);
  const cache = JSON.parse(readFileSync(cacheFile, 'utf8')) as Record<string, { size: number; mtimeMs: number; sha256: string }>;
  const entry = Object.values(cache)[0]!;
  const { statSync, realpathSync } = await import('node:fs');
  const st = statSync(copy);
  cache[realpathSync(copy)] = { size: st.size, mtimeMs: st.mtimeMs, sha256: 'abcdef0123456789' };
  writeFileSync(cacheFile, JSON.stringify(cache));
  const fromCopy = await loadModel({ path: copy, tokenizerDir: fx('tiny-sd1') }, { ...opts, hashCacheFile: cacheFile });
  assert.equal(await fromCopy.hash(), 'abcdef0123');
  assert.equal(entry.sha256, sha(fx('tiny-sd1.safetensors')));
});

test('identity is stable, and changes when a weight file changes', async () => {
  const file = join(dir, 'ident.safetensors');
  copyFileSync(fx('tiny-sd1.safetensors'), file);
  const ref = { path: file, tokenizerDir: fx('tiny-sd1') };
  const a = await loadModel(ref, opts);
  const b = await loadModel(ref, opts);
  assert.equal(a.identity, b.identity);
  assert.match(a.identity, /^[0-9a-f]{32}$/);
  utimesSync(file, new Date(2001, 1, 1), new Date(2001, 1, 1));
  const c = await loadModel(ref, opts);
  assert.notEqual(c.identity, a.identity);
  const withVae = await loadModel({ ...ref, vae: fx('tiny-sd1/vae') }, opts);
  assert.notEqual(withVae.identity, c.identity);
});

// ---------------------------------------------------------------- separate VAE

test('separate VAE: diffusers folder, LDM-layout file and old diffusers-layout file', async () => {
  const base = { path: fx('tiny-sd1.safetensors'), tokenizerDir: fx('tiny-sd1') };
  const folderVae = (await loadModel({ path: fx('tiny-sd1') }, opts)).vae;

  const fromFolder = await loadModel({ ...base, vae: fx('tiny-sd1/vae') }, opts);
  assertSameWeights(fromFolder.vae, folderVae, 'vae folder');

  const ldmFile = join(dir, 'vae-ldm.safetensors');
  const sd1 = SafetensorsFile.open(fx('tiny-sd1.safetensors'));
  copyTensors(ldmFile, [
    { file: sd1, rename: (k) => (k.startsWith('first_stage_model.') ? k.slice('first_stage_model.'.length) : undefined) },
    // training leftovers that standalone VAE files carry are ignored
    { file: sd1, rename: (k) => (k === 'first_stage_model.quant_conv.bias' ? 'loss.logvar' : undefined) },
    { file: sd1, rename: (k) => (k === 'first_stage_model.post_quant_conv.bias' ? 'model_ema.decay' : undefined) },
  ]);
  const fromLdm = await loadModel({ ...base, vae: ldmFile }, opts);
  assertSameWeights(fromLdm.vae, folderVae, 'LDM vae file');
  assert.equal(fromLdm.vaeConfig.scaling_factor, 0.18215);

  const oldNames: Record<string, string> = { to_q: 'query', to_k: 'key', to_v: 'value', 'to_out.0': 'proj_attn' };
  const oldFile = join(dir, 'vae-old-diffusers.safetensors');
  copyTensors(oldFile, [
    {
      file: SafetensorsFile.open(fx('tiny-sd1/vae/diffusion_pytorch_model.safetensors')),
      rename: (k) => k.replace(/\.attentions\.0\.(to_q|to_k|to_v|to_out\.0)\./, (_, n: string) => `.attentions.0.${oldNames[n]}.`),
    },
  ]);
  const fromOld = await loadModel({ ...base, vae: oldFile }, opts);
  assertSameWeights(fromOld.vae, folderVae, 'old diffusers vae file');

  // An SDXL VAE on an SD1 model keeps the SD1 latent scaling (it belongs to the diffusion model).
  const xlVae = await loadModel({ ...base, vae: fx('tiny-sdxl/vae') }, opts);
  assert.equal(xlVae.vaeConfig.scaling_factor, 0.18215);
  assert.deepEqual(xlVae.vaeConfig.block_out_channels, [8, 16]);
  assert.equal(xlVae.vaeConfig.norm_num_groups, 4);

  await assert.rejects(loadModel({ ...base, vae: fx('tiny-sd1/unet/diffusion_pytorch_model.safetensors') }, opts), /not a VAE/);
});

// ---------------------------------------------------------------- tokenizers

test('tokenizerDir: a flat vocab folder serves a one-encoder model; a missing tokenizer_2 is named', async () => {
  const m = await loadModel({ path: fx('tiny-sd1.safetensors'), tokenizerDir: fx('tiny-sd1/tokenizer') }, { ...opts, configDir: emptyConfigDir });
  assert.deepEqual(m.tokenizerDirs, [fx('tiny-sd1/tokenizer')]);
  await assert.rejects(
    loadModel({ path: fx('tiny-sdxl.safetensors'), tokenizerDir: fx('tiny-sd1') }, opts),
    /tiny-sd1: tokenizer folder has no tokenizer_2\/vocab\.json \+ tokenizer_2\/merges\.txt \(needed for text_encoder_2\)/,
  );
});

test('standard tokenizers come from the HF cache; offline, the error says what to download where', async () => {
  const cache = join(dir, 'hf-cache');
  const ref = { path: fx('tiny-sdxl.safetensors') };
  await assert.rejects(loadModel(ref, { ...opts, hfCacheDir: cache }), (e: unknown) => {
    assert.ok(e instanceof ModelFileError);
    assert.match(e.message, /clip-l tokenizer is missing and downloads are disabled/);
    assert.match(e.message, /https:\/\/huggingface\.co\/openai\/clip-vit-large-patch14\/resolve\/main\/vocab\.json/);
    assert.match(e.message, /https:\/\/huggingface\.co\/openai\/clip-vit-large-patch14\/resolve\/main\/merges\.txt/);
    assert.ok(e.message.includes(join(cache, 'models--openai--clip-vit-large-patch14', 'snapshots', 'main')));
    assert.match(e.message, /--tokenizer/);
    return true;
  });
  // Put CLIP-L in the cache the way huggingface_hub does; bigG is then the missing one.
  const snap = join(cache, 'models--openai--clip-vit-large-patch14', 'snapshots', 'abc123');
  cpSync(fx('tiny-sdxl/tokenizer'), snap, { recursive: true });
  mkdirSync(join(cache, 'models--openai--clip-vit-large-patch14', 'refs'), { recursive: true });
  writeFileSync(join(cache, 'models--openai--clip-vit-large-patch14', 'refs', 'main'), 'abc123');
  await assert.rejects(
    loadModel(ref, { ...opts, hfCacheDir: cache }),
    /openclip-bigG tokenizer is missing.*laion\/CLIP-ViT-bigG-14-laion2B-39B-b160k\/resolve\/main\/vocab\.json/s,
  );
  // A network failure is reported the same way, with its reason (the server's fetch into the cache, before loading).
  const failing = (() => Promise.reject(new Error('getaddrinfo ENOTFOUND huggingface.co'))) as unknown as typeof fetch;
  await assert.rejects(
    ensureTokenizers(ref, { hfCacheDir: cache, endpoint: 'https://huggingface.co', fetchImpl: failing }),
    /download failed: getaddrinfo ENOTFOUND huggingface\.co.*--tokenizer/s,
  );
});

test('missing tokenizer files are downloaded once into the HF cache layout', async () => {
  const cache = join(dir, 'hf-cache-dl');
  const requested: string[] = [];
  const files: Record<string, string> = {
    'vocab.json': readFileSync(fx('tiny-sd1/tokenizer/vocab.json'), 'utf8'),
    'merges.txt': readFileSync(fx('tiny-sd1/tokenizer/merges.txt'), 'utf8'),
  };
  const fakeFetch = (async (url: string) => {
    requested.push(url);
    const name = url.split('/').pop()!;
    if (!(name in files)) return new Response('not found', { status: 404 });
    return new Response(files[name], { status: 200, headers: { 'x-repo-commit': 'c0ffee', etag: `"etag-${name.replace('.', '-')}"` } });
  }) as unknown as typeof fetch;
  const ref = { path: fx('tiny-sd1.safetensors') };
  // The server's one downloader fetches into the cache (a HEAD for each file's metadata, then its GET); the engine reads it.
  await ensureTokenizers(ref, { hfCacheDir: cache, endpoint: 'https://huggingface.co', fetchImpl: fakeFetch });
  const m = await loadModel(ref, { hashCacheFile: null, hfCacheDir: cache });
  const repo = join(cache, 'models--openai--clip-vit-large-patch14');
  assert.deepEqual(m.tokenizerDirs, [join(repo, 'snapshots', 'c0ffee', '')]);
  assert.equal(readFileSync(join(repo, 'refs', 'main'), 'utf8'), 'c0ffee');
  assert.equal(readFileSync(join(repo, 'snapshots', 'c0ffee', 'vocab.json'), 'utf8'), files['vocab.json']);
  assert.equal(readlinkSync(join(repo, 'snapshots', 'c0ffee', 'merges.txt')), join('..', '..', 'blobs', 'etag-merges-txt'));
  assert.ok(!existsSync(join(repo, 'snapshots', 'c0ffee', 'special_tokens_map.json')));
  assert.deepEqual(
    [...new Set(requested)],
    [
      'https://huggingface.co/openai/clip-vit-large-patch14/resolve/main/vocab.json',
      'https://huggingface.co/openai/clip-vit-large-patch14/resolve/main/merges.txt',
      'https://huggingface.co/openai/clip-vit-large-patch14/resolve/main/special_tokens_map.json',
      'https://huggingface.co/openai/clip-vit-large-patch14/resolve/main/tokenizer_config.json',
    ],
  );
  requested.length = 0;
  await ensureTokenizers(ref, { hfCacheDir: cache, endpoint: 'https://huggingface.co', fetchImpl: fakeFetch });
  await loadModel(ref, { hashCacheFile: null, hfCacheDir: cache });
  assert.deepEqual(requested, [], 'second load uses the cache');
});

// ---------------------------------------------------------------- errors

test('model errors: missing path, pickled file, folder without model_index, pickled-only folder, partial checkpoint', async () => {
  await assert.rejects(loadModel({ path: join(dir, 'nope.safetensors') }, opts), /nope\.safetensors: model not found/);
  const ckpt = join(dir, 'model.ckpt');
  writeFileSync(ckpt, Uint8Array.of(0x50, 0x4b, 3, 4));
  // .ckpt files are now read by the restricted pickle reader; this one is a cut-off zip, refused as such.
  await assert.rejects(loadModel({ path: ckpt }, opts), /model\.ckpt: corrupt or unsupported zip archive: no end-of-central-directory record/);
  const notDiffusers = join(dir, 'just-a-folder');
  mkdirSync(notDiffusers);
  await assert.rejects(loadModel({ path: notDiffusers }, opts), /just-a-folder: not a diffusers model folder: model_index\.json is missing/);

  const pickledFolder = join(dir, 'pickled-folder');
  cpSync(fx('tiny-sd1'), pickledFolder, { recursive: true });
  rmSync(join(pickledFolder, 'unet', 'diffusion_pytorch_model.safetensors'));
  writeFileSync(join(pickledFolder, 'unet', 'diffusion_pytorch_model.bin'), Uint8Array.of(0x80, 2));
  // .bin-only folders are now read by the restricted pickle reader (they used to be refused outright): this cut-off
  // pickle stream is refused as such, and a .bin naming a forbidden global is refused by that global's name.
  await assert.rejects(loadModel({ path: pickledFolder }, opts), /diffusion_pytorch_model\.bin: truncated file: 2 bytes/);
  copyFileSync(fx('tiny-upscalers/malicious-system.pth'), join(pickledFolder, 'unet', 'diffusion_pytorch_model.bin'));
  await assert.rejects(
    loadModel({ path: pickledFolder }, opts),
    /diffusion_pytorch_model\.bin: refused: the pickle names the global "posix system".*nothing was executed/s,
  );

  const vaeOnly = join(dir, 'vae-only.safetensors');
  copyTensors(vaeOnly, [{ file: SafetensorsFile.open(fx('tiny-sd1.safetensors')), rename: (k) => (k.startsWith('first_stage_model.') ? k : undefined) }]);
  await assert.rejects(loadModel({ path: vaeOnly }, opts), /no UNet weights \(model\.diffusion_model\.\*\): this is not a full Stable Diffusion checkpoint/);
});

// ---------------------------------------------------------------- pickled (.bin) diffusers folders

test("a diffusers folder of .bin weights (zip, legacy, sharded) loads the safetensors folder's weights exactly", async () => {
  const binFolder = join(dir, 'tiny-sd1-bin');
  writePickledFolder(fx('tiny-sd1'), binFolder);
  const [bin, ref] = [await loadModel({ path: binFolder }, opts), await loadModel({ path: fx('tiny-sd1') }, opts)];
  assert.equal(bin.format, 'diffusers');
  assert.equal(bin.family, 'sd1');
  assert.deepEqual([bin.unetConfig, bin.vaeConfig, bin.textEncoders[0]!.config], [ref.unetConfig, ref.vaeConfig, ref.textEncoders[0]!.config]);
  assert.deepEqual(bin.warnings, ref.warnings);
  assertSameWeights(bin.unet, ref.unet, 'unet');
  assertSameWeights(bin.vae, ref.vae, 'vae');
  assertSameWeights(bin.textEncoders[0]!.weights, ref.textEncoders[0]!.weights, 'text_encoder');
  // The A1111 hash of a folder is its UNet file's sha256, whatever format that file is.
  const unetBin = readFileSync(join(binFolder, 'unet', 'diffusion_pytorch_model.bin'));
  assert.equal(await bin.hash(), createHash('sha256').update(unetBin).digest('hex').slice(0, 10));
});

test('safetensors wins over .bin when both exist; broken shard indexes are refused naming the index', async () => {
  const both = join(dir, 'tiny-sd1-both');
  cpSync(fx('tiny-sd1'), both, { recursive: true });
  // A .bin beside the safetensors is never opened: not even a forbidden global in it is seen.
  copyFileSync(fx('tiny-upscalers/malicious-system.pth'), join(both, 'unet', 'diffusion_pytorch_model.bin'));
  copyFileSync(fx('tiny-upscalers/malicious-system.pth'), join(both, 'text_encoder', 'pytorch_model.bin'));
  const m = await loadModel({ path: both }, opts);
  assertSameWeights(m.unet, (await loadModel({ path: fx('tiny-sd1') }, opts)).unet, 'unet');

  const sharded = join(dir, 'tiny-sd1-bad-index');
  writePickledFolder(fx('tiny-sd1'), sharded);
  const index = join(sharded, 'text_encoder', 'pytorch_model.bin.index.json');
  for (const [weightMap, pattern] of [
    [
      { 'text_model.final_layer_norm.weight': '../../tiny-sd1-both/unet/diffusion_pytorch_model.bin' },
      /weight_map names "\.\.\/\.\.\/tiny-sd1-both.*expected a file name in the same folder/,
    ],
    [{ 'text_model.final_layer_norm.weight': 7 }, /weight_map names 7, expected a file name/],
    [null, /pytorch_model\.bin\.index\.json: has no weight_map/],
    [{ 'text_model.final_layer_norm.weight': 'pytorch_model-00009-of-00009.bin' }, /pytorch_model-00009-of-00009\.bin: file not found/],
  ] as const) {
    writeFileSync(index, JSON.stringify({ weight_map: weightMap }));
    await assert.rejects(loadModel({ path: sharded }, opts), pattern);
  }
  rmSync(index);
  await assert.rejects(loadModel({ path: sharded }, opts), /text_encoder: no weights: expected model\.safetensors .*PyTorch's pytorch_model\.bin/);
});
