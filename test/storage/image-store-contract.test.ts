// The ImageStore contract, run against every implementation: the local folder and S3 (a real S3-protocol
// server on loopback). The queue, executor and routes rely on exactly these behaviours.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LocalImageStore } from '../../src/storage/local.ts';
import { parseS3Url, S3ImageStore } from '../../src/storage/s3.ts';
import { StorageNameError } from '../../src/storage/image-store.ts';
import type { ImageStore } from '../../src/storage/image-store.ts';
import { startS3Server } from './s3-server.ts';
import type { TestS3Server } from './s3-server.ts';

function contract(name: string, make: () => ImageStore) {
  describe(`ImageStore contract: ${name}`, () => {
    test('write, read back, overwrite, exists, remove', async () => {
      const store = make();
      assert.equal(await store.read('abc-0.png'), undefined);
      assert.equal(await store.exists('abc-0.png'), false);
      await store.write('abc-0.png', Buffer.from('first'));
      assert.equal((await store.read('abc-0.png'))?.toString(), 'first');
      assert.equal(await store.exists('abc-0.png'), true);
      await store.write('abc-0.png', Buffer.from('second'));
      assert.equal((await store.read('abc-0.png'))?.toString(), 'second');
      await store.remove('abc-0.png');
      assert.equal(await store.exists('abc-0.png'), false);
      await store.remove('abc-0.png'); // removing a missing name is not an error
    });

    test('binary data survives byte for byte', async () => {
      const store = make();
      const bytes = new Uint8Array(70_000).map((_, i) => (i * 7919) & 255);
      await store.write('bin-1.webp', bytes);
      assert.deepEqual(new Uint8Array((await store.read('bin-1.webp'))!), bytes);
    });

    test('unsafe names are refused before any I/O', async () => {
      const store = make();
      for (const bad of ['../x.png', 'a/b.png', '', '.hidden', 'x'.repeat(300)]) {
        await assert.rejects(store.write(bad, Buffer.from('x')), StorageNameError, bad);
        await assert.rejects(store.read(bad), StorageNameError, bad);
      }
    });
  });
}

const dir = mkdtempSync(join(tmpdir(), 'kiln-store-'));
after(() => rmSync(dir, { recursive: true, force: true }));
contract('local folder', () => new LocalImageStore(dir));

let s3: TestS3Server;
const s3Stores: S3ImageStore[] = [];
before(async () => {
  s3 = await startS3Server();
});
after(async () => {
  for (const s of s3Stores) s.close();
  await s3.close();
});
const makeS3 = (prefix: string) => {
  const store = new S3ImageStore({ bucket: s3.bucket, prefix, endpoint: s3.endpoint, credentials: s3.credentials });
  s3Stores.push(store);
  return store;
};
contract('S3 (s3rver on loopback)', () => makeS3('results/a'));

describe('S3 store specifics', () => {
  test('prefixes keep stores apart in one bucket', async () => {
    const a = makeS3('node-a');
    const b = makeS3('node-b');
    await a.write('same-0.png', Buffer.from('a'));
    assert.equal(await b.read('same-0.png'), undefined);
    assert.equal(a.keyOf('same-0.png'), 'node-a/same-0.png');
    assert.equal(makeS3('').keyOf('same-0.png'), 'same-0.png');
  });

  test('a presigned URL fetches the object with no credentials of its own', async () => {
    const store = makeS3('signed');
    await store.write('pic-0.png', Buffer.from('png bytes'));
    const url = new URL(await store.presignedUrl('pic-0.png', 60));
    assert.equal(url.pathname, `/${s3.bucket}/signed/pic-0.png`);
    assert.equal(url.searchParams.get('X-Amz-Expires'), '60');
    assert.ok(url.searchParams.get('X-Amz-Signature'));
    const ok = await fetch(url);
    assert.equal(ok.status, 200);
    assert.equal(ok.headers.get('content-type'), 'image/png');
    assert.equal(await ok.text(), 'png bytes');
  });

  test('parseS3Url', () => {
    assert.deepEqual(parseS3Url('s3://my-bucket'), { bucket: 'my-bucket', prefix: '' });
    assert.deepEqual(parseS3Url('s3://my-bucket/kiln/results/'), { bucket: 'my-bucket', prefix: 'kiln/results' });
    assert.throws(() => parseS3Url('http://my-bucket'), /s3:\/\/bucket/);
    assert.throws(() => parseS3Url('s3://UPPER'), /valid bucket name/);
  });
});
