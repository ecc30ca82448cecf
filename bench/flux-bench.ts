// Flux-schnell bench: the FLUX.1 transformer at its released shapes (19 double + 38 single blocks, hidden 3072,
// 11.9 B parameters, no guidance embedding) with seeded random weights quantised at build time, one transformer
// evaluation (= one sampling step, no CFG batch) at 512x512 (1024 image tokens + 256 T5 tokens, schnell's length).
// The fp32 weights of the whole model are never held: the graph builder asks for one Linear at a time, which is
// generated, quantised and appended to the graph's weight file. Each quantisation level runs in a process of its
// own so its peak RSS is its own. Full-size runs need the shared heavy lock:
//
//   flock /work/locks/heavy npm run bench -- --flux [--quant q8,q4] [--size 512] [--runs 1] [--threads N]
//                                                  [--accuracy 0|4] [--blocks D,S] [--weights codes|quantise]
//                                                  [--cache-dir DIR] [--json]
//
// --weights codes (default) makes random quantised codes directly; quantise generates float weights per Linear and
// runs them through the build-time quantiser (the --quantize path; minutes longer at full size).
// --blocks 1,1 builds a 2-block model at full width (smoke runs). The graph and its multi-GB weight file go to a
// temporary folder deleted at the end unless --cache-dir is given.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildFluxTransformer, FLUX_IO, FLUX1_DEV, type FluxConfig, fluxParameterShapes } from '../src/engine/nets/flux.ts';
import { getOrBuildGraph } from '../src/engine/onnx/cache.ts';
import type { AccuracyLevel, QuantizeMode } from '../src/engine/onnx/matmul-nbits.ts';
import { openSession } from '../src/engine/runtime.ts';
import type { Tensor } from '../src/engine/tensor.ts';
import { allocNBits, type NBitsWeight } from '../src/engine/onnx/matmul-nbits.ts';
import { isQuantizeMode, withQuantize } from '../src/engine/weights/quantize.ts';
import type { WeightSource } from '../src/engine/weights/types.ts';
import { timedRun } from './peak.ts';
import { parameterCount, RandomWeights } from './random-weights.ts';

/** Schnell: dev's shapes without the guidance embedding. */
export const FLUX1_SCHNELL: FluxConfig = { ...FLUX1_DEV, guidanceEmbed: false };
/** T5 tokens schnell uses (BFL CLI max_length 256). */
const SCHNELL_TEXT_TOKENS = 256;

interface Args {
  quant: QuantizeMode[];
  size: number;
  runs: number;
  threads: number;
  accuracy: AccuracyLevel;
  blocks?: [number, number];
  /** 'quantise': float weights per layer through the real quantiser; 'codes': random codes directly (fast builds). */
  weights: 'quantise' | 'codes';
  cacheDir?: string;
  json: boolean;
  /** Set in the per-level child process. */
  child?: QuantizeMode;
}

export interface FluxLevelReport {
  quant: QuantizeMode;
  accuracyLevel: AccuracyLevel;
  weights: Args['weights'];
  doubleBlocks: number;
  singleBlocks: number;
  params: number;
  /** Bytes of the graph's weight file (codes, scales, zero points, float norms and biases). */
  weightFileBytes: number;
  imageTokens: number;
  textTokens: number;
  buildS: number;
  sessionS: number;
  /** Process RSS after the session is created (weights resident, before the first run). */
  rssAfterSessionBytes: number;
  /** RSS split after the step (Linux /proc/self/status): anonymous memory vs pages mapped from files. */
  rssAnonBytes?: number;
  rssFileBytes?: number;
  /** Wall and CPU seconds of each transformer evaluation (the first includes onnxruntime's warm-up). */
  stepsWallS: number[];
  stepsCpuS: number[];
  peakRssBytes: number;
  /** FLOPs of one evaluation (2·params·tokens for the Linears plus attention). */
  gflop: number;
  loadAverage: [number, number];
}

