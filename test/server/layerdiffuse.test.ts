// Transparent images (LayerDiffuse) through the surfaces with the real engine, on tiny-sdxl with the 8x VAE and
// the tiny LayerDiffuse files installed under the released names in models/layerdiffuse/: native `transparent`
// (RGBA PNG with `parameters`, WebP keeps alpha, JPEG refused naming the field), OpenAI background, seed 000's
// routes (always transparent), and the 4xx naming the missing files. Then seed 000's own Python client (RunPod
// "Test 5", unchanged except the host and a 64 px size) against a spawned `kiln serve`.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdirSync, readFileSync, renameSync, symlinkSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import sharp from 'sharp';
import type { FastifyInstance } from 'fastify';
import { buildApp } from '../../src/server/app.ts';
import { testConfig } from '../../src/server/config.ts';
import { createEngine } from '../../src/engine/engine.ts';
import { LAYERDIFFUSE_FILES } from '../../src/server/models/layerdiffuse.ts';
import { readInfotext } from '../../src/storage/encode.ts';
import { tempDir } from '../queue/helpers.ts';
import { spawnServer } from './process.ts';

const FIX = resolve('test/fixtures');
const t = tempDir('kiln-layerdiffuse-');
const models = join(t.dir, 'models');
const ldFolder = join(models, 'layerdiffuse');
let app: FastifyInstance;
let engine: ReturnType<typeof createEngine>;

/** tiny-sdxl as a diffusers folder whose vae/ is the 8x VAE UNet1024 needs, plus the tiny files under the released names. */
function installModels(): void {
  const sdxl = join(models, 'checkpoints', 'tiny-sdxl-f8');
  mkdirSync(sdxl, { recursive: true });
  for (const part of ['model_index.json', 'scheduler', 'text_encoder', 'text_encoder_2', 'tokenizer', 'tokenizer_2', 'unet'])
    symlinkSync(join(FIX, 'tiny-sdxl', part), join(sdxl, part));
  symlinkSync(join(FIX, 'layerdiffuse', 'tiny-sdxl-vae-f8'), join(sdxl, 'vae'));
  mkdirSync(ldFolder, { recursive: true });
  copyFileSync(join(FIX, 'layerdiffuse', 'tiny-layer-xl-transparent-attn.safetensors'), join(ldFolder, LAYERDIFFUSE_FILES.attention));
  copyFileSync(join(FIX, 'layerdiffuse', 'tiny-transparent-decoder.safetensors'), join(ldFolder, LAYERDIFFUSE_FILES.decoder));
}

before(async () => {
  installModels();
  engine = createEngine({ cacheDir: join(t.dir, 'graphs') });
  app = await buildApp(testConfig(t.dir, { model: 'tiny-sdxl-f8', seed000Transparent: true }), { engine: engine as never });
  await app.ready();
  await app.kiln.engineReady;
});
after(async () => {
  await app.close();
  await engine.close();
  t.remove();
});

const small = { prompt: 'a glass bottle', width: 64, height: 64, steps: 4, seed: 3, sampler: 'Euler a' };
const post = (url: string, payload: object) => app.inject({ method: 'POST', url, payload });

/** The alpha channel of an image file: present, and a real matte (not all 0, not all 255). */
async function assertRealMatte(file: Buffer, what: string): Promise<void> {
  const { data, info } = await sharp(file).raw().toBuffer({ resolveWithObject: true });
  assert.equal(info.channels, 4, `${what}: has an alpha channel`);
  const alpha = data.filter((_, i) => i % 4 === 3);
  assert.ok(alpha.some((a) => a !== 0) && alpha.some((a) => a !== 255), `${what}: alpha is a matte (min ${Math.min(...alpha)}, max ${Math.max(...alpha)})`);
}

test('native transparent: an RGBA PNG with its parameters text; WebP keeps the alpha; JPEG is refused naming the field', async () => {
  const png = await post('/v1/generate', { ...small, transparent: true });
  assert.equal(png.statusCode, 200, png.body);
  const bytes = Buffer.from(png.json().images[0].base64, 'base64');
  await assertRealMatte(bytes, 'png');
  assert.match((await readInfotext(bytes)) ?? '', /^a glass bottle\n.*Steps: 4, Sampler: Euler a/s);
  const fast = await post('/v1/generate', { ...small, transparent: { tta: false }, output: { format: 'webp', quality: 90 } });
  assert.equal(fast.statusCode, 200, fast.body);
  const webp = Buffer.from(fast.json().images[0].base64, 'base64');
  assert.equal((await sharp(webp).metadata()).format, 'webp');
  await assertRealMatte(webp, 'webp');
  const jpeg = await post('/v1/generate', { ...small, transparent: true, output: { format: 'jpeg' } });
  assert.equal(jpeg.statusCode, 400, jpeg.body);
  assert.equal(jpeg.json().error.field, 'output.format');
  assert.match(jpeg.json().error.message, /JPEG has no alpha channel/);
});

