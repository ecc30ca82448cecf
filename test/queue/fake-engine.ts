// A stand-in engine with the real contract, for queue and server tests. It "samples" by waiting per step;
// KILN_FAKE_BLOCKING=1 busy-waits instead, which blocks its thread the way onnxruntime's run() does.
// Prompt markers choose behaviours: [fail] throws, [input-error] throws KilnInputError on `sampler`,
// [ignore-abort] never checks the abort signal. With opts.preview it attaches a preview (width/8 x height/8,
// every byte = step) every N steps and at the last one.
import { KilnInputError } from '../../src/engine/index.ts';
import type { GenerateOptions, GenerateRequest, GenerateResult, GeneratedImage, ModelRef, RunOptions } from '../../src/engine/index.ts';

function busyWait(ms: number): void {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    /* block the thread on purpose */
  }
}

export const FAKE_SAMPLERS = [
  { name: 'Euler', aliases: ['k_euler'] },
  { name: 'Euler a', aliases: ['k_euler_a'] },
  { name: 'DPM++ 2M', aliases: ['k_dpmpp_2m'] },
];
export const FAKE_SCHEDULES = [
  { name: 'automatic', label: 'Automatic' },
  { name: 'karras', label: 'Karras' },
];

export function createEngine(_opts: { device?: string; cacheDir?: string } = {}) {
  const stepMs = Number(process.env.KILN_FAKE_STEP_MS ?? 5);
  const blocking = process.env.KILN_FAKE_BLOCKING === '1';
  let calls = 0;
  const fake = {
    get calls() {
      return calls;
    },
    /** The engine's generic entry: `generate` and `load` as the real engine has them. */
    async run(op: string, input: unknown, opts: RunOptions = {}): Promise<never> {
      if (op === 'generate') return (await fake.generate(input as GenerateRequest, opts)) as never;
      if (op === 'load') return { path: (input as ModelRef).path, name: 'fake', family: 'sd1', prediction: 'epsilon', lastUsed: Date.now() } as never;
      throw new KilnInputError(`unknown engine operation "${op}"`, 'op');
    },
    async generate(req: GenerateRequest, opts: GenerateOptions = {}): Promise<GenerateResult> {
      calls++;
      const all = req.prompts.join(' ');
      if (all.includes('[fail]')) throw new Error('boom');
      if (all.includes('[input-error]')) throw new KilnInputError(`sampler: unknown sampler "${req.sampler}"`, 'sampler');
      const ignoreAbort = all.includes('[ignore-abort]');
      const t0 = Date.now();
      opts.onProgress?.({ phase: 'encoding', step: 0, totalSteps: req.steps, fraction: 0 });
      for (let i = 0; i < req.steps; i++) {
        if (!ignoreAbort && opts.signal?.aborted) {
          const e = new Error('aborted');
          e.name = 'AbortError';
          throw e;
        }
        if (blocking) busyWait(stepMs);
        else await new Promise((r) => setTimeout(r, stepMs));
        const every = opts.preview?.everyEvals ?? 0;
        const step = i + 1;
        const preview =
          every > 0 && (step % every === 0 || step === req.steps)
            ? {
                data: new Uint8Array(Math.ceil(req.width / 8) * Math.ceil(req.height / 8) * 3).fill(step % 256),
                width: Math.ceil(req.width / 8),
                height: Math.ceil(req.height / 8),
                channels: 3 as const,
              }
            : undefined;
        opts.onProgress?.({ phase: 'sampling', step, totalSteps: req.steps, fraction: step / req.steps, ...(preview ? { preview } : {}) });
      }
      const sampleMs = Date.now() - t0;
      const per = req.imagesPerPrompt ?? 1;
      const negs = Array.isArray(req.negativePrompt) ? req.negativePrompt : [req.negativePrompt ?? ''];
      const images: GeneratedImage[] = [];
      req.prompts.forEach((prompt, p) => {
        for (let k = 0; k < per; k++) {
          const seed = (req.seed ?? 0) + images.length;
          const data = new Uint8Array(req.width * req.height * 3);
          for (let j = 0; j < data.length; j++) data[j] = (seed + j) % 251;
          const negativePrompt = (negs.length === 1 ? negs[0] : negs[p]) ?? '';
          images.push({
            image: { data, width: req.width, height: req.height, channels: 3 },
            seed,
            subseed: req.variation?.seed ?? 0,
            prompt,
            negativePrompt,
            infotext: `${prompt}\nNegative prompt: ${negativePrompt}\nSteps: ${req.steps}, Sampler: ${req.sampler}, Seed: ${seed}, Size: ${req.width}x${req.height}`,
          });
        }
      });
      // A split batch's chunk: only its window, as the real engine (pipelines/batch-window.ts).
      const w = req.batchWindow;
      const out = w ? images.slice(w.start, w.start + w.count) : images;
      return { images: out, timings: { loadMs: 0, encodeMs: 0, sampleMs, decodeMs: 0, totalMs: sampleMs } };
    },
    listSamplers: () => FAKE_SAMPLERS,
    listSchedules: () => FAKE_SCHEDULES,
    close: () => undefined,
  };
  return fake;
}