function parseArgs(argv: string[]): Args {
  const out: Args = { quant: ['q8', 'q4'], size: 512, runs: 1, threads: 2, accuracy: 0, json: false, weights: 'codes' };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const value = () => {
      const v = a.includes('=') ? a.slice(a.indexOf('=') + 1) : argv[++i];
      if (v === undefined) throw new Error(`${a} needs a value`);
      return v;
    };
    if (a.startsWith('--quant')) {
      out.quant = value().split(',') as QuantizeMode[];
      for (const q of out.quant) if (!isQuantizeMode(q)) throw new Error(`--quant: ${q} is not q8 or q4`);
    } else if (a.startsWith('--size')) out.size = Number(value());
    else if (a.startsWith('--runs')) out.runs = Math.max(1, Math.min(10, Number(value())));
    else if (a.startsWith('--threads')) out.threads = Number(value());
    else if (a.startsWith('--accuracy')) {
      const v = Number(value());
      if (v !== 0 && v !== 4) throw new Error('--accuracy must be 0 (fp32 activations) or 4 (int8 activations)');
      out.accuracy = v;
    } else if (a.startsWith('--blocks')) {
      const [d, s] = value().split(',').map(Number);
      if (!(Number.isInteger(d) && Number.isInteger(s) && d! >= 0 && s! >= 0 && d! <= 19 && s! <= 38))
        throw new Error('--blocks D,S: 0..19 double, 0..38 single');
      out.blocks = [d!, s!];
    } else if (a.startsWith('--weights')) {
      const v = value();
      if (v !== 'quantise' && v !== 'codes') throw new Error('--weights must be quantise or codes');
      out.weights = v;
    } else if (a.startsWith('--cache-dir')) out.cacheDir = value();
    else if (a === '--json') out.json = true;
    else if (a.startsWith('--child')) {
      const v = value();
      if (!isQuantizeMode(v)) throw new Error(`--child ${v}`);
      out.child = v;
    } else if (a === 'bench' || a === '--flux') continue;
    else throw new Error(`unknown argument ${a} (see the header of bench/flux-bench.ts)`);
  }
  if (!(out.size >= 64 && out.size % 16 === 0 && out.size <= 2048)) throw new Error(`--size must be a multiple of 16 in 64..2048, got ${out.size}`);
  return out;
}

function filled(shape: number[], seed: number, scale = 1): Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  const data = new Float32Array(n);
  let s = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    data[i] = ((s >>> 0) / 2 ** 32 - 0.5) * scale;
  }
  return { shape, data };
}

/** FLOPs of one evaluation: every Linear once per token of its stream, plus QK^T and PV of each joint attention. */
export function fluxGflop(c: FluxConfig, imageTokens: number, textTokens: number): number {
  const h = c.hidden;
  const L = imageTokens + textTokens;
  const perStream = (tokens: number) => 2 * tokens * (h * 3 * h + h * h + 2 * h * c.mlpHidden);
  const attention = 4 * L * L * h;
  const double = perStream(imageTokens) + perStream(textTokens) + attention;
  const single = 2 * L * (h * (3 * h + c.mlpHidden) + (h + c.mlpHidden) * h) + attention;
  const io = 2 * imageTokens * c.inChannels * h * 2 + 2 * textTokens * c.contextInDim * h;
  return (c.doubleBlocks * double + c.singleBlocks * single + io) / 1e9;
}

/**
 * Random block-quantised Linear weights made directly as codes (no float values, no quantiser: the speed of a
 * MatMulNBits does not depend on the values), with scales giving each weight a std of about 1/sqrt(fan_in); other
 * tensors (biases, norms) are the float random weights. Builds the 12 B-parameter graph in the time it takes to
 * write it; --weights quantise goes through the real build-time quantiser instead.
 */
