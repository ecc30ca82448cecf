// Results in S3: a real server with the real engine on tiny-sd1 and `storage: s3://…` against a real
// S3-protocol server on loopback. The image must land in the bucket under the prefix (read back with a separate
// client), be served by Kiln's URL, and with --presign redirect to a signed URL that serves the same bytes.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { GetObjectCommand, ListObjectsV2Command, S3Client } from '@aws-sdk/client-s3';
import sharp from 'sharp';
import { buildApp } from '../../src/server/app.ts';
import { loadConfig, testConfig } from '../../src/server/config.ts';
import { readInfotext } from '../../src/storage/encode.ts';
import { tempDir } from '../queue/helpers.ts';
import { startS3Server } from '../storage/s3-server.ts';
import type { TestS3Server } from '../storage/s3-server.ts';

const TINY = fileURLToPath(new URL('../fixtures/tiny-sd1', import.meta.url));
const job = { prompt: 'a red apple', width: 64, height: 64, steps: 2, seed: 11, sampler: 'Euler', output: { response: 'url' } };

let s3: TestS3Server;
const savedEnv = { id: process.env.AWS_ACCESS_KEY_ID, secret: process.env.AWS_SECRET_ACCESS_KEY };
before(async () => {
  s3 = await startS3Server('kiln-results');
  // The store takes credentials from the AWS SDK's usual chain, as in production.
  process.env.AWS_ACCESS_KEY_ID = s3.credentials.accessKeyId;
  process.env.AWS_SECRET_ACCESS_KEY = s3.credentials.secretAccessKey;
});
after(async () => {
  await s3.close();
  process.env.AWS_ACCESS_KEY_ID = savedEnv.id;
  process.env.AWS_SECRET_ACCESS_KEY = savedEnv.secret;
  if (savedEnv.id === undefined) delete process.env.AWS_ACCESS_KEY_ID;
  if (savedEnv.secret === undefined) delete process.env.AWS_SECRET_ACCESS_KEY;
});

async function s3App(presignMs: number) {
  const t = tempDir('kiln-s3-');
  const config = testConfig(t.dir, { model: TINY, storage: `s3://${s3.bucket}/nodes/a`, s3Endpoint: s3.endpoint, presignMs });
  const app = await buildApp(config);
  await app.ready();
  await app.kiln.engineReady;
  return {
    app,
    close: async () => {
      await app.close();
      t.remove();
    },
  };
}

test('results land in the S3 bucket under the prefix and are served back by Kiln', async () => {
  const { app, close } = await s3App(0);
  try {
    const r = await app.inject({ method: 'POST', url: '/v1/generate', payload: job });
    assert.equal(r.statusCode, 200, r.body);
    const url = new URL(r.json().images[0].url, 'http://kiln.test');
    const name = url.pathname.split('/').pop()!;

    const client = new S3Client({ endpoint: s3.endpoint, region: 'us-east-1', forcePathStyle: true, credentials: s3.credentials });
    const listed = await client.send(new ListObjectsV2Command({ Bucket: s3.bucket, Prefix: 'nodes/a/' }));
    assert.ok(
      listed.Contents?.some((o) => o.Key === `nodes/a/${name}`),
      `nodes/a/${name} in ${JSON.stringify(listed.Contents?.map((o) => o.Key))}`,
    );
    const obj = await client.send(new GetObjectCommand({ Bucket: s3.bucket, Key: `nodes/a/${name}` }));
    const stored = Buffer.from(await obj.Body!.transformToByteArray());
    client.destroy();

    const served = await app.inject(url.pathname);
    assert.equal(served.statusCode, 200);
    assert.deepEqual(served.rawPayload, stored, 'Kiln serves the bytes stored in S3');
    const meta = await sharp(stored).metadata();
    assert.deepEqual([meta.format, meta.width, meta.height], ['png', 64, 64]);
    assert.match((await readInfotext(stored))!, /Seed: 11/);
  } finally {
    await close();
  }
});

test('--presign: the Kiln URL redirects to a presigned S3 URL that serves the image without credentials', async () => {
  const { app, close } = await s3App(120_000);
  try {
    const r = await app.inject({ method: 'POST', url: '/v1/generate', payload: job });
    assert.equal(r.statusCode, 200, r.body);
    const path = new URL(r.json().images[0].url, 'http://kiln.test').pathname;
    const redirect = await app.inject(path);
    assert.equal(redirect.statusCode, 302);
    const signed = new URL(redirect.headers.location as string);
    assert.equal(signed.origin, s3.endpoint);
    assert.equal(signed.searchParams.get('X-Amz-Expires'), '120');
    const fetched = await fetch(signed);
    assert.equal(fetched.status, 200);
    const meta = await sharp(Buffer.from(await fetched.arrayBuffer())).metadata();
    assert.deepEqual([meta.format, meta.width, meta.height], ['png', 64, 64]);
    // A name that is not stored is a 404 from Kiln, not a signed URL to nothing.
    assert.equal((await app.inject(path.replace(/-0\.png$/, '-5.png'))).statusCode, 404);
  } finally {
    await close();
  }
});

test('storage settings are checked at start', () => {
  assert.throws(() => loadConfig({ flags: { storage: 's3://No_Such' }, env: {} }), /storage.*valid bucket name/);
  assert.throws(() => loadConfig({ flags: { presign: '60' }, env: {} }), /presign.*only applies with --storage s3/);
  const c = loadConfig({ flags: { storage: 's3://bucket/p', presign: '90', 's3-endpoint': 'http://127.0.0.1:9000' }, env: {} });
  assert.deepEqual([c.storage, c.presignMs, c.s3Endpoint], ['s3://bucket/p', 90_000, 'http://127.0.0.1:9000']);
});
