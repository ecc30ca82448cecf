// Hires-fix benchmark: SD1.5 at real size (seeded random weights, nothing downloaded) through the real pipeline,
// 512x512 -> 1024x1024: first pass, latent upscale ("Latent", A1111's default), second pass, VAE decode (tiled
// above 768x768, pipelines/vae-tiles.ts). Reports the process's peak RSS (it must stay within 8 GB) and the time
// of each phase. Run alone: peak RSS is the whole process's, so nothing else may run in it.
//
//   node --import tsx bench/hires-bench.ts [--steps N] [--hr-steps N] [--threads N] [--upscaler NAME] [--cache-dir DIR] [--json]
//   (or: npm run bench -- --hires ...)
//
// Steps default to 2 + 2 (CFG, so 4 UNet evaluations at 64x64 and 4 at 128x128): enough to see the memory
// peak, which does not grow with steps. Graphs are cached in --cache-dir (a temporary folder when not given).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { GenerateRequest } from '../src/engine/api.ts';
import { phaseTimer } from './phase-timer.ts';
import { runPipeline } from '../src/engine/pipelines/generate.ts';
import { ModelSessions } from '../src/engine/pipelines/model-sessions.ts';
import { ClipTokenizer } from '../src/engine/prompt/index.ts';
import { randomSd15 } from './random-sd15.ts';

const LIMIT_BYTES = 8 * 1024 ** 3;

interface Args {
  steps: number;
  hrSteps: number;
  threads: number;
  upscaler: string;
  cacheDir?: string;
  json: boolean;
}

function parseArgs(argv: string[]): Args {
  const out: Args = { steps: 2, hrSteps: 2, threads: 0, upscaler: 'Latent', json: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const value = () => {
      const v = a.includes('=') ? a.slice(a.indexOf('=') + 1) : argv[++i];
      if (v === undefined) throw new Error(`${a} needs a value`);
      return v;
    };
    const count = (name: string, v: string) => {
      const n = Number(v);
      if (!Number.isInteger(n) || n < 1 || n > 50) throw new Error(`${name} must be an integer from 1 to 50, got ${v}`);
      return n;
    };
    if (a.startsWith('--steps')) out.steps = count('--steps', value());
    else if (a.startsWith('--hr-steps')) out.hrSteps = count('--hr-steps', value());
    else if (a.startsWith('--threads')) out.threads = Number(value());
    else if (a.startsWith('--upscaler')) out.upscaler = value();
    else if (a.startsWith('--cache-dir')) out.cacheDir = value();
    else if (a === '--json') out.json = true;
    else if (a === '--hires' || a === 'bench')
      continue; // passed through by engine-bench / `kiln bench`
    else throw new Error(`unknown argument ${a} (see the header of bench/hires-bench.ts)`);
  }
  return out;
}

const gb = (bytes: number) => (bytes / 1024 ** 3).toFixed(2);

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  const cacheDir = args.cacheDir ?? mkdtempSync(join(tmpdir(), 'kiln-hires-bench-'));
  try {
    const model = await randomSd15();
    const tokenizers = await Promise.all(model.tokenizerDirs.map((d) => ClipTokenizer.fromDir(d)));
    const ms = ModelSessions.fromModel(model, tokenizers, { device: 'cpu', cacheDir, threads: args.threads, spinning: false });
    const req: GenerateRequest = {
      model: { path: model.path },
      prompts: ['a lighthouse on a cliff at dusk'],
      negativePrompt: 'blurry',
      width: 512,
      height: 512,
      steps: args.steps,
      cfgScale: 7,
      sampler: 'Euler',
      seed: 1,
      hires: { scale: 2, upscaler: args.upscaler, steps: args.hrSteps, denoisingStrength: 0.5 },
    };
    const { onProgress, finish } = phaseTimer();
    const t0 = performance.now();
    const result = await runPipeline({ base: ms }, req, { onProgress });
    const totalS = (performance.now() - t0) / 1000;
    const phases = finish();
    await ms.release();
    const img = result.images[0]!.image;
    const peak = process.resourceUsage().maxRSS * 1024;
    const report = {
      case: 'sd15 hires 512->1024',
      image: `${img.width}x${img.height}`,
      steps: `${args.steps} + ${args.hrSteps} (${req.sampler}, CFG batch 2)`,
      upscaler: args.upscaler,
      peakRssGB: Number(gb(peak)),
      withinLimit: peak <= LIMIT_BYTES,
      totalS: Number(totalS.toFixed(1)),
      graphBuildAndSessionsS: Number((ms.buildMs / 1000).toFixed(1)),
      phasesS: Object.fromEntries(Object.entries(phases).map(([k, v]) => [k, Number(v.toFixed(1))])),
    };
    if (args.json) console.log(JSON.stringify(report));
    else {
      console.log(`hires: SD1.5 shapes (random weights), ${report.image} from 512x512, ${report.steps}, upscaler ${report.upscaler}`);
      console.log(`  peak RSS ${report.peakRssGB} GB (${report.withinLimit ? 'within' : 'OVER'} the 8 GB limit)`);
      console.log(`  total ${report.totalS} s, of which graph builds + sessions ${report.graphBuildAndSessionsS} s`);
      console.log(`  by phase (s, session builds included where they happen): ${JSON.stringify(report.phasesS)}`);
    }
    if (!report.withinLimit) process.exitCode = 1;
  } finally {
    if (!args.cacheDir) rmSync(cacheDir, { recursive: true, force: true });
  }
}

await main();
