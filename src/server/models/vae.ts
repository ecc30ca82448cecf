// The check a request's VAE choice gets before it is queued, so a bad one answers 4xx rather than a failed job:
// the file must be a VAE whose latent channels fit the checkpoint (a VAE of another family does not).
import { statSync } from 'node:fs';
import { inspectModel, latentSpaceOf, ModelFileError } from '../../engine/index.ts';
import { SpecError, type JobSpec } from '../../queue/job-spec.ts';
import { describeCheckpoint } from './family.ts';
import { taesdStem } from './taesd.ts';
import type { ModelRegistry } from './registry.ts';

/** Verdicts by checkpoint + VAE file (path, size, mtime): a problem message, or null when they fit. Bounded. */
const verdicts = new Map<string, string | null>();
const MAX_VERDICTS = 256;

function fileKey(path: string): string {
  try {
    const st = statSync(path);
    return `${path}:${st.size}:${st.mtimeMs}`;
  } catch {
    return `${path}:missing`;
  }
}

/**
 * Throws SpecError (the request's VAE field) when the chosen VAE cannot be used with the chosen checkpoint.
 * "taesd" (final decode with the tiny autoencoder) needs a decoder file for the checkpoint's latent space in `taesd`.
 */
export async function checkSpecVae(spec: JobSpec, models: ModelRegistry, taesd: Partial<Record<string, string>> = {}): Promise<void> {
  if (spec.vae === undefined) return;
  const field = spec.sourceFields?.vae ?? 'vae';
  if (isTaesdChoice(spec.vae)) {
    const { family } = await describeCheckpoint((await models.resolve(spec.model)).path);
    const space = family ? latentSpaceOf(family) : undefined;
    if (space !== undefined && !taesd[space])
      throw new SpecError(field, `"taesd" needs ${taesdStem(space)}.safetensors (or .pth) in models/vae-approx/ or models/taesd/ for this ${family} model`);
    return;
  }
  const ref = await models.resolve(spec.model, spec.vae);
  if (!ref.vae) return;
  // A checkpoint that cannot be read is the model's problem, reported as such when the job runs.
  if ((await describeCheckpoint(ref.path)).problem !== undefined) return;
  const key = `${fileKey(ref.path)}|${fileKey(ref.vae)}`;
  let problem = verdicts.get(key);
  if (problem === undefined) {
    try {
      await inspectModel({ path: ref.path, vae: ref.vae });
      problem = null;
    } catch (e) {
      if (!(e instanceof ModelFileError)) throw e;
      problem = e.file === ref.vae ? e.message.slice(e.file.length + 2) : e.message;
    }
    if (verdicts.size >= MAX_VERDICTS) verdicts.delete(verdicts.keys().next().value!);
    verdicts.set(key, problem);
  }
  if (problem !== null) throw new SpecError(field, `VAE "${spec.vae}" cannot be used with this model: ${problem}`);
}

/** The VAE choice that means "decode the final image with TAESD" (any case). */
export function isTaesdChoice(vae: string | undefined): boolean {
  return vae?.toLowerCase() === 'taesd';
}
