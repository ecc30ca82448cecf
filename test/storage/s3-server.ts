// A real S3-protocol server on loopback for tests: s3rver (the npm package) in a temp folder, with the bucket
// made. The store under test talks to it through @aws-sdk/client-s3 exactly as it would talk to AWS or MinIO.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import S3rver from 's3rver';

export interface TestS3Server {
  endpoint: string;
  bucket: string;
  credentials: { accessKeyId: string; secretAccessKey: string };
  close(): Promise<void>;
}

export async function startS3Server(bucket = 'kiln-test'): Promise<TestS3Server> {
  const dir = mkdtempSync(join(tmpdir(), 'kiln-s3-'));
  const server = new S3rver({ port: 0, address: '127.0.0.1', silent: true, directory: dir, configureBuckets: [{ name: bucket, configs: [] }] });
  const addr = (await server.run()) as AddressInfo;
  return {
    endpoint: `http://127.0.0.1:${addr.port}`,
    bucket,
    // s3rver's built-in account (s3rver accepts any signature; real servers check them).
    credentials: { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' },
    async close() {
      await server.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