class RandomCodes implements WeightSource {
  constructor(
    readonly inner: RandomWeights,
    readonly bits: 4 | 8,
    readonly accuracyLevel: AccuracyLevel,
  ) {}
  names = () => this.inner.names();
  has = (n: string) => this.inner.has(n);
  shape = (n: string) => this.inner.shape(n);
  dtype = (n: string) => this.inner.dtype(n);
  get = (n: string) => this.inner.get(n);
  nbits(name: string): NBitsWeight | undefined {
    const shape = this.inner.shape(name);
    if (!name.endsWith('.weight') || shape.length !== 2 || shape[1]! < 32) return undefined;
    const [n, k] = shape as [number, number];
    const w = allocNBits(n, k, this.bits, 32);
    const words = new Uint32Array(w.packed.buffer, 0, w.packed.byteLength >> 2);
    let s = (k * 2654435761) ^ n ^ 0x9e3779b9 || 1;
    for (let i = 0; i < words.length; i++) {
      s ^= s << 13;
      s ^= s >>> 17;
      s ^= s << 5;
      words[i] = s >>> 0;
    }
    // Codes uniform over [0, 2^bits) around the default zero point: std (2^bits / sqrt(12)) * scale = 1/sqrt(k).
    w.scales.fill(Math.sqrt(12 / k) / 2 ** this.bits);
    w.accuracyLevel = this.accuracyLevel;
    return w;
  }
}

async function runLevel(args: Args, quant: QuantizeMode): Promise<FluxLevelReport> {
  const config: FluxConfig = args.blocks ? { ...FLUX1_SCHNELL, doubleBlocks: args.blocks[0], singleBlocks: args.blocks[1] } : FLUX1_SCHNELL;
  const shapes = fluxParameterShapes(config);
  const random = new RandomWeights('flux-schnell', shapes);
  const weights =
    args.weights === 'codes'
      ? new RandomCodes(random, quant === 'q8' ? 8 : 4, args.accuracy)
      : withQuantize(random, { mode: quant, accuracyLevel: args.accuracy });
  const cacheDir = args.cacheDir ?? mkdtempSync(join(tmpdir(), 'kiln-flux-bench-'));
  const loadStart = loadavg()[0]!;
  try {
    const t0 = performance.now();
    const key = {
      network: 'flux-transformer',
      weightsIdentity: `random-schnell-${config.doubleBlocks}-${config.singleBlocks}`,
      precision: 'fp32' as const,
      options: { quant, accuracy: args.accuracy, textTokens: SCHNELL_TEXT_TOKENS },
    };
    const { modelPath } = getOrBuildGraph(cacheDir, key, (b) => buildFluxTransformer(b, weights, config, { textTokens: SCHNELL_TEXT_TOKENS }));
    const buildS = (performance.now() - t0) / 1000;
    const weightFileBytes = statSync(join(modelPath, '..', 'weights.bin')).size;
    const t1 = performance.now();
    const { session } = await openSession(modelPath, { device: 'cpu', intraOpThreads: args.threads, spinning: false, cacheOptimized: false });
    const sessionS = (performance.now() - t1) / 1000;
    const rssAfterSessionBytes = process.memoryUsage.rss();
    const side = args.size / 16;
    const imageTokens = side * side;
    const ids = new Float32Array(imageTokens * 3);
    for (let r = 0; r < side; r++) for (let c = 0; c < side; c++) ids.set([0, r, c], (r * side + c) * 3);
    const feeds = {
      [FLUX_IO.img]: filled([1, imageTokens, config.inChannels], 1),
      [FLUX_IO.imgIds]: { shape: [1, imageTokens, 3], data: ids },
      [FLUX_IO.txt]: filled([1, SCHNELL_TEXT_TOKENS, config.contextInDim], 2, 0.2),
      [FLUX_IO.txtIds]: { shape: [1, SCHNELL_TEXT_TOKENS, 3], data: new Float32Array(SCHNELL_TEXT_TOKENS * 3) },
      [FLUX_IO.timesteps]: { shape: [1], data: Float32Array.of(1) },
      [FLUX_IO.y]: filled([1, config.vecInDim], 3),
    };
    const stepsWallS: number[] = [];
    const stepsCpuS: number[] = [];
    for (let i = 0; i < args.runs; i++) {
      const r = await timedRun(session, feeds);
      const out = r.outputs[FLUX_IO.output]!;
      if (!out.data.every(Number.isFinite)) throw new Error('the transformer output has non-finite values');
      stepsWallS.push(r.wallS);
      stepsCpuS.push(r.cpuS);
    }
    const status = procStatus();
    await session.release();
    return {
      rssAnonBytes: status.RssAnon,
      rssFileBytes: status.RssFile,
      quant,
      accuracyLevel: args.accuracy,
      weights: args.weights,
      doubleBlocks: config.doubleBlocks,
      singleBlocks: config.singleBlocks,
      params: parameterCount(shapes),
      weightFileBytes,
      imageTokens,
      textTokens: SCHNELL_TEXT_TOKENS,
      buildS,
      sessionS,
      rssAfterSessionBytes,
      stepsWallS,
      stepsCpuS,
      peakRssBytes: process.resourceUsage().maxRSS * 1024,
      gflop: fluxGflop(config, imageTokens, SCHNELL_TEXT_TOKENS),
      loadAverage: [loadStart, loadavg()[0]!],
    };
  } finally {
    if (!args.cacheDir) rmSync(cacheDir, { recursive: true, force: true });
  }
}

