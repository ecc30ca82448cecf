// AUTOMATIC1111 /sdapi/v1 through HTTP against the real engine and the tiny SD1 fixture. No maintained A1111
// client exists on npm, so requests are sent the way A1111 clients send them (webuiapi's full txt2img payload).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import sharp from 'sharp';
import { readInfotext } from '../../../src/storage/encode.ts';
import { startCompatServer, type CompatServer } from './helpers.ts';
import { VERSION } from '../../../src/version.ts';

let s: CompatServer;
before(async () => {
  s = await startCompatServer();
});
after(async () => {
  await s.close();
});

/** Decoded RGB(A) pixels of a base64 image (PNG bytes differ when only the embedded text differs). */
const pixels = async (b64: string) => sharp(Buffer.from(b64, 'base64')).raw().toBuffer();

const post = (url: string, payload: unknown) => s.app.inject({ method: 'POST', url, payload: payload as object });

/** webuiapi (the common Python client) sends every field of its txt2img signature, including ones for hires fix. */
function webuiapiPayload(overrides: Record<string, unknown> = {}) {
  return {
    enable_hr: false,
    denoising_strength: 0.7,
    firstphase_width: 0,
    firstphase_height: 0,
    hr_scale: 2,
    hr_upscaler: 'Latent',
    hr_second_pass_steps: 0,
    hr_resize_x: 0,
    hr_resize_y: 0,
    prompt: 'a lighthouse on a cliff, (dramatic clouds:1.2)',
    styles: [],
    seed: 1234,
    subseed: -1,
    subseed_strength: 0.0,
    seed_resize_from_h: 0,
    seed_resize_from_w: 0,
    sampler_name: 'Euler a',
    batch_size: 2,
    n_iter: 1,
    steps: 3,
    cfg_scale: 7.0,
    width: 64,
    height: 64,
    restore_faces: false,
    tiling: false,
    do_not_save_samples: false,
    do_not_save_grid: false,
    negative_prompt: 'blurry, lowres',
    eta: 1.0,
    s_churn: 0,
    s_tmax: 0,
    s_tmin: 0,
    s_noise: 1,
    override_settings: {},
    override_settings_restore_afterwards: true,
    script_args: [],
    script_name: null,
    send_images: true,
    save_images: false,
    alwayson_scripts: {},
    sampler_index: 'Euler a',
    some_future_field: 'ignored as A1111 ignores unknown fields',
    ...overrides,
  };
}

test('txt2img: webuiapi payload -> images, info JSON string, infotexts equal to the PNG parameters text', async () => {
  const r = await post('/sdapi/v1/txt2img', webuiapiPayload());
  assert.equal(r.statusCode, 200, r.body);
  assert.ok(Number(r.headers['x-process-time']) > 0);
  const body = r.json();
  assert.equal(body.images.length, 2);
  assert.equal(typeof body.info, 'string');
  const info = JSON.parse(body.info);
  assert.deepEqual(info.all_seeds, [1234, 1235]);
  assert.equal(info.seed, 1234);
  assert.equal(info.all_prompts.length, 2);
  assert.equal(info.negative_prompt, 'blurry, lowres');
  assert.equal(info.sampler_name, 'Euler a');
  assert.equal(info.steps, 3);
  assert.equal(info.batch_size, 2);
  assert.equal(info.index_of_first_image, 0);
  assert.match(info.job_timestamp, /^\d{14}$/);
  assert.match(info.sd_model_hash, /^[0-9a-f]{10}$/);
  assert.equal(info.sd_model_name, 'tiny-sd1');
  for (const [i, b64] of body.images.entries()) {
    const png = Buffer.from(b64, 'base64');
    const meta = await sharp(png).metadata();
    assert.deepEqual([meta.format, meta.width, meta.height], ['png', 64, 64]);
    assert.equal(await readInfotext(png), info.infotexts[i]);
  }
  // A1111's exact layout: prompt line, "Negative prompt:" line, then the parameter line in A1111's key order.
  assert.equal(
    info.infotexts[1],
    `a lighthouse on a cliff, (dramatic clouds:1.2)\nNegative prompt: blurry, lowres\nSteps: 3, Sampler: Euler a, CFG scale: 7, Seed: 1235, Size: 64x64, Model hash: ${info.sd_model_hash}, Model: tiny-sd1, Eta: 1, Version: kiln-${VERSION}`,
  );
  // The request is echoed with defaults filled.
  assert.equal(body.parameters.steps, 3);
  assert.equal(body.parameters.scheduler, null);
  assert.equal(body.parameters.some_future_field, 'ignored as A1111 ignores unknown fields');
});

