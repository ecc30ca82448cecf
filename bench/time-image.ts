// Times one generation through the real pipeline: the whole image, the UNet per step and the VAE decode (from the
// pipeline's own timings: its progress events come after each evaluation, so a phase timer would count the first
// UNet call as encoding), the process CPU seconds, and the RSS after it and at its sampled peak.
import type { GenerateRequest } from '../src/engine/api.ts';
import { runPipeline } from '../src/engine/pipelines/generate.ts';
import type { ModelSessions } from '../src/engine/pipelines/model-sessions.ts';

export interface Timing {
  totalS: number;
  /** Sampling seconds per step: one UNet call per step for Euler (batch 2 with CFG, batch 1 without). */
  unetPerStepS: number;
  /** The VAE decode and the images' post-processing (no PNG encoding). */
  decodeS: number;
  /** Process CPU seconds for the image (every onnxruntime thread): on a loaded machine, cpuS / threads is what an idle one would take. */
  cpuS: number;
  rssGB: number;
  /** The largest RSS seen while the image ran (sampled every 100 ms; onnxruntime runs off the event loop). GiB, as rssGB. */
  sampledPeakRssGB: number;
}

export const gb = (bytes: number) => Number((bytes / 1024 ** 3).toFixed(2));

export async function timeImage(ms: ModelSessions, req: GenerateRequest): Promise<Timing> {
  let peak = process.memoryUsage.rss();
  const sampler = setInterval(() => {
    peak = Math.max(peak, process.memoryUsage.rss());
  }, 100);
  const t0 = performance.now();
  const cpu0 = process.cpuUsage();
  let timings: { sampleMs: number; decodeMs: number };
  try {
    ({ timings } = await runPipeline({ base: ms }, req));
  } finally {
    clearInterval(sampler);
  }
  const cpu = process.cpuUsage(cpu0);
  const end = performance.now();
  const rss = process.memoryUsage.rss();
  return {
    totalS: (end - t0) / 1000,
    unetPerStepS: timings.sampleMs / 1000 / req.steps!,
    decodeS: timings.decodeMs / 1000,
    cpuS: (cpu.user + cpu.system) / 1e6,
    rssGB: gb(rss),
    sampledPeakRssGB: gb(Math.max(peak, rss)),
  };
}