/** RssAnon / RssFile of this process in bytes (Linux; empty elsewhere). */
function procStatus(): { RssAnon?: number; RssFile?: number } {
  try {
    const text = readFileSync('/proc/self/status', 'utf8');
    const kb = (key: string) => {
      const m = new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(text);
      return m ? Number(m[1]) * 1024 : undefined;
    };
    return { RssAnon: kb('RssAnon'), RssFile: kb('RssFile') };
  } catch {
    return {};
  }
}

const GiB = 1024 ** 3;

function describe(r: FluxLevelReport): string {
  const best = Math.min(...r.stepsWallS);
  const lines = [
    `[flux-schnell ${r.quant}${r.accuracyLevel ? ` accuracy_level ${r.accuracyLevel}` : ''}, ${r.weights}] ${r.doubleBlocks}+${r.singleBlocks} blocks, ${(r.params / 1e9).toFixed(2)} B params, ${r.imageTokens}+${r.textTokens} tokens`,
    `  weight file           ${(r.weightFileBytes / GiB).toFixed(2)} GiB`,
    `  build (gen+quantise)  ${r.buildS.toFixed(0)} s; session ${r.sessionS.toFixed(0)} s; RSS after session ${(r.rssAfterSessionBytes / GiB).toFixed(2)} GiB`,
    `  one step (wall)       ${r.stepsWallS.map((s) => s.toFixed(1)).join(', ')} s (CPU ${r.stepsCpuS.map((s) => s.toFixed(1)).join(', ')} s), ${r.gflop.toFixed(0)} GFLOP -> ${(r.gflop / best).toFixed(1)} GFLOP/s`,
    `  RSS after the step    ${((r.rssAnonBytes ?? 0) / GiB).toFixed(2)} GiB anonymous + ${((r.rssFileBytes ?? 0) / GiB).toFixed(2)} GiB mapped from files`,
    `  peak RSS              ${(r.peakRssBytes / GiB).toFixed(2)} GiB${r.peakRssBytes < 24 * 1e9 ? ' (fits in 24 GB)' : ' (does NOT fit in 24 GB)'}`,
    `  4 steps (transformer) ${(4 * best).toFixed(0)} s; load average ${r.loadAverage.map((x) => x.toFixed(1)).join(' -> ')}`,
  ];
  return lines.join('\n');
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  if (args.child) {
    process.stdout.write(`${JSON.stringify(await runLevel(args, args.child))}\n`);
    return;
  }
  const reports: FluxLevelReport[] = [];
  for (const quant of args.quant) {
    const rest = process.argv.slice(2).filter((a) => a !== '--flux' && a !== 'bench' && a !== '--json');
    const child = spawnSync(process.execPath, ['--import', 'tsx', import.meta.filename, ...rest, '--child', quant], {
      stdio: ['ignore', 'pipe', 'inherit'],
      encoding: 'utf8',
      maxBuffer: 1 << 20,
    });
    if (child.status !== 0) throw new Error(`flux bench ${quant} failed (exit ${child.status ?? child.signal})`);
    const r = JSON.parse(child.stdout.trim().split('\n').pop()!) as FluxLevelReport;
    reports.push(r);
    if (!args.json) process.stdout.write(`${describe(r)}\n`);
  }
  process.stdout.write(`${JSON.stringify(reports, null, args.json ? undefined : 1)}\n`);
}

if (import.meta.filename === process.argv[1]) await main();
