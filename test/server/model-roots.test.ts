// The model folders people already have, built from the tiny fixtures in a temp dir: an AUTOMATIC1111 webui
// (models/Stable-diffusion, Lora, LyCORIS, VAE, ESRGAN, RealESRGAN; embeddings/ at the webui root), a ComfyUI
// models/ folder, and a Hugging Face cache. Each is found with the right names (sub-folders kept), nothing is
// created inside them, and `kiln models` lists kind, family and size.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, cpSync, mkdirSync, readdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ModelRegistry } from '../../src/server/models/registry.ts';
import { tempDir } from '../queue/helpers.ts';

const FIX = fileURLToPath(new URL('../fixtures/', import.meta.url));
const BIN = fileURLToPath(new URL('../../bin/kiln.js', import.meta.url));

function put(root: string, rel: string, fixture: string): void {
  mkdirSync(dirname(join(root, rel)), { recursive: true });
  copyFileSync(join(FIX, fixture), join(root, rel));
}

function a1111(webui: string): string {
  const models = join(webui, 'models');
  put(models, 'Stable-diffusion/tiny-sd1.safetensors', 'tiny-sd1.safetensors');
  put(models, 'Stable-diffusion/SDXL/tiny xl.safetensors', 'tiny-sdxl.safetensors');
  put(models, 'Stable-diffusion/old/tiny-sd1.ckpt', 'tiny-sd1.ckpt');
  put(models, 'Lora/styles/kohya.safetensors', 'loras/tiny-sd1-kohya.safetensors');
  put(models, 'LyCORIS/loha.safetensors', 'loras/tiny-sd1-loha.safetensors');
  put(models, 'VAE/tiny-vae.safetensors', 'tiny-sd1/vae/diffusion_pytorch_model.safetensors');
  put(models, 'ESRGAN/4x-tiny.pth', 'tiny-upscalers/realesrgan-x2.pth');
  mkdirSync(join(models, 'RealESRGAN'), { recursive: true });
  put(webui, 'embeddings/tiny-ti.safetensors', 'embeddings/tiny-ti.safetensors');
  return models;
}

function comfy(root: string): string {
  const models = join(root, 'models');
  put(models, 'checkpoints/sd1/tiny-sd1.safetensors', 'tiny-sd1.safetensors');
  cpSync(join(FIX, 'tiny-sdxl'), join(models, 'checkpoints', 'tiny-sdxl-diffusers'), { recursive: true });
  put(models, 'loras/tiny-sdxl-kohya.safetensors', 'loras/tiny-sdxl-kohya.safetensors');
  put(models, 'vae/v.safetensors', 'tiny-sd1/vae/diffusion_pytorch_model.safetensors');
  mkdirSync(join(models, 'upscale_models'), { recursive: true });
  mkdirSync(join(models, 'embeddings'), { recursive: true });
  return models;
}

