// The running job's latest live preview as PNG bytes, shared by the native route and the compat adapters.
// Each preview is encoded once, however often clients poll (encodings are dropped with their preview).
import sharp from 'sharp';
import type { JobQueue } from '../queue/queue.ts';
import type { JobPreview } from '../queue/job.ts';

const encoded = new WeakMap<JobPreview, Promise<Buffer>>();

export interface PreviewPng {
  png: Buffer;
  step: number;
  seq: number;
}

/** The latest preview of job `id` as PNG, or undefined when the job is not running or has none yet. */
export async function previewPng(queue: JobQueue, id: string): Promise<PreviewPng | undefined> {
  const preview = await queue.preview(id);
  if (!preview) return undefined;
  let png = encoded.get(preview);
  if (!png) {
    const { data, width, height, channels } = preview.image;
    png = sharp(data, { raw: { width, height, channels } }).png({ compressionLevel: 1 }).toBuffer();
    encoded.set(preview, png);
  }
  return { png: await png, step: preview.step, seq: preview.seq };
}
