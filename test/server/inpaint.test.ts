// Inpainting and outpainting on every surface, end to end with the real engine and the tiny SD1 fixture: A1111
// img2img mask fields, OpenAI /v1/images/edits with a mask through the official `openai` client (transparent =
// repaint), native /v1 with a base64 mask, a multipart mask file and outpaint margins; bad masks are 4xx naming
// the field.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import sharp from 'sharp';
import OpenAI, { toFile } from 'openai';
import { listenCompatServer, type CompatServer } from './compat/helpers.ts';

let s: CompatServer & { url: string };
let client: OpenAI;
before(async () => {
  s = await listenCompatServer({ keys: [{ name: 'alice', key: 'sk-test-alice-key', role: 'user' }] });
  client = new OpenAI({ baseURL: `${s.url}/v1`, apiKey: 'sk-test-alice-key', maxRetries: 0 });
});
after(async () => {
  await s.close();
});

const auth = { authorization: 'Bearer sk-test-alice-key' };
const post = (url: string, payload: unknown) => s.app.inject({ method: 'POST', url, payload: payload as object, headers: auth });
const W = 64;
/** White (repaint) inside x 24..39, y 20..43. */
const inRect = (x: number, y: number) => x >= 24 && x < 40 && y >= 20 && y < 44;

const initRaw = Buffer.from(Uint8Array.from({ length: W * W * 3 }, (_, i) => [((i / 3) % W) * 4, Math.floor(i / 3 / W) * 4, 90][i % 3]!));
const initPng = () =>
  sharp(initRaw, { raw: { width: W, height: W, channels: 3 } })
    .png()
    .toBuffer();
async function maskPng(opts: { transparentRepaints?: boolean; size?: number; black?: boolean } = {}): Promise<Buffer> {
  const size = opts.size ?? W;
  const ch = opts.transparentRepaints ? 4 : 3;
  const data = Buffer.alloc(size * size * ch, opts.transparentRepaints ? 255 : 0);
  for (let y = 0; y < size; y++)
    for (let x = 0; x < size; x++) {
      if (opts.black || !inRect(Math.floor((x * W) / size), Math.floor((y * W) / size))) continue;
      if (opts.transparentRepaints) data[(y * size + x) * 4 + 3] = 0;
      else data.fill(255, (y * size + x) * 3, (y * size + x + 1) * 3);
    }
  return sharp(data, { raw: { width: size, height: size, channels: ch } })
    .png()
    .toBuffer();
}

/** Output pixels farther than `margin` from the mask rectangle equal the input; some inside differ. */
async function assertInpainted(png: Buffer, margin: number, what: string): Promise<void> {
  const { data, info } = await sharp(png).removeAlpha().raw().toBuffer({ resolveWithObject: true });
  assert.deepEqual([info.width, info.height], [W, W], what);
  let inside = 0;
  for (let y = 0; y < W; y++)
    for (let x = 0; x < W; x++) {
      const p = (y * W + x) * 3;
      if (inRect(x, y)) inside += data[p] !== initRaw[p] ? 1 : 0;
      else if (!(x >= 24 - margin && x < 40 + margin && y >= 20 - margin && y < 44 + margin))
        for (let c = 0; c < 3; c++) assert.equal(data[p + c], initRaw[p + c], `${what}: pixel ${x},${y} changed`);
    }
  assert.ok(inside > 100, `${what}: only ${inside} masked pixels changed`);
}

const small = { prompt: 'a red apple', width: W, height: W, steps: 3, seed: 5 };

test('A1111 img2img with a mask repaints only the masked area; the infotext names the mask settings', async () => {
  const body = {
    ...small,
    init_images: [(await initPng()).toString('base64')],
    mask: (await maskPng()).toString('base64'),
    mask_blur: 0,
    inpainting_fill: 1,
    inpaint_full_res: false,
    denoising_strength: 0.8,
  };
  const r = await post('/sdapi/v1/img2img', body);
  assert.equal(r.statusCode, 200, r.body);
  await assertInpainted(Buffer.from(r.json().images[0], 'base64'), 0, 'a1111');
  assert.match(JSON.parse(r.json().info).infotexts[0], /Denoising strength: 0.8, Mask blur: 0, Masked content: original/);
  const again = await post('/sdapi/v1/img2img', body);
  assert.equal(again.json().images[0], r.json().images[0], 'a fixed seed gives the same image');

  const onlyMasked = await post('/sdapi/v1/img2img', { ...body, mask_blur: 4, inpaint_full_res: true, inpaint_full_res_padding: 4 });
  assert.equal(onlyMasked.statusCode, 200, onlyMasked.body);
  await assertInpainted(Buffer.from(onlyMasked.json().images[0], 'base64'), 10, 'a1111 only masked');
  assert.match(
    JSON.parse(onlyMasked.json().info).infotexts[0],
    /Mask blur: 4, Masked content: original, Inpaint area: Only masked, Only masked padding, pixels: 4/,
  );

  const resized = await post('/sdapi/v1/img2img', { ...body, mask: (await maskPng({ size: 32 })).toString('base64') });
  assert.equal(resized.statusCode, 200, resized.body);
  assert.match(JSON.parse(resized.json().info).infotexts[0], /Mask resized from: 32x32/);
});

