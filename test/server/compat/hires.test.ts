// Hires fix and upscaler listings through HTTP on the real engine and tiny SD1: A1111 enable_hr + hr_*, seed 004's
// hires object with its two progress phases, native /v1 hires, and the 4xx answers for bad upscalers and sizes.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import sharp from 'sharp';
import { readInfotext } from '../../../src/storage/encode.ts';
import { startCompatServer, type CompatServer } from './helpers.ts';

const UPSCALERS = join(import.meta.dirname, '..', '..', 'fixtures', 'tiny-upscalers');

let s: CompatServer;
before(async () => {
  s = await startCompatServer();
  const dir = join(s.config.modelsDir, 'upscalers');
  copyFileSync(join(UPSCALERS, 'compact-x4.safetensors'), join(dir, 'compact-x4.safetensors'));
  writeFileSync(join(dir, 'empty.safetensors'), '');
  writeFileSync(join(dir, 'RealESRGAN_x4plus.pth'), 'not a pickle');
  s.app.kiln.models.refresh();
});
after(async () => {
  await s.close();
});

const post = (url: string, payload: unknown) => s.app.inject({ method: 'POST', url, payload: payload as object });

const HIRES_TXT2IMG = {
  prompt: 'a red apple',
  steps: 2,
  width: 64,
  height: 64,
  seed: 7,
  sampler_name: 'Euler',
  enable_hr: true,
  hr_scale: 2,
  hr_upscaler: 'Latent',
  hr_second_pass_steps: 1,
  denoising_strength: 0.5,
};

test('A1111 enable_hr: the image is hr_scale times larger, the infotext carries the Hires fields, a fixed seed repeats', async () => {
  const r = await post('/sdapi/v1/txt2img', HIRES_TXT2IMG);
  assert.equal(r.statusCode, 200, r.body);
  const png = Buffer.from(r.json().images[0], 'base64');
  const meta = await sharp(png).metadata();
  assert.deepEqual([meta.width, meta.height], [128, 128]);
  const info = (await readInfotext(png))!;
  assert.match(info, /Size: 64x64/);
  assert.match(info, /Denoising strength: 0\.5/);
  assert.match(info, /Hires upscale: 2, Hires steps: 1, Hires upscaler: Latent/);
  const again = await post('/sdapi/v1/txt2img', HIRES_TXT2IMG);
  assert.deepEqual(await sharp(Buffer.from(again.json().images[0], 'base64')).raw().toBuffer(), await sharp(png).raw().toBuffer());
  // A model upscaler from models/upscalers/ in the pixel path.
  const model = await post('/sdapi/v1/txt2img', { ...HIRES_TXT2IMG, hr_upscaler: 'compact-x4', hr_scale: 1.5 });
  assert.equal(model.statusCode, 200, model.body);
  const m = await sharp(Buffer.from(model.json().images[0], 'base64')).metadata();
  assert.deepEqual([m.width, m.height], [96, 96]);
});

test('A1111 upscaler listings hold only usable entries: no 0-byte or unreadable files, no server paths', async () => {
  const up = (await s.app.inject('/sdapi/v1/upscalers')).json() as { name: string; model_path: string | null; scale: number }[];
  assert.deepEqual(
    up.map((u) => u.name),
    ['None', 'Lanczos', 'Nearest', 'compact-x4'],
  );
  const compact = up.find((u) => u.name === 'compact-x4')!;
  assert.equal(compact.model_path, join('upscalers', 'compact-x4.safetensors'));
  assert.equal(compact.scale, 4);
  assert.ok(!JSON.stringify(up).includes(s.dir), 'no absolute server path');
  const modes = (await s.app.inject('/sdapi/v1/latent-upscale-modes')).json() as { name: string }[];
  assert.equal(modes.length, 6);
});

