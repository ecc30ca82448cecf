// Seed 003 (query-parameter /post_config answering image bytes, API keys with an admin role, listings, LoRA
// and UniDiffuser routes) through HTTP on the real engine. The README's model ids are mapped to the tiny
// fixture with modelAliases, as an operator maps Hugging Face ids to local models. Its 768x768 example runs
// at 64x64 (768 px takes minutes on CPU with this model).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import sharp from 'sharp';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { readInfotext } from '../../../src/storage/encode.ts';
import { readPngText } from '../../../src/storage/png-text.ts';
import { loadConfig } from '../../../src/server/config.ts';
import { tempDir } from '../../queue/helpers.ts';
import { writeTinyClipModel } from '../../engine/tiny-clip-model.ts';
import { createHash } from 'node:crypto';
import { startHubServer, type HubServer } from '../../download/hub-server.ts';
import { startCompatServer, type CompatServer } from './helpers.ts';

const USER = { 'x-api-key': 'your-api-key' };
const ADMIN = { 'x-api-key': 'admin-api-key' };
const aliases = { 'stabilityai/stable-diffusion-2-1': 'tiny-sd1', 'stabilityai/stable-diffusion-xl-base-1.0': 'tiny-sd1' };

let s: CompatServer;
let open: CompatServer;
let civitai: HubServer;
before(async () => {
  // A local server speaking Civitai's API for /add_new_lora (no hub is reachable here).
  const lora = readFileSync(new URL('../../fixtures/loras/tiny-sd1-kohya.safetensors', import.meta.url));
  civitai = await startHubServer({}, [
    {
      id: 123456,
      name: 'pixel_art_style',
      type: 'LORA',
      allowNoCredit: true,
      allowCommercialUse: ['Image', 'Rent'],
      versions: [{ id: 654321, name: 'v1.0', baseModel: 'SD 1.5', trainedWords: ['pixel_art_style'], fileName: 'pixelArt_v10.safetensors', bytes: lora }],
    },
    {
      id: 222,
      name: 'XL Only Style',
      type: 'LORA',
      versions: [{ id: 333, name: 'v1', baseModel: 'SDXL 1.0', trainedWords: ['xl style'], fileName: 'xl.safetensors', bytes: lora }],
    },
    {
      id: 444,
      name: 'Some Checkpoint',
      type: 'Checkpoint',
      versions: [{ id: 555, name: 'v1', baseModel: 'SD 1.5', trainedWords: [], fileName: 'ckpt.safetensors', bytes: lora }],
    },
  ]);
  s = await startCompatServer({
    civitaiEndpoint: civitai.url,
    modelAliases: aliases,
    keys: [
      { name: 'user', key: 'your-api-key', role: 'user' },
      { name: 'admin', key: 'admin-api-key', role: 'admin' },
    ],
  });
  // The README's img2img and LoRA examples send no X-API-Key; they run against a server without keys.
  open = await startCompatServer({ modelAliases: aliases, civitaiEndpoint: civitai.url });
});
after(async () => {
  await s.close();
  await open.close();
  await civitai.close();
});

const qs = (params: Record<string, string | number>) => new URLSearchParams(Object.entries(params).map(([k, v]) => [k, String(v)])).toString();

