// Per-phase timing of the face-restoration flow, for benches (bench/face-bench.ts); free when no record is passed.

export type FacePhase = 'resize' | 'detect' | 'decode' | 'align' | 'restore' | 'parse' | 'convert' | 'mask' | 'paste';

/**
 * Milliseconds spent per phase, summed over the faces, as wall time and as the process's CPU time (all threads:
 * onnxruntime's count too), filled when a record is passed (benches). On a loaded machine the CPU time of the
 * JavaScript phases is the stable figure.
 */
export interface FacePhaseTimings {
  wall: Partial<Record<FacePhase, number>>;
  cpu: Partial<Record<FacePhase, number>>;
}

export function newFaceTimings(): FacePhaseTimings {
  return { wall: {}, cpu: {} };
}

/** Starts timing a phase; the returned function adds the elapsed wall and CPU time to `timings`. */
export function startPhase(timings: FacePhaseTimings | undefined, phase: FacePhase): () => void {
  if (!timings) return () => {};
  const t0 = performance.now();
  const c0 = process.cpuUsage();
  return () => {
    const c = process.cpuUsage(c0);
    timings.wall[phase] = (timings.wall[phase] ?? 0) + performance.now() - t0;
    timings.cpu[phase] = (timings.cpu[phase] ?? 0) + (c.user + c.system) / 1000;
  };
}

/** Runs `fn` as one phase (see startPhase). */
export async function timed<T>(timings: FacePhaseTimings | undefined, phase: FacePhase, fn: () => T | Promise<T>): Promise<T> {
  const done = startPhase(timings, phase);
  try {
    return await fn();
  } finally {
    done();
  }
}
