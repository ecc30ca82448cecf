import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ModelRegistry } from '../../src/server/models/registry.ts';
import { ensureHfModel, isHfRepoId, selectDiffusersFiles } from '../../src/server/models/hf.ts';
import { loadConfig } from '../../src/server/config.ts';
import { tempDir } from '../queue/helpers.ts';
import { startHubServer } from '../download/hub-server.ts';

test('registry: scans the models folders, applies labels, resolves names and labels only (never paths)', async () => {
  const t = tempDir();
  try {
    const models = join(t.dir, 'models');
    mkdirSync(join(models, 'checkpoints', 'my-diffusers'), { recursive: true });
    writeFileSync(join(models, 'checkpoints', 'my-diffusers', 'model_index.json'), '{}');
    mkdirSync(join(models, 'checkpoints', 'not-a-model'), { recursive: true });
    mkdirSync(join(models, 'loras'), { recursive: true });
    writeFileSync(join(models, 'checkpoints', 'single.safetensors'), '');
    writeFileSync(join(models, 'checkpoints', 'pickled.ckpt'), '');
    // A .ckpt twin of a .safetensors file is not listed a second time.
    writeFileSync(join(models, 'checkpoints', 'single.ckpt'), '');
    writeFileSync(join(models, 'loras', 'style.safetensors'), '');
    const reg = new ModelRegistry({
      modelsDir: models,
      cacheDir: join(t.dir, 'cache'),
      model: 'Pretty',
      modelAliases: { Pretty: 'single', 'My D': 'my-diffusers' },
    });
    assert.deepEqual(
      reg.list().map((m) => [m.name, m.labels, m.format]),
      [
        ['my-diffusers', ['My D'], 'diffusers'],
        // .ckpt checkpoints are listed now: the engine reads them with its restricted (no-code) pickle reader.
        ['pickled', [], 'pickle'],
        ['single', ['Pretty'], 'safetensors'],
      ],
    );
    assert.deepEqual(
      reg.list('lora').map((m) => m.name),
      ['style'],
    );
    assert.equal(reg.default?.name, 'single');
    assert.equal((await reg.resolve(undefined)).path, join(models, 'checkpoints', 'single.safetensors'));
    assert.equal((await reg.resolve('my d')).path, join(models, 'checkpoints', 'my-diffusers'));
    assert.equal((await reg.resolve('single.safetensors')).path, join(models, 'checkpoints', 'single.safetensors'));
    assert.equal((await reg.resolve('pickled')).path, join(models, 'checkpoints', 'pickled.ckpt'));
    await assert.rejects(reg.resolve('nope'), /unknown model "nope"; available: my-diffusers, My D, pickled, single, Pretty/);
    await assert.rejects(reg.resolve(join(models, 'checkpoints', 'single.safetensors')), /unknown model/);
    for (const folder of ['vae', 'embeddings', 'upscalers'])
      assert.deepEqual(reg.list(folder === 'vae' ? 'vae' : folder === 'embeddings' ? 'embedding' : 'upscaler'), []);
  } finally {
    t.remove();
  }
});

test('Hugging Face: repo ids, file selection, and an offline error that says what to download and where', async () => {
  assert.ok(isHfRepoId('runwayml/stable-diffusion-v1-5'));
  assert.ok(!isHfRepoId('../etc/passwd'));
  assert.ok(!isHfRepoId('/abs/path'));
  const files = selectDiffusersFiles([
    'model_index.json',
    'unet/config.json',
    'unet/diffusion_pytorch_model.safetensors',
    'unet/diffusion_pytorch_model.fp16.safetensors',
    'unet/diffusion_pytorch_model.bin',
    'text_encoder/model.safetensors',
    'text_encoder/config.json',
    'tokenizer/vocab.json',
    'tokenizer/merges.txt',
    'scheduler/scheduler_config.json',
    'safety_checker/model.safetensors',
    'v1-5-pruned.ckpt',
  ]);
  assert.deepEqual(files.sort(), [
    'model_index.json',
    'scheduler/scheduler_config.json',
    'text_encoder/config.json',
    'text_encoder/model.safetensors',
    'tokenizer/merges.txt',
    'tokenizer/vocab.json',
    'unet/config.json',
    'unet/diffusion_pytorch_model.safetensors',
  ]);
  const t = tempDir();
  try {
    const err = await ensureHfModel('owner/some-model', t.dir, { offline: true }).catch((e: Error) => e);
    assert.ok(err instanceof Error);
    assert.match(err.message, /cannot download Hugging Face model owner\/some-model: the server is offline/);
    // Where to put it: the standard Hugging Face cache (models--owner--name), shared with diffusers and ComfyUI.
    assert.ok(err.message.includes(join(t.dir, 'models--owner--some-model')), 'says where to put it');
    assert.match(err.message, /huggingface-cli download owner\/some-model/);
    // A failing network says the same, with the reason.
    const netErr = await ensureHfModel('owner/other', t.dir, {
      fetchImpl: (async () => {
        throw new Error('getaddrinfo ENOTFOUND huggingface.co');
      }) as typeof fetch,
    }).catch((e: Error) => e);
    assert.match((netErr as Error).message, /ENOTFOUND[\s\S]*huggingface-cli download owner\/other/);
  } finally {
    t.remove();
  }
});