test('bad hires input is a 4xx: unknown upscaler lists the names, an unreadable file is named, a size past the limits names the field', async () => {
  const unknown = await post('/sdapi/v1/txt2img', { ...HIRES_TXT2IMG, hr_upscaler: 'R-ESRGAN 4x+' });
  assert.equal(unknown.statusCode, 400);
  assert.match(unknown.json().detail, /^hr_upscaler: unknown upscaler "R-ESRGAN 4x\+"; available: Latent, .*Lanczos, Nearest, compact-x4/);
  for (const name of ['empty', 'RealESRGAN_x4plus']) {
    const bad = await post('/sdapi/v1/txt2img', { ...HIRES_TXT2IMG, hr_upscaler: name });
    assert.equal(bad.statusCode, 400);
    assert.match(bad.json().detail, new RegExp(`^hr_upscaler: the upscaler file "${name}" cannot be used: `));
    assert.ok(!bad.json().detail.includes(s.dir), bad.json().detail);
  }
  const big = await post('/sdapi/v1/txt2img', { ...HIRES_TXT2IMG, width: 1024, height: 1024, hr_scale: 4 });
  assert.equal(big.statusCode, 400);
  assert.match(big.json().detail, /^hr_scale: the hires size 4096x4096 exceeds the limits \(at most 2048x2048 and 4194304 pixels\)/);
  const checkpoint = await post('/sdapi/v1/txt2img', { ...HIRES_TXT2IMG, hr_checkpoint_name: 'other-model' });
  assert.equal(checkpoint.statusCode, 501);
  assert.match(checkpoint.json().detail, /^hr_checkpoint_name: /);
  const resize = await post('/sdapi/v1/txt2img', { ...HIRES_TXT2IMG, hr_resize_x: 4096 });
  assert.equal(resize.statusCode, 400);
  assert.match(resize.json().detail, /^hr_resize_x: /);
});

test('seed 004 hires: "initial generation" up to 50 %, then "upscaling", progress never goes back; GET /upscalers as the seed', async () => {
  const r = await post('/txt2img', {
    prompt: 'a forest',
    width: 64,
    height: 64,
    steps: 3,
    model: 'tiny-sd1',
    sampler_name: 'Euler',
    seed: 5,
    hires: { enabled: true, scale: 2, upscaler: 'Latent', steps: 2, denoising_strength: 0.4 },
  });
  assert.equal(r.statusCode, 200, r.body);
  const seen: any[] = [];
  let final: any;
  for (let i = 0; i < 2000 && !final; i++) {
    const q = (await s.app.inject(`/queue/${r.json().job_id}`)).json();
    seen.push(q);
    if (q.state === 'done' || q.state === 'error') final = q;
    else await new Promise((res) => setTimeout(res, 5));
  }
  assert.equal(final?.state, 'done', JSON.stringify(final));
  assert.deepEqual([final.width, final.height], [128, 128]);
  const progress = seen.map((x) => x.progress);
  for (let i = 1; i < progress.length; i++) assert.ok(progress[i] >= progress[i - 1], `progress went back: ${progress}`);
  const initial = seen.filter((x) => x.current_phase === 'initial generation');
  const upscaling = seen.filter((x) => x.current_phase === 'upscaling');
  assert.ok(initial.every((x) => x.progress <= 50));
  assert.ok(upscaling.every((x) => x.progress >= 50));
  assert.ok(initial.length + upscaling.length > 0, 'saw the job running');
  assert.match(
    (await readInfotext(Buffer.from(final.image, 'base64')))!,
    /Denoising strength: 0\.4, .*Hires upscale: 2, Hires steps: 2, Hires upscaler: Latent/,
  );
  const list = (await s.app.inject('/upscalers')).json();
  assert.equal(list.status, 'success');
  assert.deepEqual(list.upscalers[0], { name: 'Latent', path: 'internal' });
  assert.deepEqual(list.upscalers.at(-1), { name: 'compact-x4', path: join('upscalers', 'compact-x4.safetensors') });
});

test('native /v1/jobs hires: the result is the hires size', async () => {
  const r = await post('/v1/jobs', {
    prompt: 'x',
    width: 64,
    height: 64,
    steps: 2,
    seed: 3,
    hires: { scale: 1.5, upscaler: 'Lanczos', steps: 1, denoising_strength: 0.5 },
  });
  assert.equal(r.statusCode, 202, r.body);
  let job: any;
  for (let i = 0; i < 2000; i++) {
    job = (await s.app.inject(`/v1/jobs/${r.json().id}`)).json();
    if (job.state === 'succeeded' || job.state === 'failed') break;
    await new Promise((res) => setTimeout(res, 5));
  }
  assert.equal(job.state, 'succeeded', JSON.stringify(job));
  assert.deepEqual([job.images[0].width, job.images[0].height], [96, 96]);
  const bad = await post('/v1/jobs', { prompt: 'x', width: 64, height: 64, hires: { scale: 2, upscaler: 'nope' } });
  assert.equal(bad.statusCode, 400);
  assert.equal(bad.json().error.field, 'hires.upscaler');
});

