// Per-precision benchmark of an SDXL-Lightning-style image: SDXL at its released shapes (random weights, nothing
// downloaded), 1024x1024, 4 Euler steps on the SGM Uniform schedule (ComfyUI's recommended setting for Lightning;
// its timesteps 999, 749.25, 499.5, 249.75 are Lightning's "trailing" 999, 749, 499, 249 up to the fraction), CFG 1
// (no negative batch: one UNet call of batch 1 per step, as SDXL-Lightning runs), through the real pipeline, in fp32
// and in int8. Reports per precision: UNet seconds per step, VAE decode, the whole image, process CPU seconds, RSS
// after the image, the sampled peak RSS during it and the process's peak RSS.
//
//   node --import tsx bench/precision-lightning.ts [--size PX] [--steps N] [--calibration-evals N] [--threads N]
//        [--cache-dir DIR] [--tiny] [--json]
//   (or: npm run bench -- --precision --sdxl-lightning ...)   Full size needs ~16 GB: run it under `flock /work/locks/heavy`.
//
// SEQUENTIAL, not alternating (unlike bench/precision-bench.ts): a full SDXL fp32 UNet session is ~10 GB and the int8
// calibration graph another fp32-sized one, so each precision runs in a process of its own, one after the other
// (fp32 first, then int8), and the two columns may see different machine load. The int8 process calibrates on one
// 4-step generation (its UNet calls run the fp32 calibration graph; the VAE decoder calibrates on its decode), then
// builds, checks and opens the int8 UNet and VAE decoder, then times the image; it fails if either is not int8.
// Random weights say nothing about quality, so the bounds are not enforced: the measured calibration error is printed.
//
// --tiny runs the same path on test/fixtures/tiny-sdxl at 64x64 (seconds; the plumbing check, not the figure). Graphs
// go to --cache-dir (a temporary folder, deleted afterwards, when not given); onnxruntime's optimised copies are not
// cached, and with a temporary folder the fp32 UNet graph (~10 GB at full size) is deleted before the int8 process.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import type { GenerateRequest } from '../src/engine/api.ts';
import { ModelSessions, type SessionSettings } from '../src/engine/pipelines/model-sessions.ts';
import type { Int8Verdict } from '../src/engine/precision/int8-network.ts';
import { ClipTokenizer } from '../src/engine/prompt/index.ts';
import { loadModel } from '../src/engine/weights/model.ts';
import { randomSdxl } from './random-sdxl.ts';
import { gb, timeImage, type Timing } from './time-image.ts';

type Precision = 'fp32' | 'int8';

interface Args {
  size: number;
  steps: number;
  calibrationEvals: number;
  threads: number;
  cacheDir?: string;
  tiny: boolean;
  json: boolean;
  /** Internal: run one precision in this process and write its result to `result`. */
  phase?: Precision;
  result?: string;
}

