// What a checkpoint is, from its headers and configs only (no tokenizers, no weights read, no hashing).
import type { ModelRef } from './api.ts';
import { flowFamilyOfFile, flowModelName } from './weights/flow-model.ts';
import { loadModel } from './weights/model.ts';

export interface ModelSummary {
  name: string;
  format: 'diffusers' | 'single-file';
  family: string;
  prediction: string;
  /** Config fields that had to be guessed, and config/weight disagreements. */
  warnings: string[];
}

/** Throws ModelFileError when the model cannot be read or is of no known family. */
export async function inspectModel(ref: ModelRef): Promise<ModelSummary> {
  try {
    const m = await loadModel(ref, { skipTokenizers: true, hashCacheFile: null });
    return { name: m.name, format: m.format, family: m.family, prediction: m.prediction, warnings: m.warnings };
  } catch (e) {
    // A transformer-only Flux/SD3 file needs its companion parts to run, but its family shows in its own keys.
    const family = flowFamilyOfFile(ref.path);
    if (!family) throw e;
    return { name: flowModelName(ref.path), format: 'single-file', family, prediction: 'flow', warnings: [(e as Error).message] };
  }
}
