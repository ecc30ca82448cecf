// A table of malformed requests: each must get a 4xx whose message names the field at fault, and the
// server must still be healthy (and still generate) afterwards.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import sharp from 'sharp';
import { post, startTestServer } from './helpers.ts';

process.env.KILN_FAKE_STEP_MS = '1';

const ok = { prompt: 'a cat', width: 64, height: 64, steps: 2 };

interface Case {
  name: string;
  status: number;
  field: string;
  body?: unknown;
  raw?: { payload: string | Buffer; contentType: string; url?: string };
  url?: string;
  method?: 'GET' | 'POST';
}

function multipart(fields: Record<string, string>, file?: { name: string; bytes: Buffer; type: string }) {
  const b = 'xxBOUNDARYxx';
  const parts: Buffer[] = Object.entries(fields).map(([k, v]) => Buffer.from(`--${b}\r\nContent-Disposition: form-data; name="${k}"\r\n\r\n${v}\r\n`));
  if (file) {
    parts.push(
      Buffer.from(`--${b}\r\nContent-Disposition: form-data; name="${file.name}"; filename="f"\r\nContent-Type: ${file.type}\r\n\r\n`),
      file.bytes,
      Buffer.from('\r\n'),
    );
  }
  parts.push(Buffer.from(`--${b}--\r\n`));
  return { payload: Buffer.concat(parts), contentType: `multipart/form-data; boundary=${b}` };
}