test('txt2img: A1111 defaults, legacy "<sampler> <schedule>" names, seeds reproduce', async () => {
  const a = await post('/sdapi/v1/txt2img', { prompt: 'a cat', steps: 2, width: 64, height: 64, seed: 77, sampler_name: 'DPM++ 2M Karras' });
  assert.equal(a.statusCode, 200, a.body);
  const info = JSON.parse(a.json().info);
  // Karras is DPM++ 2M's preferred schedule, so the legacy name means the automatic schedule.
  assert.match(info.infotexts[0], /Steps: 2, Sampler: DPM\+\+ 2M, CFG scale: 7, Seed: 77, Size: 64x64/);
  assert.equal(a.json().parameters.sampler_index, 'Euler');
  assert.equal(a.json().parameters.cfg_scale, 7);
  const b = await post('/sdapi/v1/txt2img', { prompt: 'a cat', steps: 2, width: 64, height: 64, seed: 77, sampler_name: 'DPM++ 2M', scheduler: 'Karras' });
  assert.ok((await pixels(b.json().images[0])).equals(await pixels(a.json().images[0])), 'same seed and settings give the same pixels');
  const euler = JSON.parse(
    (await post('/sdapi/v1/txt2img', { prompt: 'a cat', steps: 2, width: 64, height: 64, seed: 77, sampler_name: 'Euler', scheduler: 'Karras' })).json().info,
  );
  assert.match(euler.infotexts[0], /Sampler: Euler, Schedule type: Karras, CFG scale: 7/);
  const random = JSON.parse((await post('/sdapi/v1/txt2img', { prompt: 'x', steps: 1, width: 64, height: 64 })).json().info);
  assert.ok(random.seed >= 0 && random.seed < 4294967294);
});

test('txt2img: n_iter x batch_size images, prompt lists, send_images false, samples_format jpg via override_settings', async () => {
  const r = await post('/sdapi/v1/txt2img', { prompt: ['a', 'b', 'c'], steps: 1, width: 64, height: 64, seed: 5, batch_size: 1, n_iter: 3 });
  const info = JSON.parse(r.json().info);
  assert.deepEqual(info.all_prompts, ['a', 'b', 'c']);
  assert.deepEqual(info.all_seeds, [5, 6, 7]);
  const n = await post('/sdapi/v1/txt2img', { prompt: 'a', steps: 1, width: 64, height: 64, batch_size: 2, n_iter: 2, send_images: false });
  assert.deepEqual(n.json().images, []);
  assert.equal(JSON.parse(n.json().info).all_seeds.length, 4);
  const j = await post('/sdapi/v1/txt2img', {
    prompt: 'a',
    steps: 1,
    width: 64,
    height: 64,
    override_settings: { samples_format: 'jpg', CLIP_stop_at_last_layers: 2 },
  });
  const jpg = Buffer.from(j.json().images[0], 'base64');
  assert.equal((await sharp(jpg).metadata()).format, 'jpeg');
  assert.match((await readInfotext(jpg))!, /Clip skip: 2/);
});

