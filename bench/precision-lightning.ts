// Per-precision benchmark of an SDXL-Lightning-style image: SDXL at its released shapes (random weights, nothing
// downloaded), 1024x1024, 4 Euler steps on the SGM Uniform schedule (ComfyUI's recommended setting for Lightning;
// its timesteps 999, 749.25, 499.5, 249.75 are Lightning's "trailing" 999, 749, 499, 249 up to the fraction), CFG 1
// (no negative batch: one UNet call of batch 1 per step, as SDXL-Lightning runs), through the real pipeline, in fp32
// and in int8. Reports per precision: UNet seconds per step, VAE decode, the whole image, process CPU seconds, RSS
// after the image, the sampled peak RSS during it and the process's peak RSS.
//
//   node --import tsx bench/precision-lightning.ts [--size PX] [--steps N] [--calibration-evals N] [--threads N]
//        [--cache-dir DIR] [--tiny] [--json]
//   (or: npm run bench -- --precision --sdxl-lightning ...)   Full size peaks at ~21 GiB (calibration): run it under `flock /work/locks/heavy`.
//
// SEQUENTIAL, not alternating (unlike bench/precision-bench.ts): a full SDXL fp32 UNet session is ~10 GB and the int8
// calibration graph another fp32-sized one, so each phase runs in a process of its own, one after the other, and the
// columns may see different machine load. 1. fp32: sessions opened by a 1-step 256² image, then the timed image.
// 2. int8 calibration: one 4-step generation (its UNet calls run the fp32 calibration graph; the VAE decoder
// calibrates on its decode), then the int8 UNet and VAE decoder are built, checked and opened; the verdicts are stored
// beside the graphs. 3. int8: a fresh process reads those verdicts (as a restarted server does, so its RSS holds no
// calibration leftovers), opens its sessions like fp32 and times the image; it fails if either network is not int8.
// Random weights say nothing about quality, so the bounds are not enforced: the measured calibration error is printed.
//
// --tiny runs the same path on test/fixtures/tiny-sdxl at 64x64 (seconds; the plumbing check, not the figure). Graphs
// go to --cache-dir (a temporary folder, deleted afterwards, when not given); onnxruntime's optimised copies are not
// cached, and with a temporary folder each UNet graph (~10 GB at full size) is deleted once no later phase opens it.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import type { GenerateRequest } from '../src/engine/api.ts';
import { ModelSessions, type SessionSettings } from '../src/engine/pipelines/model-sessions.ts';
import type { Int8Verdict } from '../src/engine/precision/int8-network.ts';
import { ClipTokenizer } from '../src/engine/prompt/index.ts';
import { loadModel } from '../src/engine/weights/model.ts';
import { randomSdxl } from './random-sdxl.ts';
import { gb, timeImage, type Timing } from './time-image.ts';
import { flagReader } from './flag-reader.ts';

/** One process each, in this order: fp32, then int8 calibration (+ build and check), then int8 from the stored verdict. */
type Phase = 'fp32' | 'int8-calibration' | 'int8';
const PHASES: readonly Phase[] = ['fp32', 'int8-calibration', 'int8'];

interface Args {
  size: number;
  steps: number;
  calibrationEvals: number;
  threads: number;
  cacheDir?: string;
  tiny: boolean;
  json: boolean;
  /** Internal: run one phase in this process and write its result to `result`. */
  phase?: Phase;
  result?: string;
}

