// Per-precision benchmark: a full SD1.5 txt2img image (512x512, 20 Euler steps, CFG 7 = batch 2 per step; random
// weights at the real shapes, nothing downloaded) through the real pipeline, in fp32 and in int8, alternately in
// one process so both see the same machine load. Reports per precision: UNet time per CFG step, VAE decode, the
// whole image, and RSS; then the int8/fp32 ratios. With --peer "<command>", that command (e.g. a diffusers script
// doing the same work; bench/peers/diffusers_sd15.py is one) is timed between the rounds too and the ratios to it
// printed; a peer that prints a line `image_s=<seconds>` gives its image time without its model build and warm-up.
//
//   node --import tsx bench/precision-bench.ts [--size PX] [--steps N] [--rounds N] [--calibration-evals N]
//        [--threads N] [--cache-dir DIR] [--peer "<command>"] [--deep-cache N] [--tiny] [--json]
// --deep-cache N adds two columns, fp32 and int8 with step reuse every N evaluations (DeepCache, branch 0),
// each on a model view of its own so no column swaps graphs in and out between rounds.
//   (or: npm run bench -- --precision ...)   Full size needs ~8 GB: run it under `flock /work/locks/heavy`.
//
// The int8 model calibrates first (its first --calibration-evals UNet calls run fp32 and record ranges; default 4
// here to keep the bench short, 20 in the server). Random weights say nothing about quality, so the int8 bound is
// not enforced here: the measured calibration error is printed (docs/int8.md has the quality method).
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import type { GenerateRequest } from '../src/engine/api.ts';
import { ModelSessions, type SessionSettings } from '../src/engine/pipelines/model-sessions.ts';
import { ClipTokenizer } from '../src/engine/prompt/index.ts';
import { loadModel } from '../src/engine/weights/model.ts';
import { randomSd15 } from './random-sd15.ts';
import { gb, timeImage } from './time-image.ts';
import { flagReader } from './flag-reader.ts';

interface Args {
  size: number;
  steps: number;
  rounds: number;
  calibrationEvals: number;
  threads: number;
  cacheDir?: string;
  peer?: string;
  deepCache?: number;
  tiny: boolean;
  json: boolean;
}

function parseArgs(argv: string[]): Args {
  const out: Args = { size: 512, steps: 20, rounds: 1, calibrationEvals: 4, threads: 0, tiny: false, json: false };
  const flags = flagReader(argv);
  const { value } = flags;
  const int = (lo: number, hi: number) => flags.int(lo, hi);
  for (const a of flags) {
    if (a === '--size') out.size = int(64, 1024);
    else if (a === '--steps') out.steps = int(1, 50);
    else if (a === '--rounds') out.rounds = int(1, 10);
    else if (a === '--calibration-evals') out.calibrationEvals = int(1, 100);
    else if (a === '--threads') out.threads = int(0, 256);
    else if (a === '--cache-dir') out.cacheDir = value();
    else if (a === '--peer') out.peer = value();
    else if (a === '--deep-cache') out.deepCache = int(2, 10);
    else if (a === '--tiny') out.tiny = true;
    else if (a === '--json') out.json = true;
    else if (a === '--precision' || a === 'bench')
      continue; // passed through by engine-bench / `kiln bench`
    else throw new Error(`unknown argument ${a} (see the header of bench/precision-bench.ts)`);
  }
  return out;
}

/** A peer line `image_s=<seconds>` is its image time with its model build and warm-up left out, as in Kiln's rounds; else the command's wall time. */
function timePeer(command: string): number | undefined {
  const t0 = performance.now();
  const r = spawnSync(command, { shell: true, stdio: ['inherit', 'pipe', 'inherit'], encoding: 'utf8', maxBuffer: 1 << 20 });
  const wallS = (performance.now() - t0) / 1000;
  process.stdout.write(r.stdout ?? '');
  const reported = /^image_s=([\d.]+)$/m.exec(r.stdout ?? '')?.[1];
  return r.status === 0 ? (reported ? Number(reported) : wallS) : undefined;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1]!;