test('Hugging Face download: fetches the selected files once into the HF cache, where the registry finds the repo id', async () => {
  const t = tempDir();
  const hub = await startHubServer({
    'o/m': {
      commit: 'e'.repeat(40),
      files: { 'model_index.json': Buffer.from('{}'), 'unet/config.json': Buffer.from('{"a":1}'), 'README.md': Buffer.from('x') },
    },
  });
  try {
    const hfCache = join(t.dir, 'hf');
    const dir = await ensureHfModel('o/m', hfCache, { endpoint: hub.url });
    assert.equal(dir, join(hfCache, 'models--o--m', 'snapshots', 'e'.repeat(40)));
    const served = hub.requests.filter((r) => r.url.includes('/resolve/')).map((r) => r.url);
    assert.deepEqual([...new Set(served)].sort(), ['/o/m/resolve/main/model_index.json', '/o/m/resolve/main/unet/config.json']);
    const before = hub.requests.length;
    await ensureHfModel('o/m', hfCache, { endpoint: hub.url });
    assert.equal(hub.requests.length, before, 'cached: no second download');
    const reg = new ModelRegistry({ modelsDir: join(t.dir, 'models'), cacheDir: t.dir, hfCacheDir: hfCache, model: 'o/m', modelAliases: {} });
    assert.equal(reg.default?.source, 'huggingface');
  } finally {
    await hub.close();
    t.remove();
  }
});

test('config: YAML file in the data dir, env beats file, unknown values name the option', () => {
  const t = tempDir();
  try {
    writeFileSync(join(t.dir, 'kiln.config.yaml'), 'port: 9100\nmodel: foo\nlimits:\n  maxSteps: 40\nmodelAliases:\n  Nice: foo\n');
    const cfg = loadConfig({ flags: { 'data-dir': t.dir }, env: { KILN_MODEL: 'bar' } });
    assert.equal(cfg.port, 9100);
    assert.equal(cfg.model, 'bar');
    assert.equal(cfg.limits.maxSteps, 40);
    assert.deepEqual(cfg.modelAliases, { Nice: 'foo' });
    assert.equal(cfg.modelsDir, join(t.dir, 'models'));
    writeFileSync(join(t.dir, 'kiln.config.yaml'), 'device: tpu\n');
    assert.throws(() => loadConfig({ flags: { 'data-dir': t.dir }, env: {} }), /device \(config file\): must be one of cpu, cuda, tensorrt, webgpu/);
    writeFileSync(join(t.dir, 'kiln.config.yaml'), 'port: 1\n');
    assert.throws(() => loadConfig({ flags: { 'data-dir': t.dir, 'tls-cert': 'c.pem' }, env: {} }), /give both --tls-cert and --tls-key/);
  } finally {
    t.remove();
  }
});

test('registry: pickled LoRAs and embeddings are listed (read later by the restricted unpickler); other files are not', () => {
  const t = tempDir();
  try {
    const models = join(t.dir, 'models');
    mkdirSync(join(models, 'loras'), { recursive: true });
    mkdirSync(join(models, 'embeddings'), { recursive: true });
    for (const f of ['kohya.safetensors', 'old-style.pt', 'notes.txt']) writeFileSync(join(models, 'loras', f), '');
    for (const f of ['tiny-ti.pt', 'diffusers.bin', 'readme.md']) writeFileSync(join(models, 'embeddings', f), '');
    const reg = new ModelRegistry({ modelsDir: models, cacheDir: join(t.dir, 'cache'), modelAliases: {} });
    assert.deepEqual(
      reg.list('lora').map((m) => [m.name, m.format]),
      [
        ['kohya', 'safetensors'],
        ['old-style', 'pickle'],
      ],
    );
    assert.deepEqual(
      reg.list('embedding').map((m) => [m.name, m.format]),
      [
        ['diffusers', 'pickle'],
        ['tiny-ti', 'pickle'],
      ],
    );
  } finally {
    t.remove();
  }
});

test('registry: GGUF checkpoints (quantised Flux transformers) are listed with their format', () => {
  const t = tempDir();
  try {
    const models = join(t.dir, 'models');
    mkdirSync(join(models, 'checkpoints'), { recursive: true });
    writeFileSync(join(models, 'checkpoints', 'flux1-schnell-Q4_0.gguf'), '');
    writeFileSync(join(models, 'checkpoints', 'notes.txt'), '');
    const reg = new ModelRegistry({ modelsDir: models, cacheDir: join(t.dir, 'cache'), modelAliases: {} });
    assert.deepEqual(
      reg.list().map((m) => [m.name, m.format]),
      [['flux1-schnell-Q4_0', 'gguf']],
    );
  } finally {
    t.remove();
  }
});
