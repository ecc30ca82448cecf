// Opening a weights file for reading, with the errors every reader gives: missing, a folder, unreadable.
import { openSync } from 'node:fs';
import { ModelFileError } from '../api.ts';

/** A file descriptor for `file`; `expected` names what a folder should have been (".safetensors file"). */
export function openWeightsFile(file: string, expected: string): number {
  try {
    return openSync(file, 'r');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new ModelFileError(file, 'file not found');
    if (code === 'EISDIR') throw new ModelFileError(file, `is a folder, expected a ${expected}`);
    throw new ModelFileError(file, `cannot open: ${(e as Error).message}`);
  }
}
