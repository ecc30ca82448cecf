// `kiln pull` presets for the files Kiln's features need, against the local hub server (Hugging Face repos, and
// GitHub release assets through a fetch that maps https://github.com/ onto it): each preset asks for the published
// URL and lands where the feature's catalog reads it, in Kiln's folders or in an A1111 folder's own; `kiln pull
// --list` shows every preset.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { testConfig } from '../../src/server/config.ts';
import { FaceRestorerCatalog } from '../../src/server/models/face-restorers.ts';
import { LAYERDIFFUSE_DIFFUSERS_FILES, layerDiffuseFiles } from '../../src/server/models/layerdiffuse.ts';
import { featureFolderIn, PULL_PRESETS, pull, type PullSource } from '../../src/server/models/pull.ts';
import { ModelRegistry } from '../../src/server/models/registry.ts';
import { findTaesdDecoders } from '../../src/server/models/taesd.ts';
import { tempDir } from '../queue/helpers.ts';
import { startHubServer, type HubServer } from './hub-server.ts';

const GITHUB = 'https://github.com/';
const bytes = (name: string) => Buffer.from(`weights of ${name}`);

/** Every file the presets name: HF repos by repo, release assets by URL path. */
function hubContents() {
  const repos: Record<string, { commit: string; files: Record<string, Buffer> }> = {};
  const releases: Record<string, Buffer> = {};
  for (const preset of Object.values(PULL_PRESETS)) {
    for (const s of preset.sources) {
      if (s.type === 'hf' && s.file) {
        repos[s.repo] ??= { commit: 'c'.repeat(40), files: {} };
        repos[s.repo]!.files[s.file] = bytes(s.file);
      } else if (s.type === 'url') {
        assert.ok(s.url.startsWith(GITHUB), `${s.url}: presets download from GitHub releases or the HF Hub`);
        releases[`/${s.url.slice(GITHUB.length)}`] = bytes(s.url);
      }
    }
  }
  return { repos, releases };
}

let hub: HubServer;
const tmp = tempDir('kiln-pull-presets-');
const requested: string[] = [];
/** The real downloader's fetch, with GitHub mapped onto the local server; records what was asked for. */
const fetchImpl = ((input: string | URL, init?: RequestInit) => {
  const url = String(input);
  requested.push(url);
  return fetch(url.startsWith(GITHUB) ? `${hub.url}/github/${url.slice(GITHUB.length)}` : url, init);
}) as typeof fetch;

before(async () => {
  const { repos, releases } = hubContents();
  hub = await startHubServer(repos, [], releases);
});
after(async () => {
  await hub.close();
  tmp.remove();
});

function pullInto(modelsDir: string, registry: ModelRegistry, ownedByKiln: boolean, name: string) {
  requested.length = 0;
  return pull(name, {
    folderFor: (k) => registry.folderFor(k),
    featureFolder: featureFolderIn(modelsDir, ownedByKiln),
    hfCacheDir: join(tmp.dir, 'hf'),
    hfEndpoint: hub.url,
    fetchImpl,
  });
}

/** The URL a source is fetched from first: the published GitHub URL, or the Hub's resolve URL. */
const firstUrl = (s: PullSource) => (s.type === 'url' ? s.url : s.type === 'hf' ? `${hub.url}/${s.repo}/resolve/main/${s.file}` : '');