function parseArgs(argv: string[]): Args {
  const out: Args = { size: 0, steps: 4, calibrationEvals: 0, threads: 0, tiny: false, json: false };
  const flags = flagReader(argv);
  const { value } = flags;
  const int = (lo: number, hi: number) => flags.int(lo, hi);
  for (const a of flags) {
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
      const p = value() as Phase;
      if (!PHASES.includes(p)) throw new Error(`--phase must be one of ${PHASES.join(', ')}, got ${p}`);
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

type VerdictFigures = Pick<Int8Verdict, 'minCosine' | 'maxRelativeError' | 'evaluations'>;

/** What one phase's process measured. */
interface PhaseResult {
  phase: Phase;
  /** The timed image (not in the calibration phase). */
  image?: Timing;
  /** Sessions ready before the timed image (a 1-step 256² image); calibration: calibration + build + check. */
  warmupS: number;
  /** Calibration: the calibration generation alone (fp32 calibration graphs, ranges recorded). */
  calibrationImageS?: number;
  /** Calibration: building, checking and opening the int8 UNet and VAE decoder. */
  buildAndCheckS?: number;
  unet?: VerdictFigures;
  vaeDecoder?: VerdictFigures;
  /** The process's peak RSS (getrusage). */
  processPeakRssGB: number;
  loadAverage: { before: number[]; after: number[] };
}

/** Accepts any finite result; finite, so the stored verdict's bound reads back equal (JSON has no Infinity). */
const ACCEPT_ANY = { minCosine: -1, maxRelativeError: Number.MAX_VALUE };
const f = (x: number, d = 2) => x.toFixed(d);
/** Seconds: two decimals below 10 s (tiny runs), one above. */
const secs = (x: number) => f(x, x < 10 ? 2 : 1);
const load = () => loadavg().map((x) => Number(f(x)));
const verdictFigures = (v: Int8Verdict | undefined): VerdictFigures | undefined =>
  v && { minCosine: v.minCosine, maxRelativeError: v.maxRelativeError, evaluations: v.evaluations };

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

/**
 * One phase in this process. fp32 and int8: sessions opened by a 1-step 256² image, then the timed image (int8 reads
 * the verdict the calibration process stored, as a restarted server does, so its RSS holds no calibration leftovers).
 * int8-calibration: the calibration image, then the int8 UNet and VAE decoder built, checked and opened.
 */
async function runPhase(args: Args, phase: Phase, cacheDir: string): Promise<PhaseResult> {
  const before = load();
  const model = args.tiny ? await loadModel({ path: 'test/fixtures/tiny-sdxl' }, { hashCacheFile: null }) : await randomSdxl();
  const tokenizers = await Promise.all(model.tokenizerDirs.map((d) => ClipTokenizer.fromDir(d)));
  const base: SessionSettings = { device: 'cpu', cacheDir, threads: args.threads, spinning: false, cacheOptimized: false };
  // Random weights: the bounds are reported, not enforced.
  const int8: SessionSettings = {
    ...base,
    precision: 'int8',
    int8: { calibrationEvaluations: args.calibrationEvals, bound: ACCEPT_ANY, vaeBound: ACCEPT_ANY },
  };
  const ms = ModelSessions.fromModel(model, tokenizers, phase === 'fp32' ? base : int8);
  const req = lightningRequest(model.path, args.size, args.steps);
  const log = (line: string) => process.stderr.write(`  [${phase}] ${line} (load ${f(loadavg()[0]!)})\n`);
  const requireInt8 = () => {
    for (const [label, net] of [
      ['UNet', ms.int8Unet()],
      ['VAE decoder', ms.int8VaeDecoder()],
    ] as const) {
      if (net.state !== 'int8') throw new Error(`int8 ${label} not in use: ${net.result?.reason ?? 'not calibrated'}`);
    }
  };
  const t0 = performance.now();
  try {
    if (phase === 'int8-calibration') {
      // Euler makes one UNet call per step; the first decode calibrates the VAE decoder.
      for (let done = 0; done < args.calibrationEvals; done += args.steps) await timeImage(ms, req);
      const calibrationImageS = (performance.now() - t0) / 1000;
      log(`calibrated in ${f(calibrationImageS, 1)} s`);
      const t1 = performance.now();
      // The next session asked for builds the int8 graph, checks it on the kept calibration calls and opens it.
      await ms.int8Unet().session();
      await ms.int8VaeDecoder().session();
      const buildAndCheckS = (performance.now() - t1) / 1000;
      requireInt8();
      log(`int8 UNet and VAE decoder built, checked and open in ${f(buildAndCheckS, 1)} s`);
      return {
        phase,
        warmupS: (performance.now() - t0) / 1000,
        calibrationImageS,
        buildAndCheckS,
        unet: verdictFigures(ms.int8Unet().result),
        vaeDecoder: verdictFigures(ms.int8VaeDecoder().result),
        processPeakRssGB: gb(process.resourceUsage().maxRSS * 1024),
        loadAverage: { before, after: load() },
      };
    }
    if (phase === 'int8') requireInt8(); // the stored verdict: no calibration in this process
    // Opens every session (text encoders, UNet, VAE decoder) on a small 1-step image, so the timed one is warm.
    await timeImage(ms, { ...req, width: Math.min(256, args.size), height: Math.min(256, args.size), steps: 1 });
    const warmupS = (performance.now() - t0) / 1000;
    log(`sessions ready in ${f(warmupS, 1)} s`);
    const image = await timeImage(ms, req);
    if (phase === 'int8') requireInt8();
    return { phase, image, warmupS, processPeakRssGB: gb(process.resourceUsage().maxRSS * 1024), loadAverage: { before, after: load() } };
  } finally {
    await ms.release();
  }
}

/** Runs one phase in a child process (its memory and peak RSS are its own) and reads its result. */
function runChild(args: Args, phase: Phase, cacheDir: string): PhaseResult {
  const resultFile = join(cacheDir, `lightning-${phase}-result.json`);
  const argv = ['--size', String(args.size), '--steps', String(args.steps), '--calibration-evals', String(args.calibrationEvals)];
  argv.push('--threads', String(args.threads), '--cache-dir', cacheDir, '--phase', phase, '--result', resultFile);
  if (args.tiny) argv.push('--tiny');
  const child = spawnSync(process.execPath, ['--import', 'tsx', import.meta.filename, ...argv], { stdio: ['ignore', 'inherit', 'inherit'] });
  if (child.status !== 0) throw new Error(`the ${phase} process failed (exit ${child.status ?? child.signal})`);
  return JSON.parse(readFileSync(resultFile, 'utf8')) as PhaseResult;
}

/** Disk, with the bench's own temporary cache: removes the UNet graphs no later phase opens (~10 GB each at full size). */
function dropUnetGraphs(cacheDir: string, which: (options: Record<string, unknown>) => boolean): void {
  for (const d of readdirSync(cacheDir)) {
    const keyFile = join(cacheDir, d, 'key.json'); // graph folders only (unet-int8-*.json are verdicts)
    if (!d.startsWith('unet-') || !existsSync(keyFile)) continue;
    const key = JSON.parse(readFileSync(keyFile, 'utf8')) as { options?: Record<string, unknown> };
    if (which(key.options ?? {})) rmSync(join(cacheDir, d), { recursive: true, force: true });
  }
}

function report(args: Args, fp32: PhaseResult, calibration: PhaseResult, int8: PhaseResult) {
  const a = fp32.image!;
  const b = int8.image!;
  return {
    case: `${args.tiny ? 'tiny-sdxl (plumbing check, not the figure)' : 'SDXL released shapes, random weights'} ${args.size}x${args.size}, ${args.steps} steps Euler, SGM Uniform, CFG 1 (batch 1 per UNet call)`,
    order: 'sequential, one process each: fp32, then int8 calibration, then int8 from the stored verdict (not alternating; the columns may see different load)',
    threads: args.threads || 'all cores',
    calibrationEvaluations: args.calibrationEvals,
    fp32,
    calibration,
    int8,
    ratios: {
      int8VsFp32Image: a.totalS / b.totalS,
      int8VsFp32UnetStep: a.unetPerStepS / b.unetPerStepS,
      int8VsFp32Decode: a.decodeS / b.decodeS,
      int8VsFp32ImageCpu: a.cpuS / b.cpuS,
    },
  };
}

function print(r: ReturnType<typeof report>): void {
  console.log(`SDXL-Lightning precision bench: ${r.case}; threads ${r.threads}`);
  console.log(`  ${r.order}`);
  for (const p of [r.fp32, r.int8]) {
    const x = p.image!;
    console.log(
      `  ${p.phase}: image ${secs(x.totalS)} s (process CPU ${secs(x.cpuS)} s), UNet ${f(x.unetPerStepS)} s per step, VAE decode ${f(x.decodeS)} s; RSS ${x.rssGB} GiB after, ${x.sampledPeakRssGB} GiB peak during the image, process peak ${p.processPeakRssGB} GiB; load ${p.loadAverage.before.join(' ')} -> ${p.loadAverage.after.join(' ')}`,
    );
  }
  console.log(
    `  int8 speed-up: image x${f(r.ratios.int8VsFp32Image)} (CPU time x${f(r.ratios.int8VsFp32ImageCpu)}), UNet step x${f(r.ratios.int8VsFp32UnetStep)}, VAE decode x${f(r.ratios.int8VsFp32Decode)}`,
  );
  const c = r.calibration;
  console.log(
    `  int8 calibration (once per model): image ${f(c.calibrationImageS ?? 0, 1)} s on ${r.calibrationEvaluations} UNet calls + 1 decode, build + check ${f(c.buildAndCheckS ?? 0, 1)} s, process peak RSS ${c.processPeakRssGB} GiB; load ${c.loadAverage.before.join(' ')} -> ${c.loadAverage.after.join(' ')}`,
  );
  console.log(`  sessions ready before the timed image: fp32 ${f(r.fp32.warmupS, 1)} s, int8 ${f(r.int8.warmupS, 1)} s`);
  console.log(`  calibration error (bound not enforced: random weights): UNet ${JSON.stringify(c.unet)}, VAE decoder ${JSON.stringify(c.vaeDecoder)}`);
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
  const own = !args.cacheDir;
  try {
    const fp32 = runChild(args, 'fp32', cacheDir);
    if (own) dropUnetGraphs(cacheDir, () => true);
    const calibration = runChild(args, 'int8-calibration', cacheDir);
    if (own) dropUnetGraphs(cacheDir, (o) => o.calibration !== undefined);
    const int8 = runChild(args, 'int8', cacheDir);
    const r = report(args, fp32, calibration, int8);
    if (args.json) console.log(JSON.stringify(r));
    else print(r);
  } finally {
    if (own) rmSync(cacheDir, { recursive: true, force: true });
  }
}

await main();
