// LoRAs through every surface on the real engine (tiny-sd1 and the tiny LoRA fixtures copied into the test
// models folder): A1111 tags (removed from the prompt, te/unet weights, infotext "Lora hashes"), /sdapi/v1/loras
// and refresh-loras, the seed 003 and seed 004 README LoRA examples, native `loras`, and the bad-input answers.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import sharp from 'sharp';
import { writeSafetensors } from '../../../src/engine/weights/safetensors.ts';
import { startCompatServer, type CompatServer } from './helpers.ts';

const FIX = 'test/fixtures';
let s: CompatServer;
const loraDir = () => join(s.config.modelsDir, 'loras');
before(async () => {
  s = await startCompatServer({
    modelAliases: {
      'stable-diffusion-xl-base-1.0': 'tiny-sd1',
      'stable-diffusion-xl-refiner-1.0': 'tiny-sd1',
      'stabilityai/stable-diffusion-xl-base-1.0': 'tiny-sd1',
    },
  });
  copyFileSync(`${FIX}/loras/tiny-sd1-kohya.safetensors`, join(loraDir(), 'tiny-sd1-kohya.safetensors'));
  copyFileSync(`${FIX}/loras/tiny-sd1-loha.safetensors`, join(loraDir(), 'tiny-sd1-loha.safetensors'));
  copyFileSync(`${FIX}/loras/tiny-sdxl-kohya.safetensors`, join(loraDir(), 'tiny-sdxl-kohya.safetensors'));
  copyFileSync(`${FIX}/loras/tiny-sd1-kohya.safetensors`, join(loraDir(), 'my-lora.safetensors'));
  copyFileSync(`${FIX}/loras/tiny-sd1-peft.safetensors`, join(loraDir(), 'pixel_art_style.safetensors'));
  writeFileSync(join(loraDir(), 'broken.safetensors'), 'this is not a safetensors file');
  const embeddings = join(s.config.modelsDir, 'embeddings');
  copyFileSync(`${FIX}/embeddings/tiny-ti.safetensors`, join(embeddings, 'tiny-ti.safetensors'));
  writeFileSync(join(embeddings, 'broken-ti.safetensors'), 'not an embedding');
  s.app.kiln.models.refresh();
});
after(async () => {
  await s.close();
});

const post = (url: string, payload: unknown) => s.app.inject({ method: 'POST', url, payload: payload as object });
const small = { steps: 2, width: 64, height: 64, seed: 5, cfg_scale: 7 };
/** The decoded pixels of an A1111 answer's first image (the PNG bytes also hold the infotext). */
const pixels = async (r: { json: () => { images: string[] } }) => (await sharp(Buffer.from(r.json().images[0]!, 'base64')).raw().toBuffer()).toString('base64');

test('A1111: <lora:name:w> runs, is removed from the prompt, and the infotext carries Lora hashes; te/unet weights apply', async () => {
  const plain = await post('/sdapi/v1/txt2img', { prompt: 'a red apple', ...small });
  const tagged = await post('/sdapi/v1/txt2img', { prompt: 'a red apple <lora:tiny-sd1-kohya:0.7>', ...small });
  assert.equal(tagged.statusCode, 200, tagged.body.slice(0, 300));
  const info = JSON.parse(tagged.json().info);
  assert.match(info.infotexts[0], /Lora hashes: "tiny-sd1-kohya: [0-9a-f]{12}"/);
  assert.notEqual(await pixels(tagged), await pixels(plain));
  // The tag is not encoded (see weight 0 below); the infotext keeps it, as A1111's does, so it can be pasted back.
  assert.match(info.infotexts[0], /^a red apple <lora:tiny-sd1-kohya:0.7>\n/);
  // The tag is not encoded as text: te 0 and unet 0 give exactly the untagged image.
  const zero = await post('/sdapi/v1/txt2img', { prompt: 'a red apple <lora:tiny-sd1-kohya:0:0>', ...small });
  assert.equal(zero.statusCode, 200);
  assert.equal(await pixels(zero), await pixels(plain));
  const named = await post('/sdapi/v1/txt2img', { prompt: 'a red apple <lora:tiny-sd1-kohya:te=0:unet=0.7>', ...small });
  assert.equal(named.statusCode, 200);
  const unetOnly = await post('/sdapi/v1/txt2img', { prompt: 'a red apple <lora:tiny-sd1-kohya:0:0.7>', ...small });
  assert.equal(await pixels(named), await pixels(unetOnly));
  assert.notEqual(await pixels(unetOnly), await pixels(tagged));
});

