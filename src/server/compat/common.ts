// Shared pieces of the compat adapters: submit a JobSpec and wait for it, read back the stored images,
// decode image inputs, and classify errors so each surface can answer in its own error shape.
// Adapters never touch the engine; everything goes through app.kiln (submit / queue / storage).
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { KilnServices } from '../services.ts';
import type { Job, StoredImage } from '../../queue/job.ts';
import type { JobSpec } from '../../queue/job-spec.ts';
import { resolveSeed } from '../../engine/index.ts';
import { specWithDefaults } from '../../queue/job-spec.ts';
import { decodeBase64Field } from '../uploads.ts';
import { FeatureNotImplemented } from '../../queue/capabilities.ts';
import type { NetworkSpec } from '../../queue/job-spec.ts';
import { HttpError, toHttpError } from '../errors.ts';
import { failureStatus } from '../job-failure.ts';
import { cancelOnHangUp } from '../hang-up.ts';

/**
 * A whole endpoint Kiln does not have yet (captioning, extras upscaling, ...): 501 naming the feature and the
 * field. Features of a generation request go through the job model's capability check instead
 * (src/queue/capabilities.ts), so every surface answers them alike.
 */
export function notImplemented(feature: string, field: string): never {
  throw new FeatureNotImplemented(feature, field);
}

/** Any error -> status, a short code and a message naming the field (schema errors included). */
export interface Classified {
  status: number;
  code: string;
  message: string;
  field?: string;
  headers: Record<string, string>;
}

export function classify(err: unknown): Classified {
  if (err instanceof FeatureNotImplemented) return { status: 501, code: 'not_implemented', message: err.message, field: err.field, headers: {} };
  const h = toHttpError(err);
  return { status: h.statusCode, code: h.code, message: h.message, field: h.field, headers: h.headers };
}

/**
 * Answers any error in a surface's own shape: the classified status (or what `status` makes of it), its headers
 * (Retry-After, ...) and `body`. Server faults are logged as `logMessage`; 501 is a known gap, not a fault.
 */
export function sendClassified(
  err: unknown,
  req: FastifyRequest,
  reply: FastifyReply,
  logMessage: string,
  body: (c: Classified) => unknown,
  status = (c: Classified) => c.status,
): void {
  const c = classify(err);
  if (c.status >= 500 && c.status !== 501) req.log.error({ err }, logMessage);
  for (const [k, v] of Object.entries(c.headers)) reply.header(k, v);
  void reply.status(status(c)).send(body(c));
}

/** A job that did not succeed -> the error a synchronous caller gets (its message after `messagePrefix`). */
export function jobFailure(job: Job, messagePrefix = ''): HttpError {
  const { status, code } = failureStatus(job);
  if (job.state === 'cancelled') return new HttpError(status, code, messagePrefix + (job.error?.message ?? 'the job was cancelled'));
  return new HttpError(status, code, messagePrefix + (job.error?.message ?? `the job ${job.state}`), job.error?.field);
}

/** Default spec fields, so adapters only state what their surface sets. */
export function baseSpec(fields: Partial<JobSpec> & Pick<JobSpec, 'prompts'>): JobSpec {
  return specWithDefaults({ seed: resolveSeed(undefined), subseed: resolveSeed(undefined), ...fields });
}

export function ownerOf(req: FastifyRequest): string {
  return req.principal?.name ?? 'anonymous';
}

/** How long a synchronous call waits for its job by default: the job timeout plus a margin for the queue. */
export function syncWaitMs(kiln: KilnServices): number {
  return kiln.config.queue.jobTimeoutMs + 60_000;
}

/** Submits and waits until the job is final (or timeoutMs passes). */
export async function runJob(kiln: KilnServices, req: FastifyRequest, reply: FastifyReply, spec: JobSpec, timeoutMs = syncWaitMs(kiln)): Promise<Job> {
  return waitForJob(kiln, reply, await kiln.submit(spec, { owner: ownerOf(req) }), timeoutMs);
}

/**
 * Waits until a submitted job is final (or timeoutMs passes). If the client hangs up first, the job is
 * cancelled so the device is free for others (as the native synchronous route does).
 */
export async function waitForJob(kiln: KilnServices, reply: FastifyReply, job: Job, timeoutMs = syncWaitMs(kiln)): Promise<Job> {
  const stopWatching = cancelOnHangUp(reply, () => kiln.queue.cancel(job.id));
  try {
    return (await kiln.queue.waitFor(job.id, timeoutMs)) ?? job;
  } finally {
    stopWatching();
  }
}

/**
 * Submits a spec (its stored input removed again if the submit is refused), waits for it (cancelled if the client
 * hangs up) and reads back its images; a job that did not succeed throws its jobFailure.
 */
export async function generateImages(
  kiln: KilnServices,
  req: FastifyRequest,
  reply: FastifyReply,
  spec: JobSpec,
): Promise<{ job: Job; images: ResultImage[] }> {
  const job = await submitWithInput(kiln, spec, async () => kiln.submit(spec, { owner: ownerOf(req) }));
  const done = await waitForJob(kiln, reply, job);
  if (done.state !== 'succeeded') throw jobFailure(done);
  return { job: done, images: await resultImages(kiln, done) };
}