function parseArgs(argv: string[]): Args {
  const out: Args = { size: 0, steps: 4, calibrationEvals: 0, threads: 0, tiny: false, json: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const value = () => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${a} needs a value`);
      return v;
    };
    const int = (lo: number, hi: number) => {
      const v = value();
      const n = Number(v);
      if (!Number.isInteger(n) || n < lo || n > hi) throw new Error(`${a} must be an integer from ${lo} to ${hi}, got ${v}`);
      return n;
    };
    if (a === '--size') {
      out.size = int(64, 1024);
      if (out.size % 64 !== 0) throw new Error(`--size must be a multiple of 64, got ${out.size}`);
    } else if (a === '--steps') out.steps = int(1, 8);
    else if (a === '--calibration-evals') out.calibrationEvals = int(1, 20);
    else if (a === '--threads') out.threads = int(0, 256);
    else if (a === '--cache-dir') out.cacheDir = value();
    else if (a === '--tiny') out.tiny = true;
    else if (a === '--json') out.json = true;
    else if (a === '--phase') {
      const p = value();
      if (p !== 'fp32' && p !== 'int8') throw new Error(`--phase must be fp32 or int8, got ${p}`);
      out.phase = p;
    } else if (a === '--result') out.result = value();
    else if (a === '--precision' || a === '--sdxl-lightning' || a === 'bench')
      continue; // passed through by engine-bench / `kiln bench`
    else throw new Error(`unknown argument ${a} (see the header of bench/precision-lightning.ts)`);
  }
  out.size ||= out.tiny ? 64 : 1024;
  // One generation's UNet calls calibrate: the same schedule and size as the timed image.
  out.calibrationEvals ||= out.steps;
  return out;
}

/** What one precision's process measured. */
interface PhaseResult {
  precision: Precision;
  image: Timing;
  /** Model and sessions ready before the timed image: fp32 a small 1-step warm-up, int8 calibration + build + check. */
  warmupS: number;
  /** int8: the calibration generation alone (fp32 calibration graphs, ranges recorded). */
  calibrationImageS?: number;
  /** int8: building, checking and opening the int8 UNet and VAE decoder. */
  buildAndCheckS?: number;
  unet?: Pick<Int8Verdict, 'minCosine' | 'maxRelativeError' | 'evaluations'>;
  vaeDecoder?: Pick<Int8Verdict, 'minCosine' | 'maxRelativeError' | 'evaluations'>;
  /** The process's peak RSS (getrusage): for int8 it includes the calibration graph. */
  processPeakRssGB: number;
  loadAverage: { before: number[]; after: number[] };
}

const ACCEPT_ANY = { minCosine: 0, maxRelativeError: Number.POSITIVE_INFINITY };
const f = (x: number, d = 2) => x.toFixed(d);
/** Seconds: two decimals below 10 s (tiny runs), one above. */
const secs = (x: number) => f(x, x < 10 ? 2 : 1);
const load = () => loadavg().map((x) => Number(f(x)));
const verdictFigures = (v: Int8Verdict | undefined) => v && { minCosine: v.minCosine, maxRelativeError: v.maxRelativeError, evaluations: v.evaluations };

function lightningRequest(modelPath: string, size: number, steps: number): GenerateRequest {
  return {
    model: { path: modelPath },
    prompts: ['a lighthouse on a cliff at dusk'],
    width: size,
    height: size,
    steps,
    cfgScale: 1,
    sampler: 'Euler',
    schedule: 'SGM Uniform',
    seed: 1,
  };
}

/** One precision in this process: sessions ready (int8: calibrated, built and checked), then one timed image. */
async function runPhase(args: Args, precision: Precision, cacheDir: string): Promise<PhaseResult> {
  const before = load();
  const model = args.tiny ? await loadModel({ path: 'test/fixtures/tiny-sdxl' }, { hashCacheFile: null }) : await randomSdxl();
  const tokenizers = await Promise.all(model.tokenizerDirs.map((d) => ClipTokenizer.fromDir(d)));
  const base: SessionSettings = { device: 'cpu', cacheDir, threads: args.threads, spinning: false, cacheOptimized: false };
  const req = lightningRequest(model.path, args.size, args.steps);
  const log = (line: string) => process.stderr.write(`  [${precision}] ${line} (load ${f(loadavg()[0]!)})\n`);
  const t0 = performance.now();
  if (precision === 'fp32') {
    const ms = ModelSessions.fromModel(model, tokenizers, base);
    // Opens every session (text encoders, UNet, VAE decoder) on a small 1-step image, so the timed one is warm.
    await timeImage(ms, { ...req, width: Math.min(256, args.size), height: Math.min(256, args.size), steps: 1 });
    const warmupS = (performance.now() - t0) / 1000;
    log(`sessions ready in ${f(warmupS, 1)} s`);
    const image = await timeImage(ms, req);
    await ms.release();
    return { precision, image, warmupS, processPeakRssGB: gb(process.resourceUsage().maxRSS * 1024), loadAverage: { before, after: load() } };
  }
  // Random weights: the bounds are reported, not enforced.
  const ms = ModelSessions.fromModel(model, tokenizers, {
    ...base,
    precision: 'int8',
    int8: { calibrationEvaluations: args.calibrationEvals, bound: ACCEPT_ANY, vaeBound: ACCEPT_ANY },
  });
  // Calibration: Euler makes one UNet call per step; the first decode calibrates the VAE decoder.
  for (let done = 0; done < args.calibrationEvals; done += args.steps) await timeImage(ms, req);
  const calibrationImageS = (performance.now() - t0) / 1000;
  log(`calibrated in ${f(calibrationImageS, 1)} s`);
  const t1 = performance.now();
  // The next session asked for builds the int8 graph, checks it on the kept calibration calls and opens it.
  await ms.int8Unet().session();
  await ms.int8VaeDecoder().session();
  const buildAndCheckS = (performance.now() - t1) / 1000;
  for (const [label, net] of [
    ['UNet', ms.int8Unet()],
    ['VAE decoder', ms.int8VaeDecoder()],
  ] as const) {
    if (net.state !== 'int8') throw new Error(`int8 ${label} not in use: ${net.result?.reason ?? 'still calibrating'}`);
  }
  log(`int8 UNet and VAE decoder built, checked and open in ${f(buildAndCheckS, 1)} s`);
  const warmupS = (performance.now() - t0) / 1000;
  const image = await timeImage(ms, req);
  const result: PhaseResult = {
    precision,
    image,
    warmupS,
    calibrationImageS,
    buildAndCheckS,
    unet: verdictFigures(ms.int8Unet().result),
    vaeDecoder: verdictFigures(ms.int8VaeDecoder().result),
    processPeakRssGB: gb(process.resourceUsage().maxRSS * 1024),
    loadAverage: { before, after: load() },
  };
  await ms.release();
  return result;
}

/** Runs one precision in a child process (its memory and peak RSS are its own) and reads its result. */
function runChild(args: Args, precision: Precision, cacheDir: string): PhaseResult {
  const resultFile = join(cacheDir, `lightning-${precision}-result.json`);
  const argv = ['--size', String(args.size), '--steps', String(args.steps), '--calibration-evals', String(args.calibrationEvals)];
  argv.push('--threads', String(args.threads), '--cache-dir', cacheDir, '--phase', precision, '--result', resultFile);
  if (args.tiny) argv.push('--tiny');
  const child = spawnSync(process.execPath, ['--import', 'tsx', import.meta.filename, ...argv], { stdio: ['ignore', 'inherit', 'inherit'] });
  if (child.status !== 0) throw new Error(`the ${precision} process failed (exit ${child.status ?? child.signal})`);
  return JSON.parse(readFileSync(resultFile, 'utf8')) as PhaseResult;
}

function report(args: Args, fp32: PhaseResult, int8: PhaseResult) {
  return {
    case: `${args.tiny ? 'tiny-sdxl (plumbing check, not the figure)' : 'SDXL released shapes, random weights'} ${args.size}x${args.size}, ${args.steps} steps Euler, SGM Uniform, CFG 1 (batch 1 per UNet call)`,
    order: 'sequential: fp32 process first, then the int8 process (not alternating; the columns may see different load)',
    threads: args.threads || 'all cores',
    calibrationEvaluations: args.calibrationEvals,
    fp32,
    int8,
    ratios: {
      int8VsFp32Image: fp32.image.totalS / int8.image.totalS,
      int8VsFp32UnetStep: fp32.image.unetPerStepS / int8.image.unetPerStepS,
      int8VsFp32Decode: fp32.image.decodeS / int8.image.decodeS,
      int8VsFp32ImageCpu: fp32.image.cpuS / int8.image.cpuS,
    },
  };
}

function print(r: ReturnType<typeof report>): void {
  console.log(`SDXL-Lightning precision bench: ${r.case}; threads ${r.threads}`);
  console.log(`  ${r.order}`);
  for (const p of [r.fp32, r.int8]) {
    const x = p.image;
    console.log(
      `  ${p.precision}: image ${secs(x.totalS)} s (process CPU ${secs(x.cpuS)} s), UNet ${f(x.unetPerStepS)} s per step, VAE decode ${f(x.decodeS)} s; RSS ${x.rssGB} GB after, ${x.sampledPeakRssGB} GB peak during the image, process peak ${p.processPeakRssGB} GB; load ${p.loadAverage.before.join(' ')} -> ${p.loadAverage.after.join(' ')}`,
    );
  }
  console.log(
    `  int8 speed-up: image x${f(r.ratios.int8VsFp32Image)} (CPU time x${f(r.ratios.int8VsFp32ImageCpu)}), UNet step x${f(r.ratios.int8VsFp32UnetStep)}, VAE decode x${f(r.ratios.int8VsFp32Decode)}`,
  );
  console.log(
    `  warm-up: fp32 ${f(r.fp32.warmupS, 1)} s; int8 ${f(r.int8.warmupS, 1)} s (calibration image ${f(r.int8.calibrationImageS ?? 0, 1)} s on ${r.calibrationEvaluations} UNet calls + 1 decode, int8 build + check ${f(r.int8.buildAndCheckS ?? 0, 1)} s)`,
  );
  console.log(
    `  calibration error (bound not enforced: random weights): UNet ${JSON.stringify(r.int8.unet)}, VAE decoder ${JSON.stringify(r.int8.vaeDecoder)}`,
  );
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  if (args.phase) {
    if (!args.cacheDir || !args.result) throw new Error('--phase needs --cache-dir and --result');
    const result = await runPhase(args, args.phase, args.cacheDir);
    writeFileSync(args.result, JSON.stringify(result));
    return;
  }
  const cacheDir = args.cacheDir ?? mkdtempSync(join(tmpdir(), 'kiln-precision-lightning-'));
  try {
    const fp32 = runChild(args, 'fp32', cacheDir);
    // Disk: each fp32-size UNet graph is ~10 GB at full size; the int8 process needs the calibration graph, not this one.
    if (!args.cacheDir) for (const d of readdirSync(cacheDir)) if (d.startsWith('unet-')) rmSync(join(cacheDir, d), { recursive: true, force: true });
    const int8 = runChild(args, 'int8', cacheDir);
    const r = report(args, fp32, int8);
    if (args.json) console.log(JSON.stringify(r));
    else print(r);
  } finally {
    if (!args.cacheDir) rmSync(cacheDir, { recursive: true, force: true });
  }
}

await main();
