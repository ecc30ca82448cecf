// Per-request VAE through the real server and engine (tiny SD1): native `vae`, A1111 override_settings.sd_vae and
// options sd_vae, /sdapi/v1/sd-vae, the server's --vae default, and the 4xx answers for unknown or unfit VAEs.
// The VAE files are written here: a copy of the tiny model's own VAE (same pixels), one with perturbed decoder
// weights in A1111's models/VAE/ folder (other pixels), one with 16 latent channels and a LoRA misfiled as a VAE.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import sharp from 'sharp';
import { fileURLToPath } from 'node:url';
import { SafetensorsFile, writeSafetensors, type TensorToWrite } from '../../src/engine/weights/safetensors.ts';
import { loadConfig } from '../../src/server/config.ts';
import { readInfotext } from '../../src/storage/encode.ts';
import { startCompatServer, TINY_SD1, type CompatServer } from './compat/helpers.ts';

const OWN_VAE = join(TINY_SD1, 'vae', 'diffusion_pytorch_model.safetensors');
const LORA = fileURLToPath(new URL('../fixtures/loras/tiny-sd1-peft.safetensors', import.meta.url));

/** The tiny VAE with some tensors replaced (name -> new tensor). */
function rewriteVae(out: string, change: (name: string, t: TensorToWrite, values: () => Float32Array) => TensorToWrite): void {
  const f = SafetensorsFile.open(OWN_VAE);
  const tensors: Record<string, TensorToWrite> = {};
  for (const name of f.names()) {
    const e = f.entry(name);
    tensors[name] = change(name, { dtype: e.dtype, shape: [...e.shape], bytes: f.readBytes(name) }, () => f.readFloat32(name));
  }
  writeSafetensors(out, tensors);
}

function f32(shape: number[], fill: (i: number) => number): TensorToWrite {
  const n = shape.reduce((a, b) => a * b, 1);
  return { dtype: 'F32', shape, bytes: new Uint8Array(Float32Array.from({ length: n }, (_, i) => fill(i)).buffer) };
}

let s: CompatServer;
before(async () => {
  s = await startCompatServer();
  const models = join(s.dir, 'models');
  mkdirSync(join(models, 'VAE'), { recursive: true });
  copyFileSync(OWN_VAE, join(models, 'vae', 'tiny-vae.safetensors'));
  // A shifted output bias moves every decoded pixel.
  rewriteVae(join(models, 'VAE', 'perturbed.safetensors'), (name, t, values) => {
    if (name !== 'decoder.conv_out.bias') return t;
    const v = values();
    return f32(t.shape, (i) => v[i]! + 0.4);
  });
  rewriteVae(join(models, 'vae', 'wide.safetensors'), (name, t) => {
    if (name === 'post_quant_conv.weight') return f32([16, 16, 1, 1], () => 0.01);
    if (name === 'post_quant_conv.bias') return f32([16], () => 0);
    return t;
  });
  copyFileSync(LORA, join(models, 'vae', 'not-a-vae.safetensors'));
  s.app.kiln.models.refresh();
});
after(async () => {
  await s.close();
});

const job = { prompt: 'a red apple', width: 64, height: 64, steps: 3, seed: 11, sampler: 'Euler' };

async function nativePixels(extra: Record<string, unknown> = {}): Promise<Buffer> {
  const r = await s.app.inject({ method: 'POST', url: '/v1/generate', payload: { ...job, ...extra } });
  assert.equal(r.statusCode, 200, r.body);
  return sharp(Buffer.from(r.json().images[0].base64, 'base64')).raw().toBuffer();
}

const a1111 = (payload: Record<string, unknown>) =>
  s.app.inject({
    method: 'POST',
    url: '/sdapi/v1/txt2img',
    payload: { prompt: 'a red apple', width: 64, height: 64, steps: 3, seed: 11, sampler_name: 'Euler', ...payload },
  });

test('vae: /sdapi/v1/sd-vae lists models/vae/ and A1111 models/VAE/', async () => {
  const r = await s.app.inject('/sdapi/v1/sd-vae');
  assert.equal(r.statusCode, 200);
  const names = r.json().map((v: { model_name: string }) => v.model_name);
  for (const n of ['tiny-vae', 'perturbed', 'wide']) assert.ok(names.includes(n), `${n} in ${names}`);
});

test('vae: native `vae` picks a file per request; the same weights give the same pixels, other weights others', async () => {
  const own = await nativePixels();
  assert.deepEqual(await nativePixels({ vae: 'tiny-vae' }), own, 'a copy of the model VAE decodes the same');
  assert.deepEqual(await nativePixels({ vae: 'None' }), own, '"None" is the checkpoint VAE');
  const perturbed = await nativePixels({ vae: 'perturbed.safetensors' });
  assert.notDeepEqual(perturbed, own, 'another VAE changes the pixels');
  // Back to the model's own VAE after the view: the base model is untouched.
  assert.deepEqual(await nativePixels(), own);
  assert.deepEqual(await nativePixels({ vae: 'PERTURBED' }), perturbed, 'names match in any case');
});

