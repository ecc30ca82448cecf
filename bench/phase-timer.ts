// Seconds spent in each pipeline phase, from a generation's progress events (a phase runs until the next begins).
import type { ProgressEvent } from '../src/engine/api.ts';

export function phaseTimer(): { onProgress: (e: ProgressEvent) => void; finish: () => Record<string, number> } {
  const phases: Record<string, number> = {};
  let phase = '';
  let phaseStart = performance.now();
  const close = (now: number) => {
    if (phase) phases[phase] = (phases[phase] ?? 0) + (now - phaseStart) / 1000;
    phaseStart = now;
  };
  return {
    onProgress: (e) => {
      if (e.phase === phase) return;
      close(performance.now());
      phase = e.phase;
    },
    /** Ends the current phase and returns the seconds per phase. */
    finish: () => {
      close(performance.now());
      phase = '';
      return phases;
    },
  };
}