/** A diffusers repo in the HF cache layout: blobs, a snapshot of links, refs/main. */
function hfCache(cache: string, repo: string, fixtureDir: string): void {
  const root = join(cache, `models--${repo.replace('/', '--')}`);
  const commit = '0123456789abcdef0123456789abcdef01234567';
  const walk = (rel: string) => {
    for (const f of readdirSync(join(FIX, fixtureDir, rel), { withFileTypes: true })) {
      const r = join(rel, f.name);
      if (f.isDirectory()) walk(r);
      else {
        const blob = join(root, 'blobs', r.replace(/\//g, '_'));
        mkdirSync(dirname(blob), { recursive: true });
        copyFileSync(join(FIX, fixtureDir, r), blob);
        const link = join(root, 'snapshots', commit, r);
        mkdirSync(dirname(link), { recursive: true });
        symlinkSync(blob, link);
      }
    }
  };
  walk('');
  mkdirSync(join(root, 'refs'), { recursive: true });
  writeFileSync(join(root, 'refs', 'main'), commit);
}

const listing = (reg: ModelRegistry, kind: Parameters<ModelRegistry['list']>[0]) => reg.list(kind).map((e) => e.name);
const tree = (dir: string): string[] =>
  readdirSync(dir, { withFileTypes: true }).flatMap((f) =>
    f.isDirectory() ? [`${f.name}/`, ...tree(join(dir, f.name)).map((x) => `${f.name}/${x}`)] : [f.name],
  );

test('A1111 models/ folder: every kind, sub-folders kept in names, embeddings at the webui root, nothing created', async () => {
  const t = tempDir('kiln-a1111-');
  try {
    const models = a1111(join(t.dir, 'webui'));
    const before = tree(join(t.dir, 'webui'));
    const reg = new ModelRegistry({
      modelsDir: models,
      cacheDir: join(t.dir, 'cache'),
      hfCacheDir: join(t.dir, 'hf'),
      model: 'SDXL/tiny xl',
      modelAliases: {},
    });
    assert.equal(reg.roots[0]!.layout, 'a1111');
    assert.deepEqual(listing(reg, 'checkpoint'), ['SDXL/tiny xl', 'old/tiny-sd1', 'tiny-sd1']);
    assert.deepEqual(listing(reg, 'lora'), ['styles/kohya', 'loha']);
    assert.deepEqual(listing(reg, 'vae'), ['tiny-vae']);
    assert.deepEqual(listing(reg, 'upscaler'), ['4x-tiny']);
    assert.equal(listing(reg, 'embedding').length, 1);
    assert.equal(reg.default?.name, 'SDXL/tiny xl');
    // A1111 style names with the extension resolve too.
    assert.equal((await reg.resolve('SDXL/tiny xl.safetensors')).path, join(models, 'Stable-diffusion', 'SDXL', 'tiny xl.safetensors'));
    assert.deepEqual(tree(join(t.dir, 'webui')), before, 'Kiln created nothing inside the A1111 folder');
    // A download goes into the existing folder of its kind; a kind without a folder is refused, not created.
    assert.equal(reg.folderFor('lora'), join(models, 'Lora'));
    assert.equal(reg.folderFor('upscaler'), join(models, 'ESRGAN'));
  } finally {
    t.remove();
  }
});

test('ComfyUI models/ folder and a second root: checkpoints (files and diffusers folders), loras, vae; nothing created', () => {
  const t = tempDir('kiln-comfy-');
  try {
    const models = comfy(join(t.dir, 'ComfyUI'));
    const own = join(t.dir, 'kiln-models');
    const before = tree(models);
    const reg = new ModelRegistry({ modelsDir: own, modelRoots: [models], cacheDir: join(t.dir, 'cache'), hfCacheDir: join(t.dir, 'hf'), modelAliases: {} });
    assert.deepEqual(
      reg.roots.map((r) => [r.layout, r.ownedByKiln]),
      [
        ['kiln', true],
        ['comfyui', false],
      ],
    );
    assert.deepEqual(listing(reg, 'checkpoint'), ['sd1/tiny-sd1', 'tiny-sdxl-diffusers']);
    assert.deepEqual(listing(reg, 'lora'), ['tiny-sdxl-kohya']);
    assert.deepEqual(listing(reg, 'vae'), ['v']);
    assert.deepEqual(tree(models), before);
    // Kiln's own root (created by Kiln, so laid out by it) gets its folders.
    assert.deepEqual(readdirSync(own).sort(), ['checkpoints', 'clip_vision', 'embeddings', 'loras', 'upscalers', 'vae']);
    const fresh = new ModelRegistry({ modelsDir: join(t.dir, 'not-yet-there'), cacheDir: join(t.dir, 'c2'), modelAliases: {} });
    assert.ok(fresh.roots[0]!.ownedByKiln);
  } finally {
    t.remove();
  }
});

test('a foreign root without a folder for a kind: the download is refused with what to create, nothing is made', () => {
  const t = tempDir('kiln-foreign-');
  try {
    const models = join(t.dir, 'webui', 'models');
    put(models, 'Stable-diffusion/x.safetensors', 'tiny-sd1.safetensors');
    const reg = new ModelRegistry({ modelsDir: models, cacheDir: join(t.dir, 'cache'), modelAliases: {} });
    assert.throws(() => reg.folderFor('lora'), /no lora folder in .*; create one \(loras or Lora or LyCORIS\)/);
    assert.deepEqual(readdirSync(models), ['Stable-diffusion']);
  } finally {
    t.remove();
  }
});

test('Hugging Face cache: a diffusers repo is a checkpoint named by its repo id; kiln models lists kind, family and size', () => {
  const t = tempDir('kiln-hfcache-');
  try {
    const hf = join(t.dir, 'hf');
    hfCache(hf, 'acme/tiny-sd1', 'tiny-sd1');
    // A tokenizer-only repo is not a checkpoint.
    mkdirSync(join(hf, 'models--openai--clip-vit-large-patch14', 'snapshots', 'x'), { recursive: true });
    const models = a1111(join(t.dir, 'webui'));
    const reg = new ModelRegistry({ modelsDir: join(t.dir, 'own'), cacheDir: join(t.dir, 'cache'), hfCacheDir: hf, model: 'acme/tiny-sd1', modelAliases: {} });
    assert.equal(reg.default?.source, 'huggingface');
    assert.equal(reg.default?.name, 'acme/tiny-sd1');
    const r = spawnSync(process.execPath, [BIN, 'models', '--data-dir', t.dir, '--models-dir', models, '--hf-cache', hf], {
      encoding: 'utf8',
      timeout: 120_000,
    });
    assert.equal(r.status, 0, r.stderr);
    const line = (name: string) => r.stdout.split('\n').find((l) => l.split(/\s{2,}/)[1] === name) ?? '';
    assert.match(line('acme/tiny-sd1'), /^checkpoint\s+acme\/tiny-sd1\s+sd1\s+8\.\d MiB\s+diffusers/);
    assert.match(line('SDXL/tiny xl'), /^checkpoint\s+SDXL\/tiny xl\s+sdxl\s+1\.\d MiB\s+safetensors/);
    assert.match(line('styles/kohya'), /^lora\s+styles\/kohya\s+sd1\s+\d+\.\d KiB/);
    assert.match(r.stdout, /models root: .*webui\/models \(a1111 layout\)/);
  } finally {
    t.remove();
  }
});
