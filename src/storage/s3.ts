// The S3 ImageStore: results and uploaded inputs as objects under one bucket prefix, for several API nodes and
// workers that share no disk. Any S3-protocol server works (AWS, MinIO, Ceph, R2, s3rver): endpoint, region and
// path-style addressing are options, credentials come from the AWS SDK's usual chain (AWS_ACCESS_KEY_ID /
// AWS_SECRET_ACCESS_KEY, profiles, instance roles). Names are checked exactly like the local store's, so a client
// name can never address another prefix.
import { DeleteObjectCommand, GetObjectCommand, HeadObjectCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import { checkName } from './image-store.ts';
import type { ImageStore } from './image-store.ts';

export interface S3Location {
  bucket: string;
  /** Key prefix without leading or trailing slash ('' = bucket root). */
  prefix: string;
}

export interface S3StoreOptions extends S3Location {
  /** e.g. http://127.0.0.1:9000 for MinIO; undefined = AWS. */
  endpoint?: string;
  region?: string;
  /** Bucket in the path (MinIO, s3rver) instead of the host name. */
  forcePathStyle?: boolean;
  credentials?: { accessKeyId: string; secretAccessKey: string };
  /** Per-request limit, so an unreachable store fails a write instead of hanging the job. */
  requestTimeoutMs?: number;
}

const CONTENT_TYPES: Record<string, string> = { png: 'image/png', jpg: 'image/jpeg', jpeg: 'image/jpeg', webp: 'image/webp' };

/** `s3://bucket/some/prefix` → {bucket, prefix}; throws with what a valid value looks like. */
export function parseS3Url(url: string): S3Location {
  const m = /^s3:\/\/([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(?:\/(.*))?$/.exec(url);
  if (!m) throw new Error(`expected s3://bucket[/prefix] with a valid bucket name (3-63 lowercase letters, digits, '.', '-'), got ${JSON.stringify(url)}`);
  return { bucket: m[1]!, prefix: (m[2] ?? '').replace(/^\/+|\/+$/g, '') };
}

export class S3ImageStore implements ImageStore {
  readonly client: S3Client;
  readonly bucket: string;
  readonly prefix: string;

  constructor(opts: S3StoreOptions) {
    this.bucket = opts.bucket;
    this.prefix = opts.prefix;
    this.client = new S3Client({
      endpoint: opts.endpoint,
      region: opts.region ?? process.env.AWS_REGION ?? 'us-east-1',
      forcePathStyle: opts.forcePathStyle ?? opts.endpoint !== undefined,
      credentials: opts.credentials,
      requestHandler: { requestTimeout: opts.requestTimeoutMs ?? 60_000, connectionTimeout: 10_000 },
      maxAttempts: 3,
    });
  }

  /** The object key of a stored name (checked: no separators, no "..", so it stays under the prefix). */
  keyOf(name: string): string {
    checkName(name);
    return this.prefix ? `${this.prefix}/${name}` : name;
  }

  /** A single PUT is atomic in S3: readers see the old object or the new one, never a part. */
  async write(name: string, data: Uint8Array): Promise<void> {
    const ext = name.slice(name.lastIndexOf('.') + 1).toLowerCase();
    await this.client.send(
      new PutObjectCommand({
        Bucket: this.bucket,
        Key: this.keyOf(name),
        Body: data,
        ContentType: CONTENT_TYPES[ext] ?? 'application/octet-stream',
      }),
    );
  }

  async read(name: string): Promise<Buffer | undefined> {
    try {
      const out = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: this.keyOf(name) }));
      if (!out.Body) return undefined;
      return Buffer.from(await out.Body.transformToByteArray());
    } catch (e) {
      if (isNotFound(e)) return undefined;
      throw e;
    }
  }

  async exists(name: string): Promise<boolean> {
    try {
      await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: this.keyOf(name) }));
      return true;
    } catch (e) {
      if (isNotFound(e)) return false;
      throw e;
    }
  }

  async remove(name: string): Promise<void> {
    await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: this.keyOf(name) }));
  }

  /** A time-limited GET URL for `name` that needs no Kiln credentials (for --presign). */
  async presignedUrl(name: string, ttlS: number): Promise<string> {
    return getSignedUrl(this.client, new GetObjectCommand({ Bucket: this.bucket, Key: this.keyOf(name) }), { expiresIn: ttlS });
  }

  close(): void {
    this.client.destroy();
  }
}

function isNotFound(e: unknown): boolean {
  const err = e as { name?: string; $metadata?: { httpStatusCode?: number } };
  return err?.name === 'NoSuchKey' || err?.name === 'NotFound' || err?.$metadata?.httpStatusCode === 404;
}