export interface ResultImage {
  meta: StoredImage;
  bytes: Buffer;
}

/** The stored result files of a succeeded job, in order. */
export async function resultImages(kiln: KilnServices, job: Job): Promise<ResultImage[]> {
  const out: ResultImage[] = [];
  for (const meta of job.result?.images ?? []) {
    const bytes = await kiln.storage.read(meta.name);
    if (!bytes) throw new HttpError(410, 'gone', `the image ${meta.name} is no longer stored (expired)`);
    out.push({ meta, bytes });
  }
  return out;
}

/** base64 / data: URI image input -> stored input name (validated and decoded by the shared input code). */
export async function storeImageField(kiln: KilnServices, value: string, field: string): Promise<string> {
  const bytes = decodeBase64Field(value, field, kiln.config.limits);
  return kiln.storeUpload(bytes, field);
}

export async function storeImageBytes(kiln: KilnServices, bytes: Buffer, field: string): Promise<string> {
  return kiln.storeUpload(bytes, field);
}

/** Removes a stored input again when the job that would have used it was refused. */
export async function submitWithInput(kiln: KilnServices, spec: JobSpec, fn: () => Promise<Job>): Promise<Job> {
  try {
    return await fn();
  } catch (e) {
    if (spec.initImage) await kiln.storage.remove(spec.initImage).catch(() => undefined);
    if (spec.mask?.image) await kiln.storage.remove(spec.mask.image).catch(() => undefined);
    throw e;
  }
}

/** "512x768" -> {width, height}; throws HttpError 400 naming `field`. */
export function parseSize(value: string, field: string): { width: number; height: number } {
  const m = /^(\d{1,5})x(\d{1,5})$/.exec(value.trim());
  if (!m) throw new HttpError(400, 'invalid_request', `${field}: must look like WIDTHxHEIGHT, e.g. 512x512, got "${value}"`, field);
  return { width: Number(m[1]), height: Number(m[2]) };
}

/** Rounds a pixel size down to the multiple of 8 the latent grid needs (A1111 does the same implicitly). */
export function floor8(n: number): number {
  return Math.max(8, Math.floor(n / 8) * 8);
}

/**
 * A1111 extra-network tags: <lora:name:weight>, <lora:name:te:unet>, named te=/unet= (and <lyco:...>,
 * <hypernet:...>); weights default to 1 and the UNet's to the text encoders'. A weight that is not a number
 * stays NaN, so the weight check answers 4xx naming the tag.
 */
const EXTRA_NETWORK = /<(lora|lyco|hypernet):([^>]+)>/gi;

function networkFromTag(args: string, tag: string): NetworkSpec {
  const [name = '', ...rest] = args.split(':');
  const positional: string[] = [];
  const named: Record<string, string> = {};
  for (const a of rest) {
    const eq = a.indexOf('=');
    if (eq >= 0) named[a.slice(0, eq).trim().toLowerCase()] = a.slice(eq + 1).trim();
    else positional.push(a.trim());
  }
  const num = (v: string | undefined) => (v === undefined || v === '' ? undefined : Number(v));
  const te = num(named.te ?? positional[0]) ?? 1;
  const unet = num(named.unet ?? positional[1]);
  return { name: name.trim(), weight: te, ...(unet !== undefined && unet !== te ? { unetWeight: unet } : {}), tag };
}

/**
 * The extra networks a prompt's tags ask for, as job-model fields (LoRAs and hypernetworks), with `field`
 * recorded as where they came from. Spread into a spec; the capability check decides whether they can run.
 */
export function promptNetworks(
  prompts: string[],
  field = 'prompt',
): { loras?: NetworkSpec[]; hypernetworks?: NetworkSpec[]; sourceFields?: { loras?: string; hypernetworks?: string } } {
  const loras: NetworkSpec[] = [];
  const hypernetworks: NetworkSpec[] = [];
  for (const p of prompts) {
    for (const m of p.matchAll(EXTRA_NETWORK)) {
      const net = networkFromTag(m[2]!, m[0]);
      (m[1]!.toLowerCase() === 'hypernet' ? hypernetworks : loras).push(net);
    }
  }
  return {
    ...(loras.length ? { loras } : {}),
    ...(hypernetworks.length ? { hypernetworks } : {}),
    ...(loras.length || hypernetworks.length
      ? { sourceFields: { ...(loras.length ? { loras: field } : {}), ...(hypernetworks.length ? { hypernetworks: field } : {}) } }
      : {}),
  };
}

/** Model names the registry knows (for listings). */
export function checkpointNames(kiln: KilnServices): string[] {
  return kiln.models.list('checkpoint').map((m) => m.name);
}

/** A random-ish, filesystem-safe id fragment. */
export function shortId(id: string): string {
  return id.replace(/-/g, '').slice(0, 8);
}

export const MIME: Record<string, string> = { png: 'image/png', jpeg: 'image/jpeg', webp: 'image/webp' };

/** A data: URL of a stored image. */
export function dataUrl(img: ResultImage): string {
  return `data:${MIME[img.meta.format]};base64,${img.bytes.toString('base64')}`;
}