test('A1111 extras: single and batch images through Lanczos and a model upscaler, with the Postprocess parameters', async () => {
  const png = await sharp({ create: { width: 40, height: 24, channels: 3, background: { r: 200, g: 30, b: 90 } } })
    .png()
    .toBuffer();
  const b64 = png.toString('base64');
  const one = await post('/sdapi/v1/extra-single-image', { image: b64, upscaler_1: 'compact-x4', upscaling_resize: 2 });
  assert.equal(one.statusCode, 200, one.body);
  const out = await sharp(Buffer.from(one.json().image, 'base64')).metadata();
  assert.deepEqual([out.width, out.height], [80, 48]);
  assert.equal(one.json().html_info, '<p>Postprocess upscale by: 2, Postprocess upscaler: compact-x4</p>');
  const batch = await post('/sdapi/v1/extra-batch-images', {
    imageList: [
      { data: b64, name: 'a.png' },
      { data: b64, name: 'b.png' },
    ],
    resize_mode: 1,
    upscaling_resize_w: 64,
    upscaling_resize_h: 64,
    upscaling_crop: true,
    upscaler_1: 'Lanczos',
    upscaler_2: 'Nearest',
    extras_upscaler_2_visibility: 0.3,
  });
  assert.equal(batch.statusCode, 200, batch.body);
  assert.equal(batch.json().images.length, 2);
  for (const img of batch.json().images) {
    const m = await sharp(Buffer.from(img, 'base64')).metadata();
    assert.deepEqual([m.width, m.height], [64, 64]);
  }
  assert.match(
    batch.json().html_info,
    /Postprocess upscale to: 64x64, Postprocess crop to: 64x64, Postprocess upscaler: Lanczos, Postprocess upscaler 2: Nearest/,
  );
  const unknown = await post('/sdapi/v1/extra-single-image', { image: b64, upscaler_1: 'R-ESRGAN 4x+' });
  assert.equal(unknown.statusCode, 400);
  assert.match(unknown.json().detail, /^upscaler_1: unknown upscaler "R-ESRGAN 4x\+"; available: None, Lanczos, Nearest, compact-x4$/);
  const tooBig = await post('/sdapi/v1/extra-single-image', { image: b64, upscaler_1: 'Lanczos', upscaling_resize: 20 });
  assert.equal(tooBig.statusCode, 400);
  assert.match(tooBig.json().detail, /^upscaling_resize: must be from 1 to 8/);
});

test('native POST /v1/upscale: a job with progress whose image is the upscaled size', async () => {
  const png = await sharp({ create: { width: 20, height: 16, channels: 3, background: { r: 10, g: 120, b: 240 } } })
    .png()
    .toBuffer();
  const r = await post('/v1/upscale', { image: png.toString('base64'), upscaler: 'compact-x4', scale: 4 });
  assert.equal(r.statusCode, 202, r.body);
  let job: any;
  for (let i = 0; i < 2000; i++) {
    job = (await s.app.inject(`/v1/jobs/${r.json().id}`)).json();
    if (job.state === 'succeeded' || job.state === 'failed') break;
    await new Promise((res) => setTimeout(res, 5));
  }
  assert.equal(job.state, 'succeeded', JSON.stringify(job));
  assert.deepEqual([job.images[0].width, job.images[0].height], [80, 64]);
  const bad = await post('/v1/upscale', { image: png.toString('base64'), upscaler: 'empty' });
  assert.equal(bad.statusCode, 400);
  assert.equal(bad.json().error.field, 'upscaler');
  assert.match(bad.json().error.message, /the upscaler file "empty" cannot be used: is empty \(0 bytes\)/);
});