test('txt2img: the infotext field fills every field not set explicitly', async () => {
  const infotext = 'a red barn\nNegative prompt: fog\nSteps: 2, Sampler: Euler, CFG scale: 5.5, Seed: 99, Size: 64x64, Model hash: 0123456789, Model: x';
  const r = await post('/sdapi/v1/txt2img', { infotext, seed: 100 });
  assert.equal(r.statusCode, 200, r.body);
  const info = JSON.parse(r.json().info);
  assert.equal(info.prompt, 'a red barn');
  assert.equal(info.negative_prompt, 'fog');
  assert.equal(info.steps, 2);
  assert.equal(info.cfg_scale, 5.5);
  assert.equal(info.seed, 100);
  assert.equal(info.width, 64);
});

test('img2img: init_images as base64 and data URI; denoising strength in the infotext; 404 without init images', async () => {
  const src = (await post('/sdapi/v1/txt2img', { prompt: 'a', steps: 1, width: 64, height: 64, seed: 1 })).json().images[0];
  const r = await post('/sdapi/v1/img2img', { init_images: [src], prompt: 'a house', steps: 4, width: 64, height: 64, denoising_strength: 0.5, seed: 3 });
  assert.equal(r.statusCode, 200, r.body);
  const info = JSON.parse(r.json().info);
  assert.match(info.infotexts[0], /Denoising strength: 0.5/);
  assert.equal(info.denoising_strength, 0.5);
  assert.equal(r.json().parameters.init_images, null);
  const d = await post('/sdapi/v1/img2img', {
    init_images: [`data:image/png;base64,${src}`],
    prompt: 'a house',
    steps: 4,
    width: 64,
    height: 64,
    denoising_strength: 0.5,
    seed: 3,
  });
  assert.ok(d.json().images[0] === r.json().images[0], 'a data URI and plain base64 give the same image');

  const missing = await post('/sdapi/v1/img2img', { prompt: 'x' });
  assert.equal(missing.statusCode, 404);
  assert.deepEqual(missing.json(), { error: 'HTTPException', detail: 'Init image not found', body: '', errors: '404: Init image not found' });
  const bad = await post('/sdapi/v1/img2img', { prompt: 'x', init_images: ['bm90IGFuIGltYWdl'], steps: 1, width: 64, height: 64 });
  assert.equal(bad.statusCode, 400);
  assert.match(bad.json().detail, /init_images: is not a readable image/);
});

test('errors: A1111 shapes for schema errors (422), unknown samplers (400), unknown scripts (422), missing features (501)', async () => {
  const schema = await post('/sdapi/v1/txt2img', { prompt: 'x', steps: 'many' });
  assert.equal(schema.statusCode, 422);
  assert.deepEqual(schema.json().detail[0].loc, ['body', 'steps']);
  assert.equal(schema.json().detail[0].type, 'type_error.integer');

  const sampler = await post('/sdapi/v1/txt2img', { prompt: 'x', steps: 1, width: 64, height: 64, sampler_name: 'Nope' });
  assert.equal(sampler.statusCode, 400);
  assert.equal(sampler.json().error, 'HTTPException');
  assert.match(sampler.json().detail, /unknown sampler "Nope"/);
  assert.deepEqual(Object.keys(sampler.json()), ['error', 'detail', 'body', 'errors']);

  const script = await post('/sdapi/v1/txt2img', { prompt: 'x', script_name: 'X/Y/Z plot' });
  assert.equal(script.statusCode, 422);
  assert.equal(script.json().detail, 'Script not found');

  for (const [field, payload, feature] of [
    // (enable_hr used to be here; hires fix runs now: test/server/compat/hires.test.ts.)
    ['s_min_uncond', { s_min_uncond: 1 }, /s_min_uncond/],
    ['prompt', { prompt: 'a cat <hypernet:pixel:0.8>' }, /hypernetworks/],
  ] as const) {
    const r = await post('/sdapi/v1/txt2img', { prompt: 'x', steps: 1, width: 64, height: 64, ...payload });
    assert.equal(r.statusCode, 501, field);
    assert.equal(r.json().error, 'NotImplementedError');
    assert.match(r.json().detail, feature);
    assert.ok(r.json().detail.startsWith(`${field}:`), r.json().detail);
  }
  // Inpainting exists now: a mask that is not an image is a 4xx naming the field.
  const mask = await post('/sdapi/v1/img2img', { prompt: 'x', init_images: ['aGk='], mask: 'aGk=' });
  assert.ok(mask.statusCode >= 400 && mask.statusCode < 500, mask.body);
  assert.match(mask.body, /mask: is not a readable image/);
  // Face restoration runs now (test/server/compat/face-restoration.test.ts): without its files it is a 400 naming them.
  const faces = await post('/sdapi/v1/txt2img', { prompt: 'x', steps: 1, width: 64, height: 64, restore_faces: true });
  assert.equal(faces.statusCode, 400, faces.body);
  assert.match(faces.json().detail, /^restore_faces: .*codeformer-v0\.1\.0\.pth\) in models\/codeformer\//);
  const extras = await post('/sdapi/v1/extra-single-image', { image: 'aGk=', upscaler_1: 'Lanczos', gfpgan_visibility: 1 });
  assert.equal(extras.statusCode, 400, extras.body);
  assert.match(extras.json().detail, /gfpgan_visibility: .*GFPGANv1\.4\.pth\) in models\/gfpgan\//);
});