test('every file preset fetches its published URL and lands where its feature reads it (Kiln layout)', async () => {
  const dataDir = join(tmp.dir, 'kiln');
  const config = testConfig(dataDir);
  const registry = new ModelRegistry(config);
  const modelsDir = config.modelsDir;
  const landed: Record<string, string[]> = {};
  const everRequested = new Set<string>();
  for (const [name, preset] of Object.entries(PULL_PRESETS)) {
    if (preset.sources.some((s) => s.type === 'hf' && !s.file)) continue; // whole diffusers repos: download.test.ts
    const got = await pullInto(modelsDir, registry, true, name);
    assert.equal(got.length, preset.sources.length, name);
    // A file an earlier preset already fetched (the face helpers) is not fetched again.
    for (const url of requested) everRequested.add(url);
    for (const s of preset.sources) assert.ok(everRequested.has(firstUrl(s)), `${name}: asked for ${firstUrl(s)}; got ${requested.join(', ')}`);
    for (const g of got) assert.ok(existsSync(g.path) && readFileSync(g.path).length > 0, `${name}: ${g.path}`);
    landed[name] = got.map((g) => relative(modelsDir, g.path));
  }
  assert.deepEqual(landed.layerdiffuse, [
    'layerdiffuse/layer_xl_transparent_attn.safetensors',
    'layerdiffuse/layer_xl_transparent_conv.safetensors',
    'layerdiffuse/vae_transparent_decoder.safetensors',
  ]);
  assert.deepEqual(landed['layerdiffuse-diffusers'], [
    `layerdiffuse/${LAYERDIFFUSE_DIFFUSERS_FILES.attention}`,
    `layerdiffuse/${LAYERDIFFUSE_DIFFUSERS_FILES.decoder}`,
  ]);
  assert.deepEqual(landed['face-restoration'], [
    'codeformer/codeformer-v0.1.0.pth',
    'gfpgan/GFPGANv1.4.pth',
    'facedetect/detection_Resnet50_Final.pth',
    'facedetect/parsing_parsenet.pth',
  ]);
  assert.deepEqual(landed.taesd, ['vae-approx/taesd_decoder.pth']);
  assert.deepEqual(landed.taesdxl, ['vae-approx/taesdxl_decoder.pth']);
  assert.deepEqual(landed['realesrgan-x4'], ['upscalers/RealESRGAN_x4plus.pth']);
  assert.ok(landed['clip-vit-base-patch32']!.includes('clip_vision/openai/clip-vit-base-patch32/config.json'));
  assert.deepEqual(landed['sdxl-vae-fp16-fix'], ['vae/sdxl_vae.safetensors']);

  // The catalogs find them.
  for (const method of ['attention', 'conv'] as const) {
    const files = layerDiffuseFiles(modelsDir, method);
    assert.ok(files.patch.includes(method === 'attention' ? 'attn' : 'conv') && files.decoder.endsWith('vae_transparent_decoder.safetensors'));
  }
  const faces = new FaceRestorerCatalog(modelsDir);
  assert.match(faces.resolve('CodeFormer').restorerPath, /codeformer-v0\.1\.0\.pth$/);
  assert.match(faces.resolve('GFPGAN').restorerPath, /GFPGANv1\.4\.pth$/);
  assert.deepEqual(Object.keys(findTaesdDecoders(modelsDir)).sort(), ['sd', 'sdxl']);
  registry.refresh();
  for (const upscaler of ['RealESRGAN_x4plus', 'RealESRGAN_x4plus_anime_6B', 'RealESRGAN_x2plus', 'realesr-general-x4v3'])
    assert.ok(
      registry.list('upscaler').some((e) => e.name === upscaler),
      `${upscaler} listed: ${registry
        .list('upscaler')
        .map((e) => e.name)
        .join(', ')}`,
    );
  assert.ok(registry.list('clip_vision').some((e) => e.name.includes('clip-vit-base-patch32')));
});

test('in an A1111 models folder, presets use its folders (Codeformer/, VAE-approx/) and never create one of their own', async () => {
  const modelsDir = join(tmp.dir, 'webui', 'models');
  for (const f of ['Stable-diffusion', 'Codeformer', 'GFPGAN', 'VAE-approx', 'ESRGAN']) mkdirSync(join(modelsDir, f), { recursive: true });
  const registry = new ModelRegistry(testConfig(join(tmp.dir, 'webui-data'), { modelsDir }));
  assert.equal(registry.roots[0]!.ownedByKiln, false);
  const codeformer = await pullInto(modelsDir, registry, false, 'codeformer');
  assert.deepEqual(
    codeformer.map((g) => relative(modelsDir, g.path)),
    ['Codeformer/codeformer-v0.1.0.pth', 'Codeformer/detection_Resnet50_Final.pth', 'Codeformer/parsing_parsenet.pth'],
  );
  assert.ok(new FaceRestorerCatalog(modelsDir).resolve('CodeFormer'));
  assert.deepEqual(
    (await pullInto(modelsDir, registry, false, 'taesdxl')).map((g) => relative(modelsDir, g.path)),
    ['VAE-approx/taesdxl_decoder.pth'],
  );
  assert.deepEqual(
    (await pullInto(modelsDir, registry, false, 'realesrgan-x4')).map((g) => relative(modelsDir, g.path)),
    ['ESRGAN/RealESRGAN_x4plus.pth'],
  );
  await assert.rejects(
    pullInto(modelsDir, registry, false, 'layerdiffuse'),
    /no layerdiffuse folder in .*create .*layerdiffuse — Kiln does not create folders/,
  );
  assert.ok(!existsSync(join(modelsDir, 'layerdiffuse')));
});

test('kiln pull --list shows every preset with its kind', () => {
  const bin = new URL('../../bin/kiln.js', import.meta.url).pathname;
  const out = spawnSync(process.execPath, [bin, 'pull', '--list'], { encoding: 'utf8', timeout: 60_000 });
  assert.equal(out.status, 0, out.stderr);
  for (const [name, preset] of Object.entries(PULL_PRESETS)) assert.match(out.stdout, new RegExp(`^  ${name.replace(/[.+]/g, '\\$&')} +${preset.kind} `, 'm'));
});