test('at least 30 bad requests are refused with 4xx naming the field; the server stays healthy', async () => {
  const s = await startTestServer({ limits: { maxPixels: 1024 * 1024, uploadBytes: 64 * 1024, bodyBytes: 256 * 1024, maxDecodedPixels: 1000 * 1000 } });
  // A PNG whose header is 2000x2000 = 4 MP but compresses to a few KB (a decompression bomb in miniature) is refused by size alone.
  const bomb = await sharp({ create: { width: 2000, height: 2000, channels: 3, background: '#000' } })
    .png({ compressionLevel: 9 })
    .toBuffer();
  const goodPng = await sharp({ create: { width: 64, height: 64, channels: 3, background: '#fff' } })
    .png()
    .toBuffer();
  const cases: Case[] = [
    { name: 'steps as string', status: 400, field: 'steps', body: { ...ok, steps: '20' } },
    { name: 'steps zero', status: 400, field: 'steps', body: { ...ok, steps: 0 } },
    { name: 'steps too many', status: 400, field: 'steps', body: { ...ok, steps: 151 } },
    { name: 'steps fractional', status: 400, field: 'steps', body: { ...ok, steps: 2.5 } },
    { name: 'width not multiple of 8', status: 400, field: 'width', body: { ...ok, width: 100 } },
    { name: 'width too small', status: 400, field: 'width', body: { ...ok, width: 8 } },
    { name: 'width too large', status: 400, field: 'width', body: { ...ok, width: 4096 } },
    { name: 'height negative', status: 400, field: 'height', body: { ...ok, height: -64 } },
    { name: 'height as bool', status: 400, field: 'height', body: { ...ok, height: true } },
    { name: 'total pixels over limit', status: 400, field: 'width', body: { ...ok, width: 2048, height: 1024 } },
    { name: 'cfg_scale too high', status: 400, field: 'cfg_scale', body: { ...ok, cfg_scale: 100 } },
    { name: 'cfg_scale as string', status: 400, field: 'cfg_scale', body: { ...ok, cfg_scale: 'high' } },
    { name: 'unknown sampler', status: 400, field: 'sampler', body: { ...ok, sampler: 'Magic Sampler' } },
    { name: 'unknown schedule', status: 400, field: 'schedule', body: { ...ok, schedule: 'Wobbly' } },
    { name: 'unknown model', status: 400, field: 'model', body: { ...ok, model: 'no-such-model' } },
    { name: 'model as path', status: 400, field: 'model', body: { ...ok, model: '../../etc/passwd' } },
    { name: 'huge prompt', status: 400, field: 'prompt', body: { ...ok, prompt: 'x'.repeat(10001) } },
    { name: 'prompt as number', status: 400, field: 'prompt', body: { ...ok, prompt: 42 } },
    { name: 'prompt and prompts', status: 400, field: 'prompt', body: { ...ok, prompts: ['a'] } },
    { name: 'empty prompts list', status: 400, field: 'prompts', body: { width: 64, height: 64, prompts: [] } },
    { name: 'too many images', status: 400, field: 'images_per_prompt', body: { width: 64, height: 64, prompts: ['a', 'b'], images_per_prompt: 76 } },
    { name: 'images_per_prompt zero', status: 400, field: 'images_per_prompt', body: { ...ok, images_per_prompt: 0 } },
    {
      name: 'negative prompt count mismatch',
      status: 400,
      field: 'negative_prompt',
      body: { width: 64, height: 64, prompts: ['a', 'b', 'c'], negative_prompt: ['x', 'y'] },
    },
    { name: 'negative prompt wrong type', status: 400, field: 'negative_prompt', body: { ...ok, negative_prompt: 5 } },
    { name: 'seed too large', status: 400, field: 'seed', body: { ...ok, seed: 2 ** 40 } },
    { name: 'seed below -1', status: 400, field: 'seed', body: { ...ok, seed: -5 } },
    { name: 'denoising out of range', status: 400, field: 'denoising_strength', body: { ...ok, denoising_strength: 1.5 } },
    { name: 'unknown field', status: 400, field: 'sneaky', body: { ...ok, sneaky: 1 } },
    { name: 'unknown output format', status: 400, field: 'output.format', body: { ...ok, output: { format: 'gif' } } },
    { name: 'quality out of range', status: 400, field: 'output.quality', body: { ...ok, output: { quality: 0 } } },
    { name: 'bad response kind', status: 400, field: 'output.response', body: { ...ok, output: { response: 'ftp' } } },
    { name: 'type unknown', status: 400, field: 'type', body: { ...ok, type: 'txt2video' } },
    { name: 'tiling unknown axis', status: 400, field: 'tiling', body: { ...ok, tiling: 'z' } },
    { name: 'tiling as number', status: 400, field: 'tiling', body: { ...ok, tiling: 1 } },
    { name: 'img2img without image', status: 400, field: 'init_image', body: { ...ok, type: 'img2img' } },
    { name: 'init_image not base64', status: 400, field: 'init_image', body: { ...ok, type: 'img2img', init_image: '!!!not base64!!!' } },
    {
      name: 'init_image not an image',
      status: 400,
      field: 'init_image',
      body: { ...ok, type: 'img2img', init_image: Buffer.from('hello, I am text').toString('base64') },
    },
    { name: 'init_image decompression bomb', status: 400, field: 'init_image', body: { ...ok, type: 'img2img', init_image: bomb.toString('base64') } },
    { name: 'init_image with txt2img', status: 400, field: 'init_image', body: { ...ok, init_image: goodPng.toString('base64') } },
    {
      name: 'oversized base64 upload',
      status: 400,
      field: 'init_image',
      body: { ...ok, type: 'img2img', init_image: Buffer.alloc(100 * 1024, 1).toString('base64') },
    },
    {
      name: 'oversized multipart upload',
      status: 413,
      field: 'init_image',
      raw: multipart({ prompt: 'x', steps: '2', width: '64', height: '64' }, { name: 'init_image', bytes: Buffer.alloc(100 * 1024, 7), type: 'image/png' }),
    },
    {
      name: 'non-image multipart upload',
      status: 400,
      field: 'init_image',
      raw: multipart(
        { prompt: 'x', steps: '2', width: '64', height: '64' },
        { name: 'init_image', bytes: Buffer.from('%PDF-1.4 not an image'), type: 'image/png' },
      ),
    },
    { name: 'unknown multipart file field', status: 400, field: 'evil', raw: multipart({ prompt: 'x' }, { name: 'evil', bytes: goodPng, type: 'image/png' }) },
    { name: 'multipart wrong type field', status: 400, field: 'steps', raw: multipart({ prompt: 'x', steps: 'many' }) },
    { name: 'body too large', status: 413, field: 'body', body: { ...ok, prompt: 'x'.repeat(300 * 1024) } },
    { name: 'invalid JSON', status: 400, field: 'body', raw: { payload: '{"prompt": "x",', contentType: 'application/json' } },
    { name: 'unsupported content type', status: 415, field: 'body', raw: { payload: '<prompt>x</prompt>', contentType: 'application/xml' } },
    { name: 'plain text body', status: 400, field: 'body', raw: { payload: 'prompt=x', contentType: 'text/plain' } },
    { name: 'body not an object', status: 400, field: 'body', body: [1, 2, 3] },
    { name: 'path traversal in image name', status: 400, field: 'name', method: 'GET', url: '/v1/images/..%2F..%2Fjobs.sqlite' },
    { name: 'dot-dot image name', status: 400, field: 'name', method: 'GET', url: '/v1/images/..png' },
    { name: 'encoded backslash traversal', status: 400, field: 'name', method: 'GET', url: '/v1/images/..%5Cjobs.sqlite' },
    { name: 'uploaded inputs are not served', status: 404, field: 'name', method: 'GET', url: '/v1/images/input-abc.png' },
    { name: 'missing image', status: 404, field: 'name', method: 'GET', url: '/v1/images/nothing-0.png' },
    { name: 'bad list state', status: 400, field: 'state', method: 'GET', url: '/v1/jobs?state=exploded' },
    { name: 'bad list limit', status: 400, field: 'limit', method: 'GET', url: '/v1/jobs?limit=100000' },
    { name: 'bad response query', status: 400, field: 'response', method: 'GET', url: '/v1/jobs/abc?response=xml' },
    { name: 'bad timeout_s', status: 400, field: 'timeout_s', url: '/v1/generate?timeout_s=0', body: ok },
  ];
  assert.ok(cases.length >= 30);
  try {
    const failures: string[] = [];
    for (const c of cases) {
      const method = c.method ?? 'POST';
      const url = c.url ?? c.raw?.url ?? '/v1/jobs';
      const r = c.raw
        ? await s.app.inject({ method, url, payload: c.raw.payload, headers: { 'content-type': c.raw.contentType } })
        : await s.app.inject({ method, url, ...(method === 'POST' ? { payload: c.body as object } : {}) });
      const err = r.statusCode >= 400 ? r.json().error : undefined;
      if (r.statusCode !== c.status) failures.push(`${c.name}: got ${r.statusCode} ${r.body.slice(0, 200)}`);
      else if (err?.field !== c.field) failures.push(`${c.name}: field ${err?.field} in ${r.body.slice(0, 200)}`);
      else if (!err.message.includes(c.field.split('.').pop()!)) failures.push(`${c.name}: message "${err.message}" does not name ${c.field}`);
    }
    assert.deepEqual(failures, []);
    // Nothing bad was queued, and the server still works.
    assert.equal((await s.app.inject('/v1/jobs')).json().jobs.length, 0);
    assert.equal((await s.app.inject('/health')).json().status, 'healthy');
    assert.equal((await post(s.app, '/v1/generate', ok)).statusCode, 200);
  } finally {
    await s.close();
  }
});