test('vae: A1111 override_settings.sd_vae and options sd_vae; Automatic/None', async () => {
  const png = async (r: Awaited<ReturnType<typeof a1111>>) => {
    assert.equal(r.statusCode, 200, r.body);
    return Buffer.from(r.json().images[0], 'base64');
  };
  const none = await sharp(await png(await a1111({ override_settings: { sd_vae: 'None' } })))
    .raw()
    .toBuffer();
  const auto = await sharp(await png(await a1111({})))
    .raw()
    .toBuffer();
  assert.deepEqual(auto, none, 'Automatic with no VAE named like the checkpoint and no --vae: the checkpoint VAE');
  const chosen = await png(await a1111({ override_settings: { sd_vae: 'perturbed.safetensors' } }));
  assert.notDeepEqual(await sharp(chosen).raw().toBuffer(), none);
  const opt = await s.app.inject({ method: 'POST', url: '/sdapi/v1/options', payload: { sd_vae: 'perturbed' } });
  assert.equal(opt.statusCode, 200, opt.body);
  try {
    assert.deepEqual(
      await sharp(await png(await a1111({})))
        .raw()
        .toBuffer(),
      await sharp(chosen).raw().toBuffer(),
      'the options sd_vae applies',
    );
  } finally {
    await s.app.inject({ method: 'POST', url: '/sdapi/v1/options', payload: { sd_vae: 'Automatic' } });
  }
  assert.ok(await readInfotext(chosen));
});

test('vae: unknown names and unfit files answer 4xx naming the field, never a failed job', async () => {
  const unknown = await s.app.inject({ method: 'POST', url: '/v1/generate', payload: { ...job, vae: 'nope' } });
  assert.equal(unknown.statusCode, 400, unknown.body);
  assert.equal(unknown.json().error.field, 'vae');
  assert.match(unknown.json().error.message, /unknown VAE "nope".*Automatic, None,.*tiny-vae.*perturbed/);
  const a = await a1111({ override_settings: { sd_vae: 'nope.safetensors' } });
  assert.ok(a.statusCode >= 400 && a.statusCode < 500, a.body);
  assert.match(a.body, /override_settings\.sd_vae/);
  assert.match(a.body, /unknown VAE/);

  const wide = await s.app.inject({ method: 'POST', url: '/v1/generate', payload: { ...job, vae: 'wide' } });
  assert.equal(wide.statusCode, 400, wide.body);
  assert.equal(wide.json().error.field, 'vae');
  assert.match(wide.json().error.message, /16 latent channels.*uses 4.*another model family/);
  const lora = await s.app.inject({ method: 'POST', url: '/v1/jobs', payload: { ...job, vae: 'not-a-vae' } });
  assert.equal(lora.statusCode, 400, lora.body);
  assert.match(lora.json().error.message, /not a VAE/);
});

test('vae: kiln serve --vae / KILN_VAE set the default a request can override with "None"', async () => {
  assert.equal(loadConfig({ flags: { 'data-dir': s.dir, vae: 'perturbed' }, env: {} }).vae, 'perturbed');
  assert.equal(loadConfig({ flags: { 'data-dir': s.dir }, env: { KILN_VAE: 'tiny-vae' } }).vae, 'tiny-vae');
  const own = await nativePixels();
  const perturbed = await nativePixels({ vae: 'perturbed' });
  const other = await startCompatServer({ vae: join(s.dir, 'models', 'VAE', 'perturbed.safetensors') });
  try {
    const gen = async (extra: Record<string, unknown> = {}) => {
      const r = await other.app.inject({ method: 'POST', url: '/v1/generate', payload: { ...job, ...extra } });
      assert.equal(r.statusCode, 200, r.body);
      return sharp(Buffer.from(r.json().images[0].base64, 'base64')).raw().toBuffer();
    };
    assert.deepEqual(await gen(), perturbed, 'the server default applies when a request names none');
    assert.deepEqual(await gen({ vae: 'None' }), own, '"None" still means the checkpoint VAE');
  } finally {
    await other.close();
  }
});

test('vae: seed 000 (RunPod /runsync) input.override_settings.sd_vae', async () => {
  const runsync = (sdVae: string) =>
    s.app.inject({
      method: 'POST',
      url: '/v2/YOUR_ENDPOINT_ID/runsync',
      payload: { input: { prompt: 'a red apple, high quality', steps: 3, width: 64, height: 64, seed: 12345, override_settings: { sd_vae: sdVae } } },
    });
  const pixelsOf = async (r: Awaited<ReturnType<typeof runsync>>) => {
    assert.equal(r.statusCode, 200, r.body);
    assert.equal(r.json().status, 'COMPLETED', r.body.slice(0, 300));
    return sharp(Buffer.from(r.json().output.image_base64, 'base64')).raw().toBuffer();
  };
  const none = await pixelsOf(await runsync('None'));
  assert.notDeepEqual(await pixelsOf(await runsync('perturbed.safetensors')), none);
  // RunPod reports rejected input as a FAILED job with the reason (its convention; see runpod.test.ts), naming the field.
  const unknown = (await runsync('nope')).json();
  assert.equal(unknown.status, 'FAILED');
  assert.match(unknown.error, /^override_settings\.sd_vae: unknown VAE "nope"; choose one of: Automatic, None/);
});
