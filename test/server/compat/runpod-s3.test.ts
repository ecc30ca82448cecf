// RunPod's s3Config through the real server and engine (tiny SD1) against a real S3-protocol server on
// loopback: the images go to the client's bucket under the job id, the output carries presigned URLs instead of
// base64, the secret never appears in any response, and bad configs are refused naming the field.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { GetObjectCommand, S3Client } from '@aws-sdk/client-s3';
import sharp from 'sharp';
import { readInfotext } from '../../../src/storage/encode.ts';
import { startS3Server } from '../../storage/s3-server.ts';
import type { TestS3Server } from '../../storage/s3-server.ts';
import { startCompatServer, type CompatServer } from './helpers.ts';

let s: CompatServer;
let s3: TestS3Server;
before(async () => {
  s3 = await startS3Server('client-bucket');
  // The bucket is on loopback, which the outbound (webhook) policy refuses unless opened, as in production.
  s = await startCompatServer({ webhookAllow: ['127.0.0.1'] });
});
after(async () => {
  await s.close();
  await s3.close();
});

const input = { prompt: 'a glass bottle', width: 64, height: 64, steps: 2, seed: 5, batch_size: 2 };
const s3Config = () => ({ accessId: 'S3RVER', accessSecret: 'the-client-secret', bucketName: s3.bucket, endpointUrl: s3.endpoint });

test('s3Config: results uploaded to the client bucket, output carries presigned URLs and no base64 or secrets', async () => {
  const r = await s.app.inject({ method: 'POST', url: '/runsync', payload: { input, s3Config: s3Config() } });
  assert.equal(r.statusCode, 200, r.body);
  const body = r.json();
  assert.equal(body.status, 'COMPLETED', r.body.slice(0, 400));
  // The access key id is part of any presigned URL (by S3's design); the secret must never appear.
  assert.ok(!r.body.includes('the-client-secret'), 'the secret is never echoed');
  const out = body.output;
  assert.equal(out.image_base64, undefined);
  assert.equal(out.images.length, 2);
  const client = new S3Client({ endpoint: s3.endpoint, region: 'us-east-1', forcePathStyle: true, credentials: s3.credentials });
  try {
    for (const img of out.images) {
      const url = new URL(img.url);
      assert.equal(url.pathname, `/${s3.bucket}/${body.id}/${img.filename}`);
      assert.equal(url.searchParams.get('X-Amz-Expires'), '604800');
      const fetched = Buffer.from(await (await fetch(url)).arrayBuffer());
      const stored = await client.send(new GetObjectCommand({ Bucket: s3.bucket, Key: `${body.id}/${img.filename}` }));
      assert.deepEqual(fetched, Buffer.from(await stored.Body!.transformToByteArray()));
      assert.equal((await sharp(fetched).metadata()).width, 64);
      assert.equal(await readInfotext(fetched), img.info);
    }
  } finally {
    client.destroy();
  }
  // Polling again uploads nothing new and answers the same objects.
  const again = (await s.app.inject(`/status/${body.id}`)).json();
  assert.deepEqual(
    again.output.images.map((i: { url: string }) => new URL(i.url).pathname),
    out.images.map((i: { url: string }) => new URL(i.url).pathname),
  );
});

test('s3Config: bad configs are refused naming the field; an unreachable bucket fails the job with the reason', async () => {
  const missing = await s.app.inject({ method: 'POST', url: '/run', payload: { input, s3Config: { accessId: 'a' } } });
  assert.equal(missing.statusCode, 400);
  assert.match(missing.json().error, /s3Config/);
  const badBucket = await s.app.inject({ method: 'POST', url: '/run', payload: { input, s3Config: { ...s3Config(), bucketName: 'Bad_Bucket' } } });
  assert.equal(badBucket.statusCode, 400);
  assert.match(badBucket.json().error, /s3Config\.bucketName/);
  const metadata = await s.app.inject({ method: 'POST', url: '/run', payload: { input, s3Config: { ...s3Config(), endpointUrl: 'http://169.254.169.254/' } } });
  assert.equal(metadata.statusCode, 400);
  assert.match(metadata.json().error, /s3Config\.endpointUrl/);

  const gone = await s.app.inject({
    method: 'POST',
    url: '/runsync',
    payload: { input: { ...input, batch_size: 1 }, s3Config: { ...s3Config(), bucketName: 'no-such-bucket' } },
  });
  assert.equal(gone.statusCode, 200, gone.body);
  assert.equal(gone.json().status, 'FAILED');
  assert.match(gone.json().error, /s3Config: uploading the results to bucket "no-such-bucket" failed/);
});
