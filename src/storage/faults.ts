// Storage faults every layer recognises the same way. A full disk (or an exhausted quota) shows up as ENOSPC /
// EDQUOT from the file system and as SQLITE_FULL from the job database; all of them mean "free space and try
// again", never a bug, so the server answers 507 and keeps running, and a job that hit it fails with code
// 'storage'.

const DISK_FULL_CODES = new Set(['ENOSPC', 'EDQUOT', 'SQLITE_FULL']);

/** True when `err` (or its cause, a few levels deep) says the disk or the quota is full. */
export function isDiskFull(err: unknown): boolean {
  let e = err as { code?: unknown; cause?: unknown } | undefined;
  for (let depth = 0; depth < 4 && e && typeof e === 'object'; depth++) {
    if (typeof e.code === 'string' && DISK_FULL_CODES.has(e.code)) return true;
    e = e.cause as typeof e;
  }
  return false;
}

/** The one sentence clients and logs get for a full disk (the code says which layer hit it). */
export function diskFullMessage(err: unknown, what: string): string {
  const code = (err as { code?: unknown })?.code;
  return `the server's disk is full (${typeof code === 'string' ? code : 'no space'}): ${what}; free space in the data directory, then retry`;
}
