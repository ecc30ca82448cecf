// OpenAI Images through the official `openai` npm client pointed at Kiln (baseURL), plus raw HTTP for the
// conventions the client cannot express. Real engine, tiny SD1 fixture, 64x64 images.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import sharp from 'sharp';
import OpenAI, { toFile } from 'openai';
import { readInfotext } from '../../../src/storage/encode.ts';
import { listenCompatServer, type CompatServer } from './helpers.ts';

let s: CompatServer & { url: string };
let client: OpenAI;
before(async () => {
  s = await listenCompatServer({ keys: [{ name: 'alice', key: 'sk-test-alice-key', role: 'user' }] });
  client = new OpenAI({ baseURL: `${s.url}/v1`, apiKey: 'sk-test-alice-key', maxRetries: 0 });
});
after(async () => {
  await s.close();
});

async function png(color: string, size = 64): Promise<Buffer> {
  return sharp({ create: { width: size, height: size, channels: 3, background: color } })
    .png()
    .toBuffer();
}

test('openai client: images.generate with b64_json -> PNGs of the requested size and count', async () => {
  const res = await client.images.generate({
    model: 'dall-e-2',
    prompt: 'a red apple|blurry',
    n: 2,
    size: '64x64' as never,
    response_format: 'b64_json',
    quality: 'low',
  });
  assert.ok(res.created > 1_600_000_000);
  assert.equal(res.data!.length, 2);
  const seeds = [];
  for (const d of res.data!) {
    const bytes = Buffer.from(d.b64_json!, 'base64');
    const meta = await sharp(bytes).metadata();
    assert.deepEqual([meta.format, meta.width, meta.height], ['png', 64, 64]);
    const info = (await readInfotext(bytes))!;
    // "positive|negative" (LocalAI's convention) splits into prompt and negative prompt; quality low = 12 steps.
    assert.match(info, /^a red apple\nNegative prompt: blurry\nSteps: 12,/);
    seeds.push(Number(/Seed: (\d+)/.exec(info)![1]));
  }
  assert.equal(seeds[1], seeds[0]! + 1);
  assert.equal(res.size, '64x64');
  assert.equal(res.output_format, 'png');
});

test('openai client: response_format url serves the stored file; output_format jpeg with compression', async () => {
  const res = await client.images.generate({ prompt: 'a boat', size: '64x64' as never, response_format: 'url', quality: 'low' });
  const url = res.data![0]!.url!;
  assert.ok(url.startsWith(`${s.url}/v1/images/`), url);
  const fetched = await fetch(url, { headers: { authorization: 'Bearer sk-test-alice-key' } });
  assert.equal(fetched.status, 200);
  assert.equal(fetched.headers.get('content-type'), 'image/png');
  const jpeg = await client.images.generate({
    model: 'gpt-image-1',
    prompt: 'a boat',
    size: '64x64' as never,
    output_format: 'jpeg',
    output_compression: 40,
    quality: 'low',
  });
  const bytes = Buffer.from(jpeg.data![0]!.b64_json!, 'base64');
  assert.equal((await sharp(bytes).metadata()).format, 'jpeg');
  assert.equal(jpeg.output_format, 'jpeg');
});

test('openai client: images.edit uploads an image (img2img) and images.createVariation works', async () => {
  const input = await png('#2060c0');
  const res = await client.images.edit({
    image: await toFile(input, 'input.png', { type: 'image/png' }),
    prompt: 'make it sunset',
    n: 1,
    response_format: 'b64_json',
    quality: 'low',
  } as never);
  const bytes = Buffer.from(res.data![0]!.b64_json!, 'base64');
  const meta = await sharp(bytes).metadata();
  assert.deepEqual([meta.width, meta.height], [64, 64], 'the output defaults to the input size');
  assert.match((await readInfotext(bytes))!, /^make it sunset\n.*Denoising strength: 0.75/s);

  // dall-e-2 only offers 256x256 and up; the tiny model at 256x256 takes ~40 s on CPU, so this asks for 128x128.
  const v = await client.images.createVariation({
    image: await toFile(input, 'input.png', { type: 'image/png' }),
    n: 1,
    size: '128x128' as never,
    response_format: 'b64_json',
  });
  const vm = await sharp(Buffer.from(v.data![0]!.b64_json!, 'base64')).metadata();
  assert.deepEqual([vm.width, vm.height], [128, 128]);
});