test('A1111: /sdapi/v1/loras lists files with metadata; refresh-loras picks up a new file', async () => {
  const list = (await s.app.inject('/sdapi/v1/loras')).json() as Array<{ name: string; metadata: Record<string, string> }>;
  const kohya = list.find((l) => l.name === 'tiny-sd1-kohya');
  assert.equal(kohya?.metadata.ss_base_model_version, 'sd_v1');
  assert.ok(!list.some((l) => l.name === 'late'));
  copyFileSync(`${FIX}/loras/tiny-sd1-lokr.safetensors`, join(loraDir(), 'late.safetensors'));
  assert.equal((await post('/sdapi/v1/refresh-loras', {})).statusCode, 200);
  assert.ok(((await s.app.inject('/sdapi/v1/loras')).json() as Array<{ name: string }>).some((l) => l.name === 'late'));
});

test('bad LoRA input answers 4xx: unknown name with close matches, another family, a corrupt file, a weight beyond 5', async () => {
  const cases: Array<[string, RegExp]> = [
    ['<lora:tiny-sd1-kohyo:1>', /unknown LoRA "tiny-sd1-kohyo"; did you mean "tiny-sd1-kohya"/],
    ['<lora:tiny-sdxl-kohya:1>', /LoRA "tiny-sdxl-kohya" was made for sdxl models, but the model is sd1/],
    ['<lora:broken:1>', /LoRA "broken" cannot be used: .*broken\.safetensors: not a safetensors file/],
    ['<lora:tiny-sd1-kohya:6>', /LoRA "tiny-sd1-kohya" has weight 6 .*from -5 to 5/],
    ['<lora:tiny-sd1-kohya:abc>', /has weight NaN/],
  ];
  for (const [tag, message] of cases) {
    const r = await post('/sdapi/v1/txt2img', { prompt: `a cat ${tag}`, ...small });
    assert.ok(r.statusCode >= 400 && r.statusCode < 500, `${tag}: ${r.statusCode}`);
    assert.match(r.json().detail, message, tag);
    assert.ok(r.json().detail.startsWith('prompt:'), r.json().detail);
  }
});

test('seed 004 README example with its LoRA (my-lora at 0.8; 64x64, no hires) runs to done; GET /loras lists it', async () => {
  const request = {
    prompt: 'a beautiful green forest with a river and a waterfall',
    negative_prompt: 'blurry, bad quality',
    steps: 3,
    cfg_scale: 7.0,
    width: 64,
    height: 64,
    model: 'stable-diffusion-xl-base-1.0',
    sampler_name: 'DPM++ 2M Karras',
    fileType: 'jpg',
    loras: [{ name: 'my-lora', scale: 0.8 }, 'tiny-sd1-loha'],
    seed: 123456789,
  };
  const r = await post('/txt2img', request);
  assert.equal(r.statusCode, 200, r.body);
  let final: any;
  for (let i = 0; i < 2000 && !(final && ['done', 'error'].includes(final.state)); i++) {
    await new Promise((res) => setTimeout(res, 10));
    final = (await s.app.inject(`/queue/${r.json().job_id}`)).json();
  }
  assert.equal(final.state, 'done', JSON.stringify(final));
  const loras = (await s.app.inject('/loras')).json();
  assert.equal(loras.status, 'success');
  assert.ok(loras.loras.some((l: { name: string; scale: number }) => l.name === 'my-lora' && l.scale === 1));
  const unknown = await post('/txt2img', { ...request, loras: [{ name: 'my-lor', scale: 1 }] });
  assert.equal(unknown.statusCode, 400);
  assert.match(unknown.json().error, /^loras: unknown LoRA "my-lor"; did you mean "my-lora"/);
});