test('native transparent {preview: true}: each image also gets its checkerboard preview, an RGB PNG served like the image', async () => {
  const res = await post('/v1/generate', { ...small, transparent: { preview: true, tta: false } });
  assert.equal(res.statusCode, 200, res.body);
  const image = res.json().images[0];
  await assertRealMatte(Buffer.from(image.base64, 'base64'), 'image'); // so the composite check below means something
  const rgba = await sharp(Buffer.from(image.base64, 'base64')).raw().toBuffer();
  const { preview } = image;
  assert.equal(preview.format, 'png');
  assert.match(preview.name, /-0-preview\.png$/);
  const served = await app.inject(new URL(preview.url).pathname);
  assert.equal(served.statusCode, 200);
  assert.equal(served.headers['content-type'], 'image/png');
  assert.deepEqual(served.rawPayload, Buffer.from(preview.base64, 'base64'));
  const { data, info } = await sharp(served.rawPayload).raw().toBuffer({ resolveWithObject: true });
  assert.deepEqual([info.channels, info.width, info.height], [3, 64, 64]);
  // The reference's vis = fg*alpha + checker*(1-alpha), 64-px cells of grey 0.45 / 0.55 (one cell at 64 px: 0.45),
  // here from the 8-bit RGBA, so within the two roundings.
  let worst = 0;
  for (let i = 0; i < 64 * 64; i++) {
    const a = rgba[i * 4 + 3]! / 255;
    for (let c = 0; c < 3; c++) worst = Math.max(worst, Math.abs(data[i * 3 + c]! - ((rgba[i * 4 + c]! / 255) * a + 0.45 * (1 - a)) * 255));
  }
  assert.ok(worst <= 2, `preview differs from the composite by ${worst.toFixed(2)} levels`);
  assert.match((await readInfotext(served.rawPayload)) ?? '', /^a glass bottle\n/);
  const job = (await app.inject(`/v1/jobs/${res.json().id}`)).json();
  assert.equal(job.images[0].preview.name, preview.name, 'the job view carries it too');
  const plain = await post('/v1/generate', { ...small, transparent: { tta: false } });
  assert.equal(plain.json().images[0].preview, undefined, 'no preview unless asked');
});

test('seed 000 routes are always transparent; OpenAI background "transparent" is too', async () => {
  const rp = await post('/runsync', { input: small });
  assert.equal(rp.json().status, 'COMPLETED', rp.body.slice(0, 400));
  await assertRealMatte(Buffer.from(rp.json().output.image_base64, 'base64'), 'runsync');
  const alpha = await post('/alpha/v1/txt2img', small);
  assert.equal(alpha.statusCode, 200, alpha.body);
  const file = await app.inject(new URL(alpha.json().url).pathname);
  await assertRealMatte(file.rawPayload, 'alpha route');
  const oa = await post('/v1/images/generations', { prompt: 'a glass bottle', size: '64x64', background: 'transparent', output_format: 'png' });
  assert.equal(oa.statusCode, 200, oa.body.slice(0, 400));
  assert.equal(oa.json().background, 'transparent');
  await assertRealMatte(Buffer.from(oa.json().data[0].b64_json, 'base64'), 'openai');
  const oaJpeg = await post('/v1/images/generations', { prompt: 'x', size: '64x64', background: 'transparent', output_format: 'jpeg' });
  assert.equal(oaJpeg.statusCode, 400, oaJpeg.body);
  assert.match(oaJpeg.body, /output_format/);
});