test('refiner_checkpoint runs the refiner for the last steps (infotext names it); an unknown one is a 400', async () => {
  const r = await post('/sdapi/v1/txt2img', { prompt: 'x', steps: 4, width: 64, height: 64, seed: 9, refiner_checkpoint: 'tiny-sd1', refiner_switch_at: 0.5 });
  assert.equal(r.statusCode, 200, r.body);
  assert.match(JSON.parse(r.json().info).infotexts[0], /Refiner: tiny-sd1, Refiner switch at: 0.5/);
  const bad = await post('/sdapi/v1/txt2img', { prompt: 'x', steps: 1, width: 64, height: 64, refiner_checkpoint: 'sd_xl_refiner_1.0' });
  assert.equal(bad.statusCode, 400);
  assert.match(bad.json().detail, /Could not find checkpoint with name sd_xl_refiner_1.0/);
});

test('progress: idle zeros; while running it reports steps; interrupt stops the blocked call, which still answers', async () => {
  const idle = (await s.app.inject('/sdapi/v1/progress')).json();
  assert.equal(idle.progress, 0);
  assert.equal(idle.state.job_count, 0);
  assert.equal(idle.current_image, null);

  const running = post('/sdapi/v1/txt2img', { prompt: 'long', steps: 150, width: 64, height: 64, force_task_id: 'task-1' });
  let seen: any;
  for (let i = 0; i < 400; i++) {
    const p = (await s.app.inject('/sdapi/v1/progress?skip_current_image=false')).json();
    if (p.state.sampling_step > 2) {
      seen = p;
      break;
    }
    await new Promise((r) => setTimeout(r, 10));
  }
  assert.ok(seen, 'progress never showed sampling steps');
  assert.ok(seen.progress > 0 && seen.progress < 1);
  assert.equal(seen.state.sampling_steps, 150);
  assert.equal(seen.state.job_count, 1);
  const task = (await post('/internal/progress', { id_task: 'task-1', id_live_preview: -1 })).json();
  assert.equal(task.active, true);
  assert.ok(task.progress > 0);

  assert.deepEqual((await post('/sdapi/v1/interrupt', {})).json(), {});
  const r = await running;
  assert.equal(r.statusCode, 200);
  assert.deepEqual(r.json().images, []);
  assert.equal((await s.app.inject('/sdapi/v1/progress')).json().state.interrupted, true);
  assert.equal((await post('/internal/progress', { id_task: 'task-1' })).json().completed, true);
});