function multipart(field: string, filename: string, type: string, bytes: Buffer) {
  const boundary = '----kilntest';
  const payload = Buffer.concat([
    Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="${field}"; filename="${filename}"\r\nContent-Type: ${type}\r\n\r\n`),
    bytes,
    Buffer.from(`\r\n--${boundary}--\r\n`),
  ]);
  return { payload, headers: { 'content-type': `multipart/form-data; boundary=${boundary}` } };
}

test('README text-to-image (count_returned 4, seed 42; 64x64 instead of 768x768) answers one PNG grid of the 4 images', async () => {
  const params = {
    prompt: 'A serene mountain landscape, oil painting style',
    model_id: 'stabilityai/stable-diffusion-2-1',
    num_inference_steps: 30,
    guidance_scale: 7.5,
    width: 64,
    height: 64,
    count_returned: 4,
    seed: 42,
  };
  const r = await s.app.inject({ method: 'POST', url: `/post_config?${qs(params)}`, headers: USER });
  assert.equal(r.statusCode, 200, r.body.slice(0, 300));
  assert.equal(r.headers['content-type'], 'image/png');
  assert.equal(r.headers['x-seeds'], '42,43,44,45');
  const meta = await sharp(r.rawPayload).metadata();
  assert.deepEqual([meta.format, meta.width, meta.height], ['png', 128, 128]);
  const one = await s.app.inject({ method: 'POST', url: `/post_config?${qs({ ...params, count_returned: 1 })}`, headers: USER });
  assert.match(
    (await readInfotext(one.rawPayload))!,
    /^A serene mountain landscape, oil painting style\nSteps: 30, Sampler: Euler, CFG scale: 7.5, Seed: 42, Size: 64x64/,
  );
  // The first grid cell is the count_returned=1 image (batched UNet calls may differ by a rounding step).
  const cell = await sharp(r.rawPayload).extract({ left: 0, top: 0, width: 64, height: 64 }).removeAlpha().raw().toBuffer();
  const single = await sharp(one.rawPayload).removeAlpha().raw().toBuffer();
  assert.equal(cell.length, single.length);
  let maxDiff = 0;
  for (let i = 0; i < cell.length; i++) maxDiff = Math.max(maxDiff, Math.abs(cell[i]! - single[i]!));
  assert.ok(maxDiff <= 2, `grid cell differs from the single image by up to ${maxDiff}`);
});

test('README image-to-image: multipart `image` upload with query parameters -> img2img at the requested size', async () => {
  const input = await sharp({ create: { width: 80, height: 64, channels: 3, background: '#d08020' } })
    .jpeg()
    .toBuffer();
  const mp = multipart('image', 'input.jpg', 'multipart/form-data', input);
  const r = await open.app.inject({
    method: 'POST',
    url: `/post_config?${qs({ prompt: 'Make it sunset', model_id: 'stabilityai/stable-diffusion-2-1', num_inference_steps: 20, width: 64, height: 64 })}`,
    ...mp,
  });
  assert.equal(r.statusCode, 200, r.body.slice(0, 300));
  assert.match((await readInfotext(r.rawPayload))!, /Steps: 20, .*Size: 64x64.*Denoising strength: 0.75/);
});

test('README LoRA example: /add_new_lora downloads from Civitai into lora_list.json and the LoRA runs; an unknown lora parameter is a 4xx naming it; Flux 501', async () => {
  const add = await open.app.inject({ method: 'GET', url: '/add_new_lora?name=pixel_art_style' });
  assert.equal(add.statusCode, 200, add.body);
  assert.equal(add.json().name, 'pixel_art_style');
  const listed = (await open.app.inject('/get_available_loras')).json().pixel_art_style;
  assert.equal(listed.model_id, 123456);
  assert.deepEqual(listed['trigger words'], ['pixel_art_style']);
  assert.equal(listed.usage_rights, 'Image,Rent');
  assert.equal(listed.allow_no_mention, true);
  const lora = readFileSync(join(open.config.modelsDir, 'loras', 'pixel_art_style.safetensors'));
  assert.equal(
    createHash('sha256').update(lora).digest('hex'),
    JSON.parse(readFileSync(join(open.config.modelsDir, 'lora_list.json'), 'utf8')).pixel_art_style.sha256,
  );
  const run = await open.app.inject({
    method: 'POST',
    url: `/post_config?${qs({ prompt: 'pixel_art_style, a cat wearing sunglasses', lora: 'pixel_art_style', model_id: 'stabilityai/stable-diffusion-xl-base-1.0', num_inference_steps: 2, width: 64, height: 64 })}`,
  });
  assert.equal(run.statusCode, 200, run.body.slice(0, 300));
  assert.match((await readInfotext(run.rawPayload))!, /Lora hashes: "pixel_art_style: /);
  // A LoRA for another family is refused before anything is downloaded, naming both.
  const before = civitai.requests.length;
  const xl = await open.app.inject({ method: 'POST', url: '/add_new_lora?name=222' });
  assert.equal(xl.statusCode, 400);
  assert.match(xl.json().detail, /^name: Civitai LoRA "XL Only Style" is for SDXL 1\.0 \(sdxl\), but tiny-sd1 is sd1/);
  assert.ok(!civitai.requests.slice(before).some((r) => r.url.startsWith('/storage/') || r.url.startsWith('/api/download/')));
  const ckpt = await open.app.inject({ method: 'POST', url: '/add_new_lora?name=https://civitai.com/models/444' });
  assert.equal(ckpt.statusCode, 400);
  assert.match(ckpt.json().detail, /is a Checkpoint, not a LoRA/);
  const missing = await open.app.inject({ method: 'POST', url: '/add_new_lora?name=no_such_lora_anywhere' });
  assert.equal(missing.statusCode, 404);
  assert.match(missing.json().detail, /^name: no Civitai model is named "no_such_lora_anywhere"/);
  const use = await open.app.inject({
    method: 'POST',
    url: `/post_config?${qs({ prompt: 'pixel_art_style, a cat wearing sunglasses', lora: 'no_such_style', model_id: 'stabilityai/stable-diffusion-xl-base-1.0' })}`,
  });
  assert.ok(use.statusCode >= 400 && use.statusCode < 500, String(use.statusCode));
  assert.match(use.json().detail, /^lora: unknown LoRA "no_such_style"/);
  const flux = await open.app.inject({ method: 'POST', url: `/post_config?${qs({ prompt: 'x', model_id: 'black-forest-labs/FLUX.1-dev' })}` });
  assert.equal(flux.statusCode, 501);
  assert.match(flux.json().detail, /Flux/);
});

test('auth: every route needs X-API-Key; /add_new_lora needs the admin key', async () => {
  for (const url of ['/get_available_stable_diffs', '/get_available_loras', '/buffer_status']) {
    assert.equal((await s.app.inject(url)).statusCode, 401, url);
    assert.equal(typeof (await s.app.inject(url)).json().detail, 'string');
    assert.equal((await s.app.inject({ url, headers: USER })).statusCode, 200, url);
  }
  assert.equal((await s.app.inject({ method: 'POST', url: '/post_config?prompt=x' })).statusCode, 401);
  const asUser = await s.app.inject({ method: 'POST', url: '/add_new_lora?name=x', headers: USER });
  assert.equal(asUser.statusCode, 403);
  assert.match(asUser.json().detail, /admin/);
  // The admin gets past auth to Civitai's answer (no such model there).
  assert.equal((await s.app.inject({ method: 'POST', url: '/add_new_lora?name=x', headers: ADMIN })).statusCode, 404);
});

test('listings and status: stable diffs (names and labels), loras, buffer status', async () => {
  const diffs = (await s.app.inject({ url: '/get_available_stable_diffs', headers: USER })).json();
  assert.deepEqual([...diffs].sort(), ['stabilityai/stable-diffusion-2-1', 'stabilityai/stable-diffusion-xl-base-1.0', 'tiny-sd1']);
  assert.deepEqual((await s.app.inject({ url: '/get_available_loras', headers: USER })).json(), {});
  const buffer = (await s.app.inject({ url: '/buffer_status', headers: USER })).json();
  assert.equal(buffer.default_model, 'tiny-sd1');
  assert.equal(typeof buffer.busy, 'boolean');
});

test('errors: FastAPI 422 for missing or mistyped query parameters, 400 for unknown models; UniDiffuser routes', async () => {
  const missing = await s.app.inject({ method: 'POST', url: '/post_config?num_inference_steps=3', headers: USER });
  assert.equal(missing.statusCode, 422);
  assert.deepEqual(missing.json().detail[0].loc, ['querystring', 'prompt']);
  const typed = await s.app.inject({ method: 'POST', url: '/post_config?prompt=x&width=wide', headers: USER });
  assert.equal(typed.statusCode, 422);
  const model = await s.app.inject({ method: 'POST', url: '/post_config?prompt=x&model_id=runwayml/stable-diffusion-v1-5&width=64&height=64', headers: USER });
  assert.equal(model.statusCode, 400);
  assert.match(model.json().detail, /unknown model "runwayml\/stable-diffusion-v1-5"; available: tiny-sd1/);

  const p2i = await open.app.inject({ method: 'POST', url: '/prompt2img?prompt=a%20red%20apple&width=64&height=64&steps=4' });
  assert.equal(p2i.statusCode, 200);
  assert.equal(p2i.headers['content-type'], 'image/png');
  // Built since (issue 15): without a CLIP model in models/clip_vision/ they answer 400 saying what to put where.
  for (const url of ['/img2prompt', '/img2embed']) {
    const r = await open.app.inject({ method: 'POST', url, ...multipart('image', 'photo.jpg', 'image/jpeg', Buffer.from('x')) });
    assert.equal(r.statusCode, 400, url);
    assert.match(r.json().detail, /clip_model: no usable CLIP model is installed.*clip_vision\//);
  }
  assert.equal((await open.app.inject('/llm_interface?text=hi')).statusCode, 501);
});

test('scheduler: diffusers class names map to the A1111 samplers (Karras by suffix or use_karras_sigmas); unknown names 400', async () => {
  const cases: Array<[Record<string, string | number>, RegExp]> = [
    [{ scheduler: 'EulerDiscreteScheduler' }, /Sampler: Euler,/],
    [{ scheduler: 'EulerAncestralDiscreteScheduler' }, /Sampler: Euler a,/],
    [{ scheduler: 'DPMSolverMultistepScheduler' }, /Sampler: DPM\+\+ 2M,(?!.*Schedule type: Karras)/],
    [{ scheduler: 'DPMSolverMultistepScheduler', use_karras_sigmas: 'true' }, /Sampler: DPM\+\+ 2M,.*Schedule type: Karras/],
    [{ scheduler: 'DPMSolverMultistepScheduler Karras' }, /Sampler: DPM\+\+ 2M,.*Schedule type: Karras/],
    [{ scheduler: 'DDIMScheduler' }, /Sampler: DDIM,/],
    [{ scheduler: 'PNDMScheduler' }, /Sampler: PLMS,/],
    [{ scheduler: 'LMSDiscreteScheduler' }, /Sampler: LMS,/],
    [{ scheduler: 'HeunDiscreteScheduler' }, /Sampler: Heun,/],
    [{ scheduler: 'KDPM2DiscreteScheduler' }, /Sampler: DPM2,/],
    [{ scheduler: 'KDPM2AncestralDiscreteScheduler' }, /Sampler: DPM2 a,/],
    [{ scheduler: 'UniPCMultistepScheduler' }, /Sampler: UniPC,/],
    [{ scheduler: 'LCMScheduler' }, /Sampler: LCM,/],
    [{ scheduler: 'Euler a' }, /Sampler: Euler a,/],
  ];
  for (const [extra, infotext] of cases) {
    const params = { prompt: 'a red apple', num_inference_steps: 2, width: 64, height: 64, seed: 1, ...extra };
    const r = await s.app.inject({ method: 'POST', url: `/post_config?${qs(params)}`, headers: USER });
    assert.equal(r.statusCode, 200, `${JSON.stringify(extra)}: ${r.body.slice(0, 300)}`);
    assert.match((await readInfotext(r.rawPayload))!.replace(/\n/g, ' '), infotext, JSON.stringify(extra));
  }
  const bad = await s.app.inject({
    method: 'POST',
    url: `/post_config?${qs({ prompt: 'x', scheduler: 'FancyScheduler', width: 64, height: 64 })}`,
    headers: USER,
  });
  assert.equal(bad.statusCode, 400);
  assert.match(bad.json().detail, /sampler.*FancyScheduler/);
});

test('img2img without width/height keeps the upload size, rounded down to a multiple of 8 (as diffusers)', async () => {
  const input = await sharp({ create: { width: 83, height: 70, channels: 3, background: '#3080d0' } })
    .png()
    .toBuffer();
  const mp = multipart('image', 'input.png', 'image/png', input);
  const r = await s.app.inject({
    method: 'POST',
    url: `/post_config?${qs({ prompt: 'Make it sunset', num_inference_steps: 4 })}`,
    payload: mp.payload,
    headers: { ...USER, ...mp.headers },
  });
  assert.equal(r.statusCode, 200, r.body.slice(0, 300));
  const meta = await sharp(r.rawPayload).metadata();
  assert.deepEqual([meta.width, meta.height], [80, 64]);
  assert.match((await readInfotext(r.rawPayload))!, /Size: 80x64/);
});

test('torch_dtype: float16, bfloat16, float32 (and torch.-prefixed) are accepted; anything else is a 400 naming the field', async () => {
  for (const dtype of ['float16', 'bfloat16', 'torch.float32']) {
    const r = await s.app.inject({
      method: 'POST',
      url: `/post_config?${qs({ prompt: 'x', torch_dtype: dtype, num_inference_steps: 2, width: 64, height: 64 })}`,
      headers: USER,
    });
    assert.equal(r.statusCode, 200, `${dtype}: ${r.body.slice(0, 200)}`);
  }
  const bad = await s.app.inject({ method: 'POST', url: `/post_config?${qs({ prompt: 'x', torch_dtype: 'int3', width: 64, height: 64 })}`, headers: USER });
  assert.equal(bad.statusCode, 400);
  assert.match(bad.json().detail, /^torch_dtype: "int3" is not a dtype.*float16, bfloat16, float32/);
});

test("count_returned > 1: the grid keeps every image's parameters (parameters = the first, parameters_N each cell)", async () => {
  const params = { prompt: 'a red apple', num_inference_steps: 2, width: 64, height: 64, count_returned: 3, seed: 42 };
  const r = await s.app.inject({ method: 'POST', url: `/post_config?${qs(params)}`, headers: USER });
  assert.equal(r.statusCode, 200, r.body.slice(0, 300));
  const text = readPngText(r.rawPayload);
  assert.match(text.parameters!, /Seed: 42,/);
  for (const [i, seed] of [42, 43, 44].entries()) assert.match(text[`parameters_${i + 1}`]!, new RegExp(`^a red apple\\n.*Seed: ${seed},`, 's'));
});

test('API_KEY / ADMIN_API_KEY (environment or a .env file in the data dir) work beside KILN_API_KEYS', async () => {
  const t = tempDir('kiln-seed003-env-');
  try {
    writeFileSync(join(t.dir, '.env'), '# the seed keeps its keys here\nADMIN_API_KEY="seed-admin-key"\nAPI_KEY=overridden-by-env\n');
    const config = loadConfig({ flags: { 'data-dir': t.dir }, env: { API_KEY: 'seed-user-key', KILN_API_KEYS: 'kiln-user-key' } });
    const roles = Object.fromEntries(config.keys.map((k) => [k.key, k.role]));
    assert.deepEqual(roles, { 'kiln-user-key': 'user', 'seed-user-key': 'user', 'seed-admin-key': 'admin' });
    const srv = await startCompatServer({ keys: config.keys });
    try {
      assert.equal((await srv.app.inject({ url: '/buffer_status', headers: { 'x-api-key': 'seed-user-key' } })).statusCode, 200);
      assert.equal((await srv.app.inject({ url: '/buffer_status', headers: { 'x-api-key': 'kiln-user-key' } })).statusCode, 200);
      assert.equal((await srv.app.inject({ url: '/buffer_status', headers: { 'x-api-key': 'overridden-by-env' } })).statusCode, 401);
      assert.equal((await srv.app.inject({ method: 'POST', url: '/add_new_lora?name=x', headers: { 'x-api-key': 'seed-user-key' } })).statusCode, 403);
      const admin = await srv.app.inject({ method: 'POST', url: '/add_new_lora?name=x', headers: { 'x-api-key': 'seed-admin-key' } });
      assert.ok(![401, 403].includes(admin.statusCode), String(admin.statusCode));
    } finally {
      await srv.close();
    }
  } finally {
    t.remove();
  }
});

test('README image captioning and embeddings (/img2prompt, /img2embed) with a CLIP model in models/clip_vision/', async () => {
  writeTinyClipModel(join(open.config.modelsDir, 'clip_vision', 'tiny-clip'));
  open.app.kiln.models.refresh();
  const photo = await sharp({ create: { width: 96, height: 64, channels: 3, background: '#3a7' } })
    .jpeg()
    .toBuffer();
  // files = {'image': ('photo.jpg', open('photo.jpg', 'rb'), 'image/jpeg')}; requests.post(url, files=files)
  const caption = await open.app.inject({ method: 'POST', url: '/img2prompt', ...multipart('image', 'photo.jpg', 'image/jpeg', photo) });
  assert.equal(caption.statusCode, 200, caption.body);
  assert.match(caption.headers['content-type'] as string, /application\/json/);
  // caption = response.text: FastAPI's JSON-encoded str, quotes included, as the seed's server answered.
  assert.match(caption.body, /^"[^"]+, [^"]+, [^"]+"$/);
  assert.equal(typeof caption.json(), 'string');

  const r = await open.app.inject({ method: 'POST', url: '/img2embed', ...multipart('image', 'photo.jpg', 'image/jpeg', photo) });
  assert.equal(r.statusCode, 200, r.body);
  const embeddings = r.json();
  // print(len(embeddings['CLIP_embeddings'])): the CLIP projection width (512 for the seed's ViT-B/32; 16 here).
  assert.equal(embeddings.CLIP_embeddings.length, 16);
  // print(len(embeddings['vae_emb'])): 4 latent channels, each [h][w] at the checkpoint's native size / 8 (64x64 for SD1.5; 32x32 here).
  assert.equal(embeddings.vae_emb.length, 4);
  assert.equal(embeddings.vae_emb[0].length, 32);
  assert.equal(embeddings.vae_emb[0][0].length, 32);
  assert.ok(embeddings.vae_emb.flat(2).every(Number.isFinite));

  const none = await open.app.inject({ method: 'POST', url: '/img2embed', ...multipart('other', 'photo.jpg', 'image/jpeg', photo) });
  assert.equal(none.statusCode, 400);
  assert.match(none.json().detail, /image: No image was passed!/);
  const notImage = await open.app.inject({ method: 'POST', url: '/img2prompt', ...multipart('image', 'photo.jpg', 'image/jpeg', Buffer.from('x')) });
  assert.equal(notImage.statusCode, 400);
  assert.match(notImage.json().detail, /image: is not a readable image/);
});
