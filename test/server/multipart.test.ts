// The one multipart reader, with each option a surface uses: known file fields kept in order, another file
// field refused or dropped, text fields put together by the surface's own rule (or dropped).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import Fastify from 'fastify';
import multipart from '@fastify/multipart';
import { HttpError } from '../../src/server/errors.ts';
import { lastFile, readMultipart, type MultipartOptions } from '../../src/server/multipart.ts';

type Part = { name: string; value: string } | { name: string; file: Buffer };

function form(parts: Part[]) {
  const b = 'xxBOUNDARYxx';
  const chunks: Buffer[] = parts.map((p) =>
    'file' in p
      ? Buffer.concat([
          Buffer.from(`--${b}\r\nContent-Disposition: form-data; name="${p.name}"; filename="f"\r\nContent-Type: application/octet-stream\r\n\r\n`),
          p.file,
          Buffer.from('\r\n'),
        ])
      : Buffer.from(`--${b}\r\nContent-Disposition: form-data; name="${p.name}"\r\n\r\n${p.value}\r\n`),
  );
  chunks.push(Buffer.from(`--${b}--\r\n`));
  return { payload: Buffer.concat(chunks), headers: { 'content-type': `multipart/form-data; boundary=${b}` } };
}

/** A server whose one route answers what readMultipart made of the request. */
async function reader(options: MultipartOptions) {
  const app = Fastify();
  await app.register(multipart);
  app.setErrorHandler((err, _req, reply) => void reply.status((err as HttpError).statusCode ?? 500).send({ message: (err as Error).message }));
  app.post('/', async (req) => {
    const f = await readMultipart(req, options);
    return f
      ? { body: f.body, files: f.files.map((x) => [x.field, x.bytes.toString()]), last: lastFile(f, 'a', 'b')?.toString() ?? null }
      : { notMultipart: true };
  });
  return app;
}

const keepAll = (body: Record<string, unknown>, name: string, value: string) => ({ ...body, [name]: value });

test('known file fields are kept in arrival order; lastFile picks the last of the fields named', async () => {
  const app = await reader({ fileFields: ['a', 'b'] });
  const r = await app.inject({
    method: 'POST',
    url: '/',
    ...form([
      { name: 'b', file: Buffer.from('1') },
      { name: 'a', file: Buffer.from('2') },
      { name: 'b', file: Buffer.from('3') },
    ]),
  });
  assert.deepEqual(r.json().files, [
    ['b', '1'],
    ['a', '2'],
    ['b', '3'],
  ]);
  assert.equal(r.json().last, '3');
});

test('a request that is not multipart gives undefined (the surface decides what that means)', async () => {
  const app = await reader({ fileFields: ['a'] });
  const r = await app.inject({ method: 'POST', url: '/', payload: { x: 1 } });
  assert.deepEqual(r.json(), { notMultipart: true });
});

test('another file field: refused with the surface error when unknownFile is given, read and dropped otherwise', async () => {
  const refusing = await reader({ fileFields: ['a'], unknownFile: (f) => new HttpError(400, 'invalid_request', `${f}: not a file field`, f) });
  const refused = await refusing.inject({
    method: 'POST',
    url: '/',
    ...form([
      { name: 'zzz', file: Buffer.from('x') },
      { name: 'a', file: Buffer.from('y') },
    ]),
  });
  assert.equal(refused.statusCode, 400);
  assert.equal(refused.json().message, 'zzz: not a file field');
  const dropping = await reader({ fileFields: ['a'] });
  const dropped = await dropping.inject({
    method: 'POST',
    url: '/',
    ...form([
      { name: 'zzz', file: Buffer.from('x') },
      { name: 'a', file: Buffer.from('y') },
    ]),
  });
  assert.equal(dropped.statusCode, 200);
  assert.deepEqual(dropped.json().files, [['a', 'y']]);
});

test('text fields: dropped without addField; with it, each goes through the rule (which may replace the body or throw)', async () => {
  const parts = [
    { name: 'x', value: '1' },
    { name: 'a', file: Buffer.from('f') },
    { name: 'y', value: 'two' },
  ];
  assert.deepEqual((await (await reader({ fileFields: ['a'] })).inject({ method: 'POST', url: '/', ...form(parts) })).json().body, {});
  assert.deepEqual((await (await reader({ fileFields: ['a'], addField: keepAll })).inject({ method: 'POST', url: '/', ...form(parts) })).json().body, {
    x: '1',
    y: 'two',
  });
  const strict = await reader({
    fileFields: [],
    addField: (body, name, value) => {
      if (value === 'bad') throw new HttpError(400, 'invalid_request', `${name}: bad`, name);
      return keepAll(body, name, value);
    },
  });
  const r = await strict.inject({
    method: 'POST',
    url: '/',
    ...form([
      { name: 'ok', value: 'fine' },
      { name: 'q', value: 'bad' },
    ]),
  });
  assert.equal(r.statusCode, 400);
  assert.equal(r.json().message, 'q: bad');
});
