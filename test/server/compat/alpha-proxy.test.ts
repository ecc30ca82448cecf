// Seed 000's /alpha/v1/txt2img behind a reverse proxy: with --public-url the answer's `url` is absolute, names the
// proxy's address and path prefix, and fetching it through the proxy gives the PNG. A plain Node proxy stands in
// for nginx (it strips the /kiln prefix and forwards to the server), over real sockets.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, request, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import sharp from 'sharp';
import { readInfotext } from '../../../src/storage/encode.ts';
import { listenCompatServer, type CompatServer } from './helpers.ts';

let kiln: CompatServer & { url: string };
let proxy: Server;
let proxyUrl: string;

before(async () => {
  proxy = createServer((req, res) => {
    const target = new URL(kiln.url);
    if (!req.url?.startsWith('/kiln/')) {
      res.writeHead(404).end('not behind /kiln');
      return;
    }
    const fwd = request(
      { host: target.hostname, port: target.port, method: req.method, path: req.url.slice('/kiln'.length), headers: { ...req.headers, host: 'internal:1' } },
      (r) => {
        res.writeHead(r.statusCode ?? 502, r.headers);
        r.pipe(res);
      },
    );
    fwd.on('error', () => res.writeHead(502).end());
    req.pipe(fwd);
  });
  await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', r));
  proxyUrl = `http://127.0.0.1:${(proxy.address() as AddressInfo).port}/kiln`;
  kiln = await listenCompatServer({ publicUrl: `${proxyUrl}/` });
});
after(async () => {
  await kiln.close();
  await new Promise((r) => proxy.close(r));
});

test('seed 000 /alpha/v1/txt2img behind a proxy: url is absolute under --public-url and fetchable through the proxy', async () => {
  const r = await fetch(`${proxyUrl}/alpha/v1/txt2img`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ prompt: 'a red apple, high quality', steps: 3, width: 64, height: 64 }),
  });
  assert.equal(r.status, 200);
  const body = (await r.json()) as { status: string; url: string; filename: string; info: string };
  assert.equal(body.status, 'success');
  assert.equal(body.url, `${proxyUrl}/alpha/v1/file/${body.filename}`);
  const file = await fetch(body.url);
  assert.equal(file.status, 200);
  assert.equal(file.headers.get('content-type'), 'image/png');
  const png = Buffer.from(await file.arrayBuffer());
  assert.deepEqual([(await sharp(png).metadata()).width, (await sharp(png).metadata()).height], [64, 64]);
  assert.equal(await readInfotext(png), body.info);
});
