// Progress reporting and cancellation shared by the stages.
import type { ProgressEvent } from '../api.ts';

/** A listener's failure must not break the generation. */
export function progressReporter(cb?: (e: ProgressEvent) => void): (e: ProgressEvent) => void {
  return (e) => {
    if (!cb) return;
    try {
      cb(e);
    } catch {
      // ignored on purpose
    }
  };
}

export function abortError(): Error {
  const e = new Error('generation was cancelled');
  e.name = 'AbortError';
  return e;
}