test('A1111: a mask that is not an image, or all black, is a 4xx naming mask', async () => {
  const init = (await initPng()).toString('base64');
  for (const [mask, why] of [
    ['bm90IGFuIGltYWdl', /mask: is not a readable image/],
    [(await maskPng({ black: true })).toString('base64'), /mask: is all black/],
  ] as const) {
    const r = await post('/sdapi/v1/img2img', { ...small, init_images: [init], mask });
    assert.ok(r.statusCode >= 400 && r.statusCode < 500, r.body);
    assert.match(r.body, why);
  }
  const inverted = await post('/sdapi/v1/img2img', {
    ...small,
    init_images: [init],
    mask: (await maskPng({ black: true })).toString('base64'),
    inpainting_mask_invert: 1,
  });
  assert.equal(inverted.statusCode, 200, 'all black inverted repaints everything');
});

test('OpenAI images.edit with a mask through the official client: transparent pixels are repainted, the rest kept', async () => {
  const res = await client.images.edit({
    image: await toFile(await initPng(), 'image.png', { type: 'image/png' }),
    mask: await toFile(await maskPng({ transparentRepaints: true }), 'mask.png', { type: 'image/png' }),
    prompt: 'a red apple',
    size: '64x64' as never,
    response_format: 'b64_json',
  });
  // Mask blur 4 reaches 10 pixels beyond the transparent area.
  await assertInpainted(Buffer.from(res.data![0]!.b64_json!, 'base64'), 10, 'openai');
});

test('native /v1: a base64 mask and a multipart mask file inpaint; outpaint grows the canvas; bad masks are 400s', async () => {
  const init = (await initPng()).toString('base64');
  const mask = await maskPng();
  const json = await post('/v1/generate', { ...small, type: 'img2img', init_image: init, mask: { image: mask.toString('base64'), blur: 0, fill: 1 } });
  assert.equal(json.statusCode, 200, json.body);
  await assertInpainted(Buffer.from(json.json().images[0].base64, 'base64'), 0, 'native json');
  assert.match(json.json().images[0].infotext, /Mask blur: 0, Masked content: original/);

  const b = 'kilnmask';
  const part = (name: string, value: string | Buffer, file = false) =>
    Buffer.concat([
      Buffer.from(`--${b}\r\nContent-Disposition: form-data; name="${name}"${file ? `; filename="${name}.png"\r\nContent-Type: image/png` : ''}\r\n\r\n`),
      Buffer.from(value),
      Buffer.from('\r\n'),
    ]);
  const payload = Buffer.concat([
    part('request', JSON.stringify({ ...small, mask: { blur: 0, fill: 1 } })),
    part('init_image', await initPng(), true),
    part('mask', mask, true),
    Buffer.from(`--${b}--\r\n`),
  ]);
  const multi = await s.app.inject({
    method: 'POST',
    url: '/v1/generate',
    payload,
    headers: { ...auth, 'content-type': `multipart/form-data; boundary=${b}` },
  });
  assert.equal(multi.statusCode, 200, multi.body);
  assert.equal(multi.json().images[0].base64, json.json().images[0].base64, 'the same mask as a file gives the same image');

  const out = await post('/v1/generate', { ...small, type: 'img2img', init_image: init, outpaint: { left: 16, bottom: 8 } });
  assert.equal(out.statusCode, 200, out.body);
  const meta = await sharp(Buffer.from(out.json().images[0].base64, 'base64')).metadata();
  assert.deepEqual([meta.width, meta.height], [W + 16, W + 8]);

  for (const [extra, field] of [
    [{ mask: { image: 'bm90IGFuIGltYWdl' } }, 'mask.image'],
    [{ mask: { image: (await maskPng({ black: true })).toString('base64') } }, 'mask.image'],
    [{ outpaint: { left: 0 } }, 'outpaint'],
    [{ mask: { image: mask.toString('base64') }, outpaint: { left: 8 } }, 'outpaint'],
  ] as const) {
    const r = await post('/v1/jobs', { ...small, type: 'img2img', init_image: init, ...extra });
    assert.equal(r.statusCode, 400, r.body);
    assert.equal(r.json().error.field, field, r.body);
  }
  const noInit = await post('/v1/jobs', { ...small, mask: { image: mask.toString('base64') } });
  assert.equal(noInit.statusCode, 400, noInit.body);
  assert.equal(noInit.json().error.field, 'mask');
});

test('A1111 "Poor man\'s outpainting" script grows the canvas on the chosen sides; bad script_args are a 422', async () => {
  const init = (await initPng()).toString('base64');
  const r = await post('/sdapi/v1/img2img', {
    ...small,
    init_images: [init],
    script_name: "Poor man's outpainting",
    script_args: [16, 4, 'fill', ['left', 'down']],
  });
  assert.equal(r.statusCode, 200, r.body);
  const meta = await sharp(Buffer.from(r.json().images[0], 'base64')).metadata();
  assert.deepEqual([meta.width, meta.height], [W + 16, W + 16]);
  const bad = await post('/sdapi/v1/img2img', {
    ...small,
    init_images: [init],
    script_name: "Poor man's outpainting",
    script_args: [16, 4, 'fill', ['sideways']],
  });
  assert.equal(bad.statusCode, 422, bad.body);
  assert.match(bad.body, /script_args: direction/);
});
