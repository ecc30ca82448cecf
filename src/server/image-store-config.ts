// Which ImageStore a server or worker uses, from its config: the data dir's images/ folder by default, another
// folder, or an S3-protocol bucket (several API nodes and workers sharing one store).
import { join } from 'node:path';
import { LocalImageStore } from '../storage/local.ts';
import { parseS3Url, S3ImageStore } from '../storage/s3.ts';
import type { ImageStore } from '../storage/image-store.ts';
import type { KilnConfig } from './config.ts';

export function openImageStore(config: Pick<KilnConfig, 'dataDir' | 'storage' | 's3Endpoint' | 's3Region'>): ImageStore {
  const where = config.storage;
  if (where?.startsWith('s3://')) return new S3ImageStore({ ...parseS3Url(where), endpoint: config.s3Endpoint, region: config.s3Region });
  return new LocalImageStore(where ?? join(config.dataDir, 'images'));
}
