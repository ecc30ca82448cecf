// What kind of checkpoint a models-folder entry is (SD1 / SD2 / SDXL / refiner, epsilon or v), read from
// its safetensors headers and configs only, and remembered per path + size + mtime.
import { statSync } from 'node:fs';
import { inspectModel } from '../../engine/index.ts';

export interface ModelDescription {
  family: string | null;
  prediction: string | null;
  /** Why the file could not be read, when it could not. */
  problem?: string;
}

const cache = new Map<string, ModelDescription>();

export async function describeCheckpoint(path: string): Promise<ModelDescription> {
  let key: string;
  try {
    const st = statSync(path);
    key = `${path}:${st.size}:${st.mtimeMs}`;
  } catch {
    return { family: null, prediction: null, problem: 'not found' };
  }
  const hit = cache.get(key);
  if (hit) return hit;
  let desc: ModelDescription;
  try {
    const m = await inspectModel({ path });
    desc = { family: m.family, prediction: m.prediction };
  } catch (e) {
    desc = { family: null, prediction: null, problem: (e as Error).message };
  }
  cache.set(key, desc);
  return desc;
}
