// How a job that did not succeed answers a caller that waited for it: one status per way a job can end badly,
// for every surface (native /v1/generate and the compat adapters).
import type { ErrorCode, Job } from '../queue/job.ts';

export type FailureCode = ErrorCode | 'cancelled';

export const FAILURE_STATUS: Readonly<Record<FailureCode, number>> = {
  input: 400,
  model: 422,
  timeout: 504,
  interrupted: 500,
  internal: 500,
  // The result could not be stored (disk full): Insufficient Storage, as a refused submit gets.
  storage: 507,
  // Someone (the owner, an admin, a hang-up) stopped it: a conflict, not a server fault.
  cancelled: 409,
};

/** A failed or cancelled job -> its HTTP status and error code (a failure without a code counts as internal). */
export function failureStatus(job: Job): { status: number; code: FailureCode } {
  const code: FailureCode = job.state === 'cancelled' ? 'cancelled' : (job.error?.code ?? 'internal');
  return { status: FAILURE_STATUS[code], code };
}
