// Graph builds in the server log: a model's first job on a machine builds its graphs (SD1.5's UNet: ~40 s on a CPU),
// and a log that says nothing meanwhile looks like a hang. One line when a graph starts, one at each quarter, one
// when it is built; the engine reports them as 'loading' progress of the job (engine/onnx/build-progress.ts).
import type { GraphBuildProgress } from '../engine/index.ts';

/** Graph build rate for the up-front estimate (SD1.5's ~3.4 GB fp32 UNet builds in ~35 s on a CPU). */
export const BUILD_SECONDS_PER_GIB = 10;

const LABELS: Record<string, string> = { unet: 'UNet', 'vae-decoder': 'VAE decoder', 'vae-encoder': 'VAE encoder' };

/** A network's name for people: "UNet", "text encoder 1", "VAE decoder". */
export function networkLabel(network: string): string {
  const te = /^text-encoder-(\d+)$/.exec(network);
  return te ? `text encoder ${Number(te[1]) + 1}` : (LABELS[network] ?? network);
}

const mb = (bytes: number) => Math.round(bytes / 1024 ** 2);

/** The log lines of one job's graph builds (a new instance per job). */
export class BuildLog {
  private quarter = new Map<number, number>();

  constructor(private readonly info: (fields: object, msg: string) => void) {}

  report(fields: object, b: GraphBuildProgress): void {
    const label = networkLabel(b.network);
    const base = { ...fields, network: b.network, graph: b.index, bytes: b.bytes, totalBytes: b.totalBytes, elapsedMs: b.elapsedMs };
    if (b.done) {
      this.info({ ...base, percent: 100 }, `${label} graph built in ${(b.elapsedMs / 1000).toFixed(1)} s (cached for the next start)`);
      return;
    }
    const q = Math.floor(b.fraction * 4);
    const seen = this.quarter.get(b.index);
    if (seen !== undefined && q <= seen) return;
    this.quarter.set(b.index, q);
    const percent = Math.round(b.fraction * 100);
    if (seen === undefined) {
      const estimate = Math.max(1, Math.round((b.totalBytes / 1024 ** 3) * BUILD_SECONDS_PER_GIB));
      this.info({ ...base, percent }, `building ${label} graph (first use on this machine only, ~${estimate} s, ${mb(b.totalBytes)} MB)…`);
      return;
    }
    const left = b.fraction > 0 ? Math.round(((b.elapsedMs / b.fraction) * (1 - b.fraction)) / 1000) : undefined;
    this.info(
      { ...base, percent },
      `building ${label} graph… ${percent}% (${mb(b.bytes)} of ${mb(b.totalBytes)} MB${left !== undefined ? `, ~${left} s left` : ''})`,
    );
  }
}