test('openai client: errors arrive as APIError with OpenAI error objects', async () => {
  await assert.rejects(
    client.images.generate({ prompt: 'x', n: 11, size: '64x64' as never }),
    (e: any) => e.status === 400 && e.error?.param === 'n' && e.error?.type === 'invalid_request_error',
  );
  await assert.rejects(
    client.images.generate({ prompt: 'x', size: '64x64' as never, background: 'transparent' }),
    // Transparency exists now (LayerDiffuse); the test server's model is SD1, which cannot make it.
    (e: any) => e.status === 400 && e.error?.param === 'background' && /transparent images \(LayerDiffuse\) need an SDXL checkpoint/.test(e.message),
  );
  const mask = await png('#000');
  await assert.rejects(
    client.images.edit({
      image: await toFile(await png('#fff'), 'a.png', { type: 'image/png' }),
      mask: await toFile(mask, 'm.png', { type: 'image/png' }),
      prompt: 'x',
    }),
    // Inpainting exists now: an opaque mask (nothing transparent, so nothing to repaint) is a 400 naming it.
    (e: any) => e.status === 400 && e.error?.param === 'mask' && /no transparent pixels/.test(e.message),
  );
  const noKey = new OpenAI({ baseURL: `${s.url}/v1`, apiKey: 'wrong-key', maxRetries: 0 });
  await assert.rejects(noKey.images.generate({ prompt: 'x' }), (e: any) => e.status === 401 && e.error?.code === 'invalid_api_key');
});

test('raw HTTP: the error object always has all four keys; sd.cpp extra args and negative_prompt set native fields', async () => {
  const headers = { authorization: 'Bearer sk-test-alice-key', 'content-type': 'application/json' };
  const bad = await fetch(`${s.url}/v1/images/generations`, { method: 'POST', headers, body: JSON.stringify({ prompt: 'x', colour: 'red' }) });
  assert.equal(bad.status, 400);
  const err = await bad.json();
  assert.deepEqual(Object.keys(err.error).sort(), ['code', 'message', 'param', 'type']);
  assert.equal(err.error.param, 'colour');
  const missing = await (await fetch(`${s.url}/v1/images/generations`, { method: 'POST', headers, body: JSON.stringify({ n: 1 }) })).json();
  assert.equal(missing.error.param, 'prompt');
  for (const bad of ['100000x64', '4096x64', 'big']) {
    const size = await fetch(`${s.url}/v1/images/generations`, { method: 'POST', headers, body: JSON.stringify({ prompt: 'x', size: bad }) });
    assert.equal(size.status, 400, bad);
    assert.equal((await size.json()).error.param, 'size', bad);
  }

  const prompt = 'a castle <sd_cpp_extra_args>{"steps": 3, "cfg_scale": 4.5, "seed": 42, "sampler": "Euler"}</sd_cpp_extra_args>';
  const r = await fetch(`${s.url}/v1/images/generations`, {
    method: 'POST',
    headers,
    body: JSON.stringify({ prompt, negative_prompt: 'fog', size: '64x64', response_format: 'b64_json' }),
  });
  assert.equal(r.status, 200);
  const info = (await readInfotext(Buffer.from((await r.json()).data[0].b64_json, 'base64')))!;
  assert.equal(info.split('\n')[0], 'a castle');
  assert.match(info, /Negative prompt: fog\nSteps: 3, Sampler: Euler, CFG scale: 4.5, Seed: 42, Size: 64x64/);
});

test('stream: true answers server-sent events with the completed image', async () => {
  const r = await fetch(`${s.url}/v1/images/generations`, {
    method: 'POST',
    headers: { authorization: 'Bearer sk-test-alice-key', 'content-type': 'application/json' },
    body: JSON.stringify({ prompt: 'a kite', size: '64x64', quality: 'low', stream: true }),
  });
  assert.equal(r.headers.get('content-type'), 'text/event-stream');
  const frames = (await r.text()).split('\n\n').filter(Boolean);
  assert.equal(frames.length, 1);
  assert.match(frames[0]!, /^event: image_generation.completed\ndata: /);
  const data = JSON.parse(frames[0]!.split('\ndata: ')[1]!);
  assert.equal((await sharp(Buffer.from(data.b64_json, 'base64')).metadata()).width, 64);
});