const f = (x: number, d = 2) => x.toFixed(d);

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  const cacheDir = args.cacheDir ?? mkdtempSync(join(tmpdir(), 'kiln-precision-bench-'));
  const loadBefore = loadavg();
  try {
    const model = args.tiny ? await loadModel({ path: 'test/fixtures/tiny-sd1' }, { hashCacheFile: null }) : await randomSd15();
    const tokenizers = await Promise.all(model.tokenizerDirs.map((d) => ClipTokenizer.fromDir(d)));
    const base: SessionSettings = { device: 'cpu', cacheDir, threads: args.threads, spinning: false };
    const fp32 = ModelSessions.fromModel(model, tokenizers, base);
    // Random weights: the bound is reported, not enforced (accepts any finite result). Finite numbers, so the stored
    // verdict (JSON) matches this bound again and the step-reuse view below reads it instead of recalibrating.
    const int8Settings: SessionSettings = {
      ...base,
      precision: 'int8',
      int8: { calibrationEvaluations: args.calibrationEvals, bound: { minCosine: -1, maxRelativeError: 1e30 } },
    };
    const int8 = ModelSessions.fromModel(model, tokenizers, int8Settings);
    const req: GenerateRequest = {
      model: { path: model.path },
      prompts: ['a lighthouse on a cliff at dusk'],
      negativePrompt: 'blurry',
      width: args.size,
      height: args.size,
      steps: args.steps,
      cfgScale: 7,
      sampler: 'Euler',
      seed: 1,
    };
    // Warm-up: builds and sessions (and int8 calibration + its graph), not timed as images.
    const warm0 = performance.now();
    await timeImage(fp32, { ...req, steps: 1 });
    const fp32WarmS = (performance.now() - warm0) / 1000;
    const warm1 = performance.now();
    for (let done = 0; done < args.calibrationEvals; done += 2) await timeImage(int8, { ...req, steps: 2 });
    await timeImage(int8, { ...req, steps: 1 }); // builds, checks and opens the int8 graph
    const int8WarmS = (performance.now() - warm1) / 1000;
    const verdict = int8.int8Unet().result;
    if (int8.int8Unet().state !== 'int8') throw new Error(`int8 UNet not in use: ${verdict?.reason ?? 'still calibrating'}`);

    // Step reuse: views of their own (the int8 one reads the verdict stored above), warmed up on a 2-step image.
    const columns: [string, ModelSessions, GenerateRequest][] = [
      ['fp32', fp32, req],
      ['int8', int8, req],
    ];
    const reuseViews: ModelSessions[] = [];
    if (args.deepCache) {
      const reuseReq = { ...req, deepCache: { interval: args.deepCache } };
      for (const [name, settings] of [
        ['fp32', base],
        ['int8', int8Settings],
      ] as const) {
        const view = ModelSessions.fromModel(model, tokenizers, settings);
        reuseViews.push(view);
        await timeImage(view, { ...reuseReq, steps: 2 });
        if (name === 'int8' && view.int8Unet().state !== 'int8')
          throw new Error(`the step-reuse int8 view is not running int8: ${view.int8Unet().state} ${view.int8Unet().result?.reason ?? ''}`);
        columns.push([`${name}+deepcache${args.deepCache}`, view, reuseReq]);
      }
    }

    const runs: {
      image: Record<string, number[]>;
      peer: number[];
      perStep: Record<string, number[]>;
      decode: Record<string, number[]>;
      cpu: Record<string, number[]>;
      rss: Record<string, number>;
    } = { image: {}, peer: [], perStep: {}, decode: {}, cpu: {}, rss: {} };
    for (const [name] of columns) {
      runs.image[name] = [];
      runs.perStep[name] = [];
      runs.decode[name] = [];
      runs.cpu[name] = [];
    }
    for (let r = 0; r < args.rounds; r++) {
      for (const [name, ms, columnReq] of columns) {
        const t = await timeImage(ms, columnReq);
        runs.image[name]!.push(t.totalS);
        runs.perStep[name]!.push(t.unetPerStepS);
        runs.decode[name]!.push(t.decodeS);
        runs.cpu[name]!.push(t.cpuS);
        runs.rss[name] = t.rssGB;
        if (!args.json)
          console.log(
            `  round ${r + 1} ${name}: image ${f(t.totalS, 1)} s (CPU ${f(t.cpuS, 1)} s), UNet ${f(t.unetPerStepS)} s/step, decode ${f(t.decodeS)} s (load ${f(loadavg()[0]!)})`,
          );
      }
      if (args.peer) {
        const s = timePeer(args.peer);
        if (s !== undefined) runs.peer.push(s);
        if (!args.json) console.log(`  round ${r + 1} peer: ${s === undefined ? 'failed' : `${f(s, 1)} s`}`);
      }
    }
    await fp32.release();
    await int8.release();
    for (const v of reuseViews) await v.release();
    const column = (name: string) => ({
      imageS: median(runs.image[name]!),
      imageCpuS: median(runs.cpu[name]!),
      unetPerStepS: median(runs.perStep[name]!),
      decodeS: median(runs.decode[name]!),
      rssGB: runs.rss[name],
    });
    const report = {
      case: `${args.tiny ? 'tiny-sd1' : 'SD1.5 shapes, random weights'} ${args.size}x${args.size}, ${args.steps} steps Euler, CFG batch 2`,
      threads: args.threads || 'all cores',
      loadAverage: { before: loadBefore.map((x) => Number(f(x))), after: loadavg().map((x) => Number(f(x))) },
      warmupS: { fp32: Number(f(fp32WarmS, 1)), int8IncludingCalibration: Number(f(int8WarmS, 1)) },
      calibration: verdict && { evaluations: verdict.evaluations, minCosine: verdict.minCosine, maxRelativeError: verdict.maxRelativeError },
      fp32: column('fp32'),
      int8: column('int8'),
      deepCache: Object.fromEntries(columns.slice(2).map(([name]) => [name, column(name)])),
      peakRssGB: gb(process.resourceUsage().maxRSS * 1024),
      peer: args.peer
        ? runs.peer.length
          ? { command: args.peer, imageS: median(runs.peer) }
          : { command: args.peer, failed: true }
        : 'none given (no peer installed here)',
    };
    const ratios = {
      int8VsFp32Image: report.fp32.imageS / report.int8.imageS,
      int8VsFp32UnetStep: report.fp32.unetPerStepS / report.int8.unetPerStepS,
      int8VsFp32ImageCpu: report.fp32.imageCpuS / report.int8.imageCpuS,
      ...(runs.peer.length ? { peerVsFp32: median(runs.peer) / report.fp32.imageS, peerVsInt8: median(runs.peer) / report.int8.imageS } : {}),
      ...Object.fromEntries(Object.entries(report.deepCache).map(([name, c]) => [`${name}VsFp32Image`, report.fp32.imageS / c.imageS])),
    };
    if (args.json) console.log(JSON.stringify({ ...report, ratios }));
    else {
      console.log(
        `precision bench: ${report.case}; threads ${report.threads}; load ${report.loadAverage.before.join(' ')} -> ${report.loadAverage.after.join(' ')}`,
      );
      for (const p of ['fp32', 'int8'] as const) {
        const x = report[p];
        console.log(
          `  ${p}: image ${f(x.imageS, 1)} s (process CPU ${f(x.imageCpuS, 1)} s), UNet ${f(x.unetPerStepS)} s per CFG step, VAE decode ${f(x.decodeS)} s, RSS ${x.rssGB} GB`,
        );
      }
      for (const [name, x] of Object.entries(report.deepCache)) {
        console.log(
          `  ${name}: image ${f(x.imageS, 1)} s (process CPU ${f(x.imageCpuS, 1)} s), UNet ${f(x.unetPerStepS)} s per CFG step (mean over whole and shallow), VAE decode ${f(x.decodeS)} s, speed-up over fp32 x${f(report.fp32.imageS / x.imageS)}`,
        );
      }
      console.log(
        `  int8 speed-up: image x${f(ratios.int8VsFp32Image)} (CPU time x${f(ratios.int8VsFp32ImageCpu)}), UNet step x${f(ratios.int8VsFp32UnetStep)}; peak RSS (both loaded) ${report.peakRssGB} GB`,
      );
      console.log(
        `  warm-up: fp32 ${report.warmupS.fp32} s, int8 incl. calibration ${report.warmupS.int8IncludingCalibration} s; calibration error ${JSON.stringify(report.calibration)}`,
      );
      console.log(
        `  peer: ${typeof report.peer === 'string' ? report.peer : JSON.stringify(report.peer)}${'peerVsFp32' in ratios ? ` ratio peer/fp32 ${f(ratios.peerVsFp32!)}, peer/int8 ${f(ratios.peerVsInt8!)}` : ''}`,
      );
    }
  } finally {
    if (!args.cacheDir) rmSync(cacheDir, { recursive: true, force: true });
  }
}

await main();