test('discovery: samplers, schedulers, sd-models (title with short hash), loras, upscalers, options', async () => {
  const samplers = (await s.app.inject('/sdapi/v1/samplers')).json();
  const euler = samplers.find((x: any) => x.name === 'Euler a');
  assert.ok(euler.aliases.includes('k_euler_a'));
  assert.equal(typeof euler.options, 'object');
  const karras = (await s.app.inject('/sdapi/v1/schedulers')).json().find((x: any) => x.label === 'Karras');
  assert.equal(karras.name, 'karras');
  assert.equal(karras.default_rho, 7);

  const models = (await s.app.inject('/sdapi/v1/sd-models')).json();
  assert.equal(models.length, 1);
  assert.match(models[0].title, /^tiny-sd1 \[[0-9a-f]{10}\]$/);
  assert.equal(models[0].sha256.slice(0, 10), models[0].hash);
  assert.equal(models[0].model_name, 'tiny-sd1');
  const info = JSON.parse((await post('/sdapi/v1/txt2img', { prompt: 'x', steps: 1, width: 64, height: 64 })).json().info);
  assert.equal(info.sd_model_hash, models[0].hash, 'the listing hash equals the infotext Model hash');

  assert.deepEqual((await s.app.inject('/sdapi/v1/loras')).json(), []);
  assert.ok((await s.app.inject('/sdapi/v1/upscalers')).json().some((u: any) => u.name === 'None'));
  assert.ok((await s.app.inject('/sdapi/v1/latent-upscale-modes')).json().some((u: any) => u.name === 'Latent'));

  const opts = (await s.app.inject('/sdapi/v1/options')).json();
  assert.equal(opts.sd_model_checkpoint, models[0].title);
  assert.equal(opts.samples_format, 'png');
  // Switching by title, model name or short hash all work; an unknown name is an error.
  for (const name of [models[0].model_name, models[0].hash, models[0].title]) {
    const r = await post('/sdapi/v1/options', { sd_model_checkpoint: name });
    assert.equal(r.statusCode, 200);
    assert.equal(r.body, 'null');
  }
  const unknown = await post('/sdapi/v1/options', { sd_model_checkpoint: 'nope.safetensors' });
  assert.equal(unknown.statusCode, 500);
  assert.match(unknown.json().detail, /model "nope.safetensors" not found/);
  await post('/sdapi/v1/options', { samples_format: 'webp' });
  const webp = (await post('/sdapi/v1/txt2img', { prompt: 'x', steps: 1, width: 64, height: 64 })).json().images[0];
  assert.equal((await sharp(Buffer.from(webp, 'base64')).metadata()).format, 'webp');
  await post('/sdapi/v1/options', { samples_format: 'png' });
});

test('png-info: reads the parameters text and parses it the way A1111 does', async () => {
  const img = (await post('/sdapi/v1/txt2img', { prompt: 'a cat, sitting', negative_prompt: 'dog', steps: 2, width: 64, height: 64, seed: 42 })).json()
    .images[0];
  const r = await post('/sdapi/v1/png-info', { image: `data:image/png;base64,${img}` });
  assert.equal(r.statusCode, 200);
  const body = r.json();
  assert.match(body.info, /^a cat, sitting\nNegative prompt: dog\nSteps: 2, Sampler: Euler, CFG scale: 7, Seed: 42, Size: 64x64/);
  assert.equal(body.parameters.Prompt, 'a cat, sitting');
  assert.equal(body.parameters['Negative prompt'], 'dog');
  assert.equal(body.parameters.Seed, '42');
  assert.equal(body.parameters['Size-1'], '64');
  assert.equal(body.parameters['Size-2'], '64');
  const plain = await sharp({ create: { width: 8, height: 8, channels: 3, background: '#fff' } })
    .png()
    .toBuffer();
  assert.deepEqual((await post('/sdapi/v1/png-info', { image: plain.toString('base64') })).json(), { info: '', items: {}, parameters: {} });
});
