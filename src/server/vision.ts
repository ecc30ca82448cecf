// Image understanding for every surface: an uploaded image (validated as any upload: format, size, pixel count)
// becomes an 'embed-image' or 'interrogate' job, queued like the rest, and the caller waits for its data.
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { VisionOutput } from '../queue/job.ts';
import { specWithDefaults, type JobSpec, type VisionSpec } from '../queue/job-spec.ts';
import { jobFailure, ownerOf, submitWithInput, waitForJob } from './compat/common.ts';
import type { KilnServices } from './services.ts';

export interface VisionCall {
  kind: 'embed-image' | 'interrogate';
  /** The uploaded image's bytes, and the request field that carried it. */
  image: Buffer;
  field: string;
  vision: VisionSpec;
  /** Checkpoint name (VAE / fallback text tower); undefined = the server's default. */
  model?: string;
  /** The request field naming the CLIP model, for errors. */
  clipField?: string;
}

/** Checks, stores the upload, queues the job and waits for it; a job that fails throws its jobFailure. */
export async function understandImage(
  kiln: KilnServices,
  req: FastifyRequest,
  reply: FastifyReply,
  call: VisionCall,
): Promise<{ id: string; output: VisionOutput }> {
  const spec: JobSpec = specWithDefaults({
    kind: call.kind,
    prompts: [''],
    model: call.model,
    vision: call.vision,
    ...(call.clipField ? { sourceFields: { vision: call.clipField } } : {}),
  });
  // Refuse a request that cannot run (no CLIP model, unknown names) before storing its image.
  kiln.checkSpec({ ...spec, initImage: 'pending' });
  spec.initImage = await kiln.storeUpload(call.image, call.field);
  const job = await submitWithInput(kiln, spec, () => kiln.submit(spec, { owner: ownerOf(req) }));
  const done = await waitForJob(kiln, reply, job);
  if (done.state !== 'succeeded' || !done.result?.vision) throw jobFailure(done);
  return { id: done.id, output: done.result.vision };
}