test('seed 003 README LoRA example: /get_available_loras reads lora_list.json; /post_config with lora= returns an image', async () => {
  writeFileSync(
    join(s.config.modelsDir, 'lora_list.json'),
    JSON.stringify({
      pixel_art_style: {
        model_id: 123456,
        base_model: 'stabilityai/stable-diffusion-xl-base-1.0',
        lora_path: 'https://civitai.com/api/download/models/123456',
        'trigger words': ['pixel_art_style'],
        allow_no_mention: true,
        usage_rights: 'AllowCommercialUse',
      },
    }),
  );
  const list = (await s.app.inject('/get_available_loras')).json();
  assert.deepEqual(list.pixel_art_style['trigger words'], ['pixel_art_style']);
  assert.equal(list.pixel_art_style.usage_rights, 'AllowCommercialUse');
  assert.equal(list['my-lora'].base_model, null);
  const qs = new URLSearchParams({
    prompt: 'pixel_art_style, a cat wearing sunglasses',
    lora: 'pixel_art_style',
    model_id: 'stabilityai/stable-diffusion-xl-base-1.0',
    width: '64',
    height: '64',
    num_inference_steps: '2',
  });
  const r = await s.app.inject({ method: 'POST', url: `/post_config?${qs}` });
  assert.equal(r.statusCode, 200, r.body.slice(0, 300));
  assert.match(String(r.headers['content-type']), /^image\//);
});

test('native: loras on /v1/generate apply with their weight; keys that matched no layer are the job warnings, by name', async () => {
  const r = await post('/v1/generate', { prompt: 'a red apple', steps: 2, width: 64, height: 64, seed: 5, loras: [{ name: 'tiny-sd1-loha', weight: -0.5 }] });
  assert.equal(r.statusCode, 200, r.body.slice(0, 300));
  assert.match(JSON.stringify(r.json()), /Lora hashes/);
  assert.equal(r.json().warnings, undefined);
  const down = new Float32Array(32 * 9).fill(0.01);
  writeSafetensors(join(loraDir(), 'partial.safetensors'), {
    'lora_unet_down_blocks_0_resnets_0_conv1.lora_down.weight': { dtype: 'F32', shape: [1, 32, 3, 3], bytes: new Uint8Array(down.buffer) },
    'lora_unet_down_blocks_0_resnets_0_conv1.lora_up.weight': {
      dtype: 'F32',
      shape: [32, 1, 1, 1],
      bytes: new Uint8Array(new Float32Array(32).fill(0.01).buffer),
    },
    'lora_unet_input_blocks_9_9_transformer_blocks_0_attn1_to_q.lora_down.weight': {
      dtype: 'F32',
      shape: [1, 4],
      bytes: new Uint8Array(new Float32Array(4).buffer),
    },
    'lora_unet_input_blocks_9_9_transformer_blocks_0_attn1_to_q.lora_up.weight': {
      dtype: 'F32',
      shape: [4, 1],
      bytes: new Uint8Array(new Float32Array(4).buffer),
    },
  });
  s.app.kiln.models.refresh();
  const partial = await post('/v1/jobs', { prompt: 'a red apple', steps: 1, width: 64, height: 64, loras: [{ name: 'partial', weight: 1 }] });
  assert.equal(partial.statusCode, 202, partial.body);
  let job: any;
  for (let i = 0; i < 2000 && !(job && ['succeeded', 'failed'].includes(job.state)); i++) {
    await new Promise((res) => setTimeout(res, 10));
    job = (await s.app.inject(`/v1/jobs/${partial.json().id}`)).json();
  }
  assert.equal(job.state, 'succeeded');
  assert.match(job.warnings[0], /LoRA "partial": 1 key\(s\) matched no layer .*lora_unet_input_blocks_9_9_transformer_blocks_0_attn1_to_q/);
});

test('A1111 textual inversion: /sdapi/v1/embeddings lists the files; a prompt naming one uses its vectors', async () => {
  const list = (await s.app.inject('/sdapi/v1/embeddings')).json();
  assert.deepEqual(list.loaded['tiny-ti'], { step: null, sd_checkpoint: null, sd_checkpoint_name: null, shape: 32, vectors: 3 });
  assert.ok('broken-ti' in list.skipped);
  const withTi = await post('/sdapi/v1/txt2img', { prompt: 'a photo of tiny-ti', ...small });
  assert.equal(withTi.statusCode, 200, withTi.body.slice(0, 300));
  // "tiny - ti" has the same BPE tokens but does not name the embedding, so it is read as plain words.
  const spelled = await post('/sdapi/v1/txt2img', { prompt: 'a photo of tiny - ti', ...small });
  assert.notEqual(await pixels(withTi), await pixels(spelled));
});
