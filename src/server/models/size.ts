// Bytes of a model file or folder (links followed: HF snapshots point at blobs), for listings and start estimates.
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';

const MAX_DEPTH = 4;

export function sizeOf(path: string, depth = 0): number {
  const st = statSync(path);
  if (!st.isDirectory()) return st.size;
  if (depth > MAX_DEPTH) return 0;
  return readdirSync(path).reduce((sum, f) => {
    try {
      return sum + sizeOf(join(path, f), depth + 1);
    } catch {
      return sum;
    }
  }, 0);
}
