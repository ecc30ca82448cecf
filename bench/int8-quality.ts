// int8 vs fp32 quality on a model, measured the way docs/int8.md describes: one engine runs fp32, another int8
// (calibrated from its first generation(s), which run fp32), then a fixed set of seeds and prompts is generated on
// both. Prints per case the final image PSNR and largest pixel difference, the final-latent cosine similarity and
// the lowest per-step latent cosine (each evaluation's scaled latent input), plus the calibration verdict.
//   node --import tsx bench/int8-quality.ts [--model PATH] [--size PX] [--steps N] [--calibration-evals N]
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { createEngine } from '../src/engine/engine.ts';
import type { GenerateRequest } from '../src/engine/api.ts';
import { cosineSimilarity, imageDifference } from '../src/engine/precision/quality.ts';
import type { Int8Layers } from '../src/engine/precision/int8-graph.ts';

export interface QualityCase {
  prompt: string;
  seed: number;
}

export const QUALITY_CASES: QualityCase[] = [
  { prompt: 'a red apple on a wooden table', seed: 1 },
  { prompt: 'a lighthouse at dusk, oil painting', seed: 2 },
  { prompt: 'portrait of an old fisherman', seed: 3 },
  { prompt: 'a blue car in the snow', seed: 4 },
];

export interface CaseQuality {
  prompt: string;
  seed: number;
  psnr: number;
  maxPixelDiff: number;
  finalLatentCosine: number;
  /** Cosine similarity of the int8 and fp32 latents at each evaluation. */
  stepCosines: number[];
}

export interface QualityReport {
  verdict: unknown;
  cases: CaseQuality[];
  fp32Ms: number;
  int8Ms: number;
}

/** Generates each case with fp32 and int8 engines (int8 calibrated first on `calibration` prompts) and compares. */
export async function measureInt8Quality(
  base: Omit<GenerateRequest, 'prompts' | 'seed'>,
  cases: QualityCase[],
  opts: { calibrationEvaluations: number; calibrationPrompts?: string[]; threads?: number; layers?: Int8Layers },
): Promise<QualityReport> {
  const dir = mkdtempSync(join(tmpdir(), 'kiln-int8-quality-'));
  const fp32 = createEngine({ cacheDir: join(dir, 'fp32'), threads: opts.threads });
  const int8 = createEngine({
    cacheDir: join(dir, 'int8'),
    threads: opts.threads,
    precision: 'int8',
    int8: { calibrationEvaluations: opts.calibrationEvaluations, layers: opts.layers },
  });
  try {
    // Calibration: the int8 engine's first generations run fp32 and record the ranges.
    const prompts = opts.calibrationPrompts ?? ['a photograph of a cat', 'a watercolor landscape with mountains'];
    for (let done = 0, i = 0; done < opts.calibrationEvaluations; i++) {
      await int8.generate({ ...base, prompts: [prompts[i % prompts.length]!], seed: 1000 + i });
      done += base.steps ?? 20;
    }
    const cases_: CaseQuality[] = [];
    let fp32Ms = 0;
    let int8Ms = 0;
    for (const c of cases) {
      const req = { ...base, prompts: [c.prompt], seed: c.seed };
      const run = async (engine: typeof fp32) => {
        const steps: Float32Array[] = [];
        let final = new Float32Array();
        const res = await engine.generate(req, {}, { onModelInput: (x) => steps.push(x.slice()), onFinalLatents: (t) => (final = t.data.slice()) });
        return { image: res.images[0]!.image.data, steps, final, ms: res.timings.sampleMs };
      };
      const a = await run(fp32);
      const b = await run(int8);
      fp32Ms += a.ms;
      int8Ms += b.ms;
      const { psnr, maxDiff } = imageDifference(a.image, b.image);
      cases_.push({
        prompt: c.prompt,
        seed: c.seed,
        psnr,
        maxPixelDiff: maxDiff,
        finalLatentCosine: cosineSimilarity(a.final, b.final),
        stepCosines: a.steps.map((s, i) => cosineSimilarity(s, b.steps[i]!)),
      });
    }
    const stateFile = readdirSync(join(dir, 'int8')).find((f) => f.startsWith('unet-int8-'));
    const verdict = stateFile ? JSON.parse(readFileSync(join(dir, 'int8', stateFile), 'utf8')) : undefined;
    if (verdict) delete verdict.ranges;
    return { verdict, cases: cases_, fp32Ms, int8Ms };
  } finally {
    await fp32.close();
    await int8.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const args = process.argv.slice(2);
  const arg = (name: string, dflt: string) => (args.includes(name) ? args[args.indexOf(name) + 1]! : dflt);
  const size = Number(arg('--size', '64'));
  const steps = Number(arg('--steps', '20'));
  const report = await measureInt8Quality(
    { model: { path: arg('--model', 'test/fixtures/tiny-sd1') }, width: size, height: size, steps, cfgScale: 7, sampler: 'Euler' },
    QUALITY_CASES,
    { calibrationEvaluations: Number(arg('--calibration-evals', String(steps))), layers: arg('--layers', 'all') as Int8Layers },
  );
  console.log('verdict', JSON.stringify(report.verdict));
  for (const c of report.cases) {
    const minStep = Math.min(...c.stepCosines);
    console.log(
      `seed ${c.seed} "${c.prompt}": PSNR ${c.psnr.toFixed(2)} dB, max pixel diff ${c.maxPixelDiff}, final latent cosine ${c.finalLatentCosine.toFixed(5)}, per-step latent cosine min ${minStep.toFixed(5)} [${c.stepCosines.map((x) => x.toFixed(4)).join(' ')}]`,
    );
  }
  console.log(`sampling fp32 ${report.fp32Ms} ms, int8 ${report.int8Ms} ms (load ${loadavg()[0]!.toFixed(2)})`);
}
