// RunPod's `s3Config`: the client names its own bucket ({accessId, accessSecret, bucketName, endpointUrl}) and
// gets its images there, as presigned URLs, instead of base64 in the output (what runpod-python's rp_upload
// does). The credentials live only in the job's record (Job.extra.runpod, never shown by any view) until the
// output is built; uploads are idempotent (same key per image), so /status polls and the webhook agree.
import { S3ImageStore } from '../../storage/s3.ts';
import { HttpError } from '../errors.ts';

export interface RunPodS3Config {
  accessId: string;
  accessSecret: string;
  bucketName: string;
  endpointUrl: string;
}

/** rp_upload's presigned URL lifetime: 7 days. */
const PRESIGN_S = 604_800;

export const s3ConfigSchema = {
  type: 'object',
  required: ['accessId', 'accessSecret', 'bucketName', 'endpointUrl'],
  properties: {
    accessId: { type: 'string', minLength: 1, maxLength: 256 },
    accessSecret: { type: 'string', minLength: 1, maxLength: 256 },
    bucketName: { type: 'string', pattern: '^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$' },
    endpointUrl: { type: 'string', minLength: 1, maxLength: 2048 },
  },
};

/** The endpoint must be an http(s) URL whose host the outbound policy allows (the webhook SSRF rules). */
export async function checkS3Config(cfg: RunPodS3Config, checkTarget: (url: string) => Promise<void>): Promise<void> {
  let url: URL;
  try {
    url = new URL(cfg.endpointUrl);
  } catch {
    throw new HttpError(400, 'invalid_request', 's3Config.endpointUrl: must be an http(s) URL such as https://s3.us-east-1.amazonaws.com');
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:')
    throw new HttpError(400, 'invalid_request', 's3Config.endpointUrl: must be an http(s) URL such as https://s3.us-east-1.amazonaws.com');
  try {
    await checkTarget(url.href);
  } catch (e) {
    throw new HttpError(400, 'invalid_request', `s3Config.endpointUrl: ${(e as Error).message}`);
  }
}

/** The client's bucket refused or could not be reached: the job's output cannot be delivered. */
export class ClientBucketError extends Error {
  constructor(bucket: string, cause: unknown) {
    super(`s3Config: uploading the results to bucket "${bucket}" failed: ${(cause as Error)?.message ?? String(cause)}`);
    this.name = 'ClientBucketError';
  }
}

/** Puts each image in the client's bucket under `<jobId>/<filename>` (unless already there) and returns presigned URLs. */
export async function uploadToClientBucket(cfg: RunPodS3Config, jobId: string, files: { filename: string; bytes: Buffer }[]): Promise<string[]> {
  const store = new S3ImageStore({
    bucket: cfg.bucketName,
    prefix: jobId,
    endpoint: cfg.endpointUrl,
    credentials: { accessKeyId: cfg.accessId, secretAccessKey: cfg.accessSecret },
    requestTimeoutMs: 30_000,
  });
  try {
    const urls: string[] = [];
    for (const f of files) {
      if (!(await store.exists(f.filename))) await store.write(f.filename, f.bytes);
      urls.push(await store.presignedUrl(f.filename, PRESIGN_S));
    }
    return urls;
  } catch (e) {
    throw new ClientBucketError(cfg.bucketName, e);
  } finally {
    store.close();
  }
}