test('A1111 alwayson_scripts in the Forge LayerDiffuse shape: enabled -> RGBA, disabled -> RGB, unsupported method and missing conv file -> 4xx', async () => {
  const args = (enabled: boolean, method: string | number) => [enabled, method, 1, 1, null, null, null, 'Crop and Resize', false, '', '', ''];
  const a1111 = (script: object) => post('/sdapi/v1/txt2img', { ...small, sampler_name: 'Euler a', alwayson_scripts: script });
  const on = await a1111({ LayerDiffuse: { args: args(true, '(SDXL) Only Generate Transparent Image (Attention Injection)') } });
  assert.equal(on.statusCode, 200, on.body.slice(0, 400));
  await assertRealMatte(Buffer.from(on.json().images[0], 'base64'), 'a1111');
  const off = await a1111({ layerdiffuse: { args: args(false, 4) } });
  assert.equal(off.statusCode, 200, off.body.slice(0, 400));
  assert.equal((await sharp(Buffer.from(off.json().images[0], 'base64')).metadata()).channels, 3);
  const sd15 = await a1111({ LayerDiffuse: { args: args(true, 0) } });
  assert.equal(sd15.statusCode, 422, sd15.body);
  assert.match(sd15.body, /alwayson_scripts\.LayerDiffuse\.args\[1\]: method 0 is not available/);
  const conv = await a1111({ LayerDiffuse: { args: args(true, 5) } });
  assert.equal(conv.statusCode, 422, conv.body);
  assert.match(conv.body, /alwayson_scripts\.LayerDiffuse: transparent images need LayerDiffuse's layer_xl_transparent_conv\.safetensors, not found/);
});

test('missing LayerDiffuse files: a 4xx before queueing that names them and the folder, on every surface', async () => {
  const aside = `${ldFolder}-aside`;
  renameSync(ldFolder, aside);
  try {
    const before = (await app.inject('/v1/jobs?limit=500')).json().jobs.length;
    const native = await post('/v1/generate', { ...small, transparent: true });
    assert.equal(native.statusCode, 422, native.body);
    assert.equal(native.json().error.field, 'transparent');
    for (const r of [await post('/runsync', { input: small }), await post('/run', { input: small }), await post('/alpha/v1/txt2img', small)]) {
      assert.equal(r.statusCode, 422, r.body);
      assert.match(
        r.body,
        /layer_xl_transparent_attn\.safetensors and vae_transparent_decoder\.safetensors, not found in .*models\/layerdiffuse; download them from https:\/\/huggingface\.co\/LayerDiffusion/,
      );
    }
    assert.equal((await app.inject('/v1/jobs?limit=500')).json().jobs.length, before, 'nothing was queued');
  } finally {
    renameSync(aside, ldFolder);
  }
});

test('files that vanish after submission fail the job as a model-file error naming them', async () => {
  const blocker = (await post('/v1/jobs', { ...small, steps: 150 })).json().id as string;
  const queued = await post('/v1/jobs', { ...small, transparent: true });
  assert.equal(queued.statusCode, 202, queued.body);
  const aside = `${ldFolder}-aside`;
  renameSync(ldFolder, aside);
  try {
    await app.inject({ method: 'POST', url: `/v1/jobs/${blocker}/cancel` });
    const done = await app.kiln.queue.waitFor(queued.json().id, 120_000);
    assert.equal(done?.state, 'failed');
    assert.equal(done?.error?.code, 'model');
    assert.match(done?.error?.message ?? '', /layer_xl_transparent_attn\.safetensors and vae_transparent_decoder\.safetensors, not found/);
  } finally {
    renameSync(aside, ldFolder);
  }
});

/** Seed 000's "Test 5: Python Script" (a verbatim copy), changed only in API_URL's host and the size (1024 -> 64). */
function seedTest5(url: string): string {
  const script = readFileSync(join(FIX, 'seeds', 'seed000-test5.py'), 'utf8');
  const changed = script
    .replace('API_URL = f"https://api.runpod.ai/v2/{ENDPOINT_ID}/runsync"', `API_URL = f"${url}/v2/{ENDPOINT_ID}/runsync"`)
    .replace('"width": 1024', '"width": 64')
    .replace('"height": 1024', '"height": 64');
  assert.equal(changed.split('\n').length, script.split('\n').length);
  assert.notEqual(changed, script);
  return changed;
}

test("seed 000's own Python client (Test 5) gets a PNG with a real alpha matte, and a 4xx naming the missing files without them", async () => {
  const server = await spawnServer(['--data-dir', join(t.dir, 'spawned'), '--models-dir', models, '--model', 'tiny-sdxl-f8'], {
    KILN_CACHE_DIR: join(t.dir, 'spawned-cache'),
  });
  try {
    const work = join(t.dir, 'client');
    mkdirSync(work, { recursive: true });
    writeFileSync(join(work, 'test5.py'), seedTest5(server.url));
    const out = execFileSync('python3', ['test5.py'], { cwd: work, encoding: 'utf8', timeout: 300_000 });
    assert.match(out, /^Image saved: alpha_\d+_[0-9a-f-]{36}\.png$/m, out);
    await assertRealMatte(readFileSync(join(work, 'output.png')), 'Test 5 output.png');

    const aside = `${ldFolder}-aside`;
    renameSync(ldFolder, aside);
    try {
      const refused = execFileSync('python3', ['test5.py'], { cwd: work, encoding: 'utf8', timeout: 60_000 });
      assert.match(
        refused,
        /^Error: \{'status': 'FAILED', 'error': .*layer_xl_transparent_attn\.safetensors and vae_transparent_decoder\.safetensors, not found in .*layerdiffuse/m,
        refused,
      );
      const r = await fetch(`${server.url}/v2/YOUR_ENDPOINT_ID/runsync`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ input: { prompt: 'x', width: 64, height: 64 } }),
      });
      assert.equal(r.status, 422, 'the client got a 4xx');
    } finally {
      renameSync(aside, ldFolder);
    }
  } finally {
    server.child.kill('SIGTERM');
    await server.exited;
  }
});

test("cleanup deletes a transparent image's preview file with the job", async () => {
  const res = await post('/v1/generate', { ...small, transparent: { preview: true, tta: false } });
  assert.equal(res.statusCode, 200, res.body);
  const { name, preview } = res.json().images[0];
  const storage = app.kiln.storage;
  assert.ok((await storage.exists(name)) && (await storage.exists(preview.name)));
  // Every finished job is past its retention a year from now.
  const queue = app.kiln.queue as unknown as { now: () => number };
  const realNow = queue.now;
  queue.now = () => Date.now() + 365 * 24 * 3600_000;
  try {
    assert.ok((await app.kiln.queue.cleanup()) >= 1);
  } finally {
    queue.now = realNow;
  }
  assert.equal(await storage.exists(name), false);
  assert.equal(await storage.exists(preview.name), false, 'the preview went with it');
});
