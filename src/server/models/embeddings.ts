// Textual-inversion embeddings in models/embeddings/: which are readable (a broken file is listed as skipped and
// never sent to the engine), and A1111's /sdapi/v1/embeddings listing of them.
import { inspectEmbedding } from '../../engine/index.ts';
import type { ModelRegistry } from './registry.ts';

interface EmbeddingInfo {
  name: string;
  path: string;
  vectors?: number;
  shape?: number;
  problem?: string;
}

function describe(models: ModelRegistry): EmbeddingInfo[] {
  return models.list('embedding').map((e) => {
    try {
      const { vectors, widths } = inspectEmbedding(e.path);
      return { name: e.name, path: e.path, vectors, shape: Object.values(widths)[0] };
    } catch (err) {
      return { name: e.name, path: e.path, problem: (err as Error).message };
    }
  });
}

/** The readable embeddings, by prompt word (the file stem, as A1111). */
export function usableEmbeddings(models: ModelRegistry): Array<{ name: string; path: string }> {
  return describe(models)
    .filter((e) => !e.problem)
    .map((e) => ({ name: e.name, path: e.path }));
}

/** A1111's shape: readable files under `loaded`, unreadable ones under `skipped`. */
export function a1111Embeddings(models: ModelRegistry) {
  const entry = (e: EmbeddingInfo) => ({ step: null, sd_checkpoint: null, sd_checkpoint_name: null, shape: e.shape ?? null, vectors: e.vectors ?? 0 });
  const all = describe(models);
  return {
    loaded: Object.fromEntries(all.filter((e) => !e.problem).map((e) => [e.name, entry(e)])),
    skipped: Object.fromEntries(all.filter((e) => e.problem).map((e) => [e.name, entry(e)])),
  };
}
