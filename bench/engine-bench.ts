// Engine benchmark: builds real-size SD models with seeded random weights (nothing downloaded, no checkpoint
// written; only the built graphs go to a cache folder), then times graph build + session creation, text
// encoding, one UNet evaluation with CFG batch 2, and a VAE decode, and reports the UNet's and the VAE's GFLOP/s
// against the machine's fp32 peak measured through onnxruntime in the same run.
//
//   npm run bench [-- --only sd15|sdxl] [--skip-sdxl] [--runs N] [--threads N] [--attention contrib|onnx]
//                 [--spin] [--cache-dir DIR] [--no-optimized-cache] [--size PX] [--parts text,unet,vae]
//                 [--vae-upsample phases|resize] [--lora-sessions] [--transparent] [--json] [--help]
//
// The `lora` part (bench/lora-switch.ts) times LoRA first use, switching and switching back (to the first sampling
// step), the graph cache's growth per combination, and a no-LoRA step with and without branches. SDXL times only
// the LoRA file and feed work unless --lora-sessions (its two fp32 UNet sessions need ~21 GB).
//   npm run bench -- --hires [--steps N] [--hr-steps N] [--upscaler NAME]   (SD1.5 hires 512 -> 1024: bench/hires-bench.ts)
//   npm run bench -- --flux [--quant q8,q4] [--size 512] [--blocks D,S]   (Flux-schnell, quantised: bench/flux-bench.ts)
//   npm run bench -- --transparent-job [--steps N] [--size PX] [--tta on|off]   (a whole 1024² transparent SDXL job in
//   its own process, patch + UNet + VAE + transparent decoder: peak RSS and phases, bench/transparent-job-bench.ts)
//   npm run bench -- --precision [--steps N] [--rounds N] [--peer "<cmd>"]  (fp32 vs int8 20-step 512² images: bench/precision-bench.ts)
//   npm run bench -- --precision --sdxl-lightning [--tiny]  (fp32 then int8 SDXL 1024² 4-step CFG 1 images: bench/precision-lightning.ts)
//
// Graphs and onnxruntime's optimised models are cached in --cache-dir (a temporary folder, deleted afterwards,
// when not given): run twice with the same folder to time a second start. Each build line says where the graph
// and the optimised model came from.
//
// Rates are reported against wall time and against CPU time (FLOPs / (process CPU seconds / threads)). The
// sessions do not spin between ops unless --spin, so CPU time is work done: on a machine shared with other
// processes the wall rates drop with the load, while the CPU-time ratio to peak stays meaningful.
//
// --transparent (or --only transparent) adds LayerDiffuse's transparent decoder at the released shapes: one
// whole decode at --size (default 1024) with TTA off (1 pass) and on (8 passes + median). Its time only: the
// networks run one after another, each released before the next, with no patch and no sampling, so the peak RSS
// printed is not a transparent job's; --transparent-job measures that.
//
// SD1.5 runs by default. SDXL (UNet 2.6B params, 10 GB of fp32 weights, 1024x1024) runs only with --only sdxl
// or --sdxl; it also reports whether the fp32 pipeline fits in 24 GB.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { availableParallelism, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildClipTextEncoder, clipTextGraphOptions } from '../src/engine/nets/clip-text.ts';
import { buildUnet, parseUnetConfig, unetFlops, unetGraphOptions, unetParameterShapes, type UnetAttentionKind } from '../src/engine/nets/unet.ts';
import { buildVaeDecoder, vaeDecoderFlops, vaeDecoderGraphOptions, vaeParameterShapes, type UpsampleKind } from '../src/engine/nets/vae.ts';
import { getOrBuildGraph } from '../src/engine/onnx/cache.ts';
import type { GraphBuilder } from '../src/engine/onnx/graph.ts';
import { openSession, type Feed, type OptimizedModelUse, type Session } from '../src/engine/runtime.ts';
import type { Tensor } from '../src/engine/tensor.ts';
import { measurePeak, setDefaultThreads, threadCount, timedRun, type PeakResult } from './peak.ts';
import { clipTextParameterShapes, parameterCount, RandomWeights } from './random-weights.ts';
import { SD15, SDXL, type ModelSpec } from './specs.ts';
import { benchLoraSwitch, type LoraSwitchReport } from './lora-switch.ts';
import { benchTransparentDecoder, type TransparentReport } from './transparent-bench.ts';

interface Args {
  models: ModelSpec[];
  runs: number;
  threads: number;
  attention: UnetAttentionKind;
  cacheDir?: string;
  jsonOnly: boolean;
  spinning: boolean;
  /** Cache onnxruntime's optimised models in the cache folder (default; --no-optimized-cache turns it off). */
  cacheOptimized: boolean;
  /** How the VAE decoder upsamples (see VaeDecoderOptions.upsample). */
  vaeUpsample: UpsampleKind;
  /** Which networks to build and time: text, unet, vae (default all). */
  parts: Set<string>;
  /** Overrides each model's image size (smoke runs). */
  size?: number;
  /** LoRA part: run the sessions for SDXL too (SD1.5 always does). */
  loraSessions: boolean;
  /** Also time LayerDiffuse's transparent decoder. */
  transparent: boolean;
}

const PARTS = ['text', 'unet', 'vae', 'lora'];

const USAGE = `npm run bench [-- --only sd15|sdxl] [--skip-sdxl] [--runs N] [--threads N] [--attention contrib|onnx]
              [--spin] [--cache-dir DIR] [--no-optimized-cache] [--size PX] [--parts text,unet,vae]
              [--vae-upsample phases|resize] [--lora-sessions] [--transparent] [--json]
npm run bench -- --hires [--steps N] [--hr-steps N] [--threads N] [--upscaler NAME] [--json]
npm run bench -- --flux [--quant q8,q4] [--size 512] [--runs N] [--threads N] [--accuracy 0|4] [--blocks D,S] [--json]
npm run bench -- --transparent-job [--steps N] [--size PX] [--tta on|off] [--threads N] [--cache-dir DIR] [--plumbing] [--json]
npm run bench -- --precision [--size PX] [--steps N] [--rounds N] [--peer "<command>"] [--json]   (fp32 vs int8 images)
npm run bench -- --precision --sdxl-lightning [--size PX] [--steps N] [--calibration-evals N] [--tiny] [--json]   (SDXL 4-step CFG 1, fp32 then int8)
(details in the header of bench/engine-bench.ts)`;

function parseArgs(argv: string[]): Args {
  const out: Args = {
    models: [],
    runs: 2,
    threads: physicalCores(),
    attention: 'contrib',
    jsonOnly: false,
    spinning: false,
    cacheOptimized: true,
    parts: new Set(PARTS),
    vaeUpsample: 'phases',
    loraSessions: false,
    transparent: false,
  };
  let only: string | undefined;
  let sdxl = false;
  let skipSdxl = false;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const value = () => {
      const v = a.includes('=') ? a.slice(a.indexOf('=') + 1) : argv[++i];
      if (v === undefined) throw new Error(`${a} needs a value`);
      return v;
    };
    if (a.startsWith('--only')) only = value();
    else if (a === '--sdxl') sdxl = true;
    else if (a === '--skip-sdxl') skipSdxl = true;
    else if (a === '--transparent') out.transparent = true;
    else if (a.startsWith('--runs')) out.runs = Math.max(1, Number(value()));
    else if (a.startsWith('--threads')) out.threads = Number(value());
    else if (a.startsWith('--attention')) {
      const v = value();
      if (v !== 'contrib' && v !== 'onnx') throw new Error(`--attention must be contrib or onnx, got ${v}`);
      out.attention = v;
    } else if (a.startsWith('--cache-dir')) out.cacheDir = value();
    else if (a === '--json') out.jsonOnly = true;
    else if (a === '--spin') out.spinning = true;
    else if (a === '--no-optimized-cache') out.cacheOptimized = false;
    else if (a === '--lora-sessions') out.loraSessions = true;
    else if (a.startsWith('--vae-upsample')) {
      const v = value();
      if (v !== 'phases' && v !== 'resize') throw new Error(`--vae-upsample must be phases or resize, got ${v}`);
      out.vaeUpsample = v;
    } else if (a.startsWith('--parts')) {
      out.parts = new Set(value().split(','));
      for (const p of out.parts) if (!PARTS.includes(p)) throw new Error(`--parts: unknown part ${p} (${PARTS.join(', ')})`);
    } else if (a.startsWith('--size')) out.size = Number(value());
    else if (a === 'bench')
      continue; // `kiln bench` passes its own name through
    else throw new Error(`unknown argument ${a} (see the header of bench/engine-bench.ts)`);
  }
  const all = { sd15: SD15, sdxl: SDXL } as Record<string, ModelSpec>;
  if (only) {
    for (const name of only.split(',')) {
      if (name === 'transparent') {
        out.transparent = true;
        continue;
      }
      const m = all[name.replace(/[^a-z0-9]/g, '')];
      if (!m) throw new Error(`--only: unknown model ${name} (sd15, sdxl)`);
      out.models.push(m);
    }
  } else {
    out.models.push(SD15);
    if (sdxl && !skipSdxl) out.models.push(SDXL);
  }
  if (out.size !== undefined) {
    if (!(out.size >= 64 && out.size % 64 === 0)) throw new Error(`--size must be a multiple of 64, got ${out.size}`);
    out.models = out.models.map((m) => ({ ...m, size: out.size! }));
  }
  return out;
}

/** onnxruntime's default pool size: one thread per physical core (Linux: unique core ids; else logical CPUs). */
function physicalCores(): number {
  try {
    const cores = new Set<string>();
    let phys = '0';
    for (const line of readFileSync('/proc/cpuinfo', 'utf8').split('\n')) {
      const [k, v] = line.split(':').map((x) => x.trim());
      if (k === 'physical id') phys = v!;
      if (k === 'core id') cores.add(`${phys}:${v}`);
    }
    if (cores.size > 0) return cores.size;
  } catch {
    // not Linux
  }
  return availableParallelism();
}

function seconds(t0: number): number {
  return (performance.now() - t0) / 1000;
}

function randomTensor(shape: number[], seed: number): Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  const data = new Float32Array(n);
  let s = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    data[i] = (s >>> 0) / 2 ** 32 - 0.5;
  }
  return { shape, data };
}

function maxRssBytes(): number {
  return process.resourceUsage().maxRSS * 1024;
}

async function buildAndOpen(cacheDir: string, network: string, options: Record<string, unknown>, args: Args, build: (b: GraphBuilder) => void) {
  const t0 = performance.now();
  const { modelPath, built } = getOrBuildGraph(cacheDir, { network, weightsIdentity: 'random-seed-1', precision: 'fp32', options }, build);
  const buildS = seconds(t0);
  const t1 = performance.now();
  const { session, optimized, rejected } = await openSession(modelPath, {
    device: 'cpu',
    intraOpThreads: args.threads,
    spinning: args.spinning,
    cacheOptimized: args.cacheOptimized,
  });
  if (rejected) process.stderr.write(`${network}: cached optimised model refused (${rejected}); rebuilt\n`);
  return { session, buildS, built, optimized, sessionS: seconds(t1) };
}

interface RunTimes {
  /** The first run (cold: arena growth, first-touch of weights). */
  firstS: number;
  /** Best wall time of all runs, and best CPU time (process CPU seconds, all threads). */
  bestS: number;
  bestCpuS: number;
  /** Sum of the first output of the last run: equal across runs and starts when the computation is the same. */
  checksum: number;
}

async function timeRuns(session: Session, feeds: Record<string, Feed>, runs: number): Promise<RunTimes> {
  const times: RunTimes = { firstS: 0, bestS: Infinity, bestCpuS: Infinity, checksum: 0 };
  for (let i = 0; i < runs; i++) {
    const { outputs, wallS, cpuS } = await timedRun(session, feeds);
    if (i === 0) times.firstS = wallS;
    times.bestS = Math.min(times.bestS, wallS);
    times.bestCpuS = Math.min(times.bestCpuS, cpuS);
    for (const [name, t] of Object.entries(outputs)) {
      if (!t.data.every(Number.isFinite)) throw new Error(`output ${name} has non-finite values: the benchmark graph is broken`);
    }
    const first = Object.values(outputs)[0]!;
    times.checksum = first.data.reduce((a, x) => a + x, 0);
  }
  return times;
}

interface ModelReport {
  model: string;
  imageSize: number;
  batch: number;
  attention: UnetAttentionKind;
  unetParams: number;
  /** cached: the graph came from the cache; optimized: whether onnxruntime's optimised model was loaded from or saved to it. */
  build: Record<string, { buildS: number; cached: boolean; optimized: OptimizedModelUse; sessionS: number }>;
  textEncodeS?: { first: number; best: number };
  unet?: NetRates;
  /** One image's decode, rated like the UNet on the FLOPs its graph computes. */
  vaeDecode?: NetRates;
  /** The decode's FLOPs as diffusers computes it (Resize then a 3x3 conv at full resolution). */
  vaeDecodeLiteralGflop?: number;
  lora?: LoraSwitchReport;
  maxRssGB: number;
}

interface NetRates {
  firstS: number;
  bestS: number;
  bestCpuS: number;
  gflop: number;
  /** FLOPs / best wall time, and its ratio to the wall-clock peak. */
  wallGflops: number;
  wallRatio: number;
  /** FLOPs / (best CPU time / threads), and its ratio to the CPU-time peak. */
  cpuGflops: number;
  cpuRatio: number;
  /** Sum of the output of the last run (compare across runs and cached starts). */
  checksum: number;
}

function rates(run: RunTimes, flop: number, args: Args, peak: PeakResult): NetRates {
  const wallGflops = flop / run.bestS / 1e9;
  const cpuGflops = flop / (run.bestCpuS / threadCount(args.threads)) / 1e9;
  return {
    firstS: run.firstS,
    bestS: run.bestS,
    bestCpuS: run.bestCpuS,
    gflop: flop / 1e9,
    wallGflops,
    wallRatio: wallGflops / peak.peak.wallGflops,
    cpuGflops,
    cpuRatio: cpuGflops / peak.peak.cpuGflops,
    checksum: run.checksum,
  };
}

async function benchModel(spec: ModelSpec, args: Args, cacheDir: string, peak: PeakResult): Promise<ModelReport> {
  const batch = 2; // classifier-free guidance: conditional + unconditional
  const latent = spec.size / 8;
  const tokens = 77;
  const unetShapes = unetParameterShapes(spec.unet);
  const cfg = parseUnetConfig(spec.unet);
  const build: ModelReport['build'] = {};

  const report: ModelReport = {
    model: spec.name,
    imageSize: spec.size,
    batch,
    attention: args.attention,
    unetParams: parameterCount(unetShapes),
    build,
    maxRssGB: 0,
  };
  const sessions: Session[] = [];

  if (args.parts.has('text')) {
    const encoders: Session[] = [];
    for (const [i, te] of spec.textEncoders.entries()) {
      const weights = new RandomWeights(`text_encoder_${i}`, clipTextParameterShapes(te.config), 10 + i);
      const r = await buildAndOpen(cacheDir, `${spec.name}-text-encoder-${i}`, clipTextGraphOptions(te.opts), args, (b) =>
        buildClipTextEncoder(b, weights, te.config, te.opts),
      );
      build[`text_encoder_${i}`] = { buildS: r.buildS, cached: !r.built, optimized: r.optimized, sessionS: r.sessionS };
      encoders.push(r.session);
    }
    sessions.push(...encoders);
    const ids = new BigInt64Array(batch * tokens);
    for (let i = 0; i < ids.length; i++) ids[i] = BigInt((i * 7919) % 49406);
    for (let bi = 0; bi < batch; bi++) ids[bi * tokens + tokens - 1] = 49407n; // EOS: the pooled token
    let textFirst = 0;
    let textBest = Infinity;
    for (let r = 0; r < Math.max(args.runs, 2); r++) {
      let dt = 0;
      for (const s of encoders) dt += (await timedRun(s, { input_ids: { int64: ids, shape: [batch, tokens] } })).wallS;
      if (r === 0) textFirst = dt;
      textBest = Math.min(textBest, dt);
    }
    report.textEncodeS = { first: textFirst, best: textBest };
  }

  if (args.parts.has('unet')) {
    const unetWeights = new RandomWeights('unet', unetShapes, 1);
    const u = await buildAndOpen(cacheDir, `${spec.name}-unet`, unetGraphOptions({ attention: args.attention }), args, (b) =>
      buildUnet(b, unetWeights, cfg, { attention: args.attention }),
    );
    build.unet = { buildS: u.buildS, cached: !u.built, optimized: u.optimized, sessionS: u.sessionS };
    sessions.push(u.session);
    const feeds: Record<string, Feed> = {
      sample: randomTensor([batch, cfg.inChannels, latent, latent], 7),
      timestep: { shape: [batch], data: Float32Array.from([500, 500]) },
      encoder_hidden_states: randomTensor([batch, tokens, cfg.crossAttentionDim], 8),
    };
    if (cfg.textTime) {
      feeds.text_embeds = randomTensor([batch, cfg.textTime.projectionInputDim - 6 * cfg.textTime.timeEmbedDim], 9);
      feeds.time_ids = {
        shape: [batch, 6],
        data: Float32Array.from([spec.size, spec.size, 0, 0, spec.size, spec.size, spec.size, spec.size, 0, 0, spec.size, spec.size]),
      };
    }
    const unetRun = await timeRuns(u.session, feeds, args.runs);
    report.unet = rates(unetRun, unetFlops(cfg, { batch, height: latent, width: latent, tokens }), args, peak);
  }

  if (args.parts.has('vae')) {
    // VAE decoder (one image, as the pipeline decodes).
    const vaeWeights = new RandomWeights('vae', vaeParameterShapes(spec.vae), 20);
    const vaeOpts = { upsample: args.vaeUpsample };
    const v = await buildAndOpen(cacheDir, `${spec.name}-vae-decoder`, vaeDecoderGraphOptions(vaeOpts), args, (b) =>
      buildVaeDecoder(b, vaeWeights, spec.vae, vaeOpts),
    );
    build.vae_decoder = { buildS: v.buildS, cached: !v.built, optimized: v.optimized, sessionS: v.sessionS };
    sessions.push(v.session);
    const vaeRun = await timeRuns(v.session, { latent: randomTensor([1, spec.vae.latent_channels, latent, latent], 11) }, args.runs);
    const dims = { batch: 1, height: latent, width: latent };
    report.vaeDecode = rates(vaeRun, vaeDecoderFlops(spec.vae, dims, vaeOpts), args, peak);
    report.vaeDecodeLiteralGflop = vaeDecoderFlops(spec.vae, dims, { upsample: 'resize' }) / 1e9;
  }
  for (const s of sessions) await s.release();
  if (args.parts.has('lora')) {
    const feedsOnly = spec.name === 'sdxl' && !args.loraSessions;
    report.lora = await benchLoraSwitch(spec, { ...args, feedsOnly }, cacheDir, (s) => process.stderr.write(`${s}\n`));
  }
  report.maxRssGB = maxRssBytes() / 2 ** 30;
  return report;
}

const OPTIMIZED_LABEL: Record<OptimizedModelUse, string> = {
  loaded: 'optimised model from cache',
  saved: 'optimised, saved to cache',
  off: 'optimised, not cached',
};

function loraRows(l: LoraSwitchReport): [string, string][] {
  const f = (x: number | undefined, d = 2) => (x === undefined ? '-' : x.toFixed(d));
  const mb = (b: number) => `${(b / 1e6).toFixed(1)} MB`;
  const line = (t: LoraSwitchReport['switchToOther']) =>
    `${f(t.toFirstStepS)} s to the first step (feeds ${f(t.feedsS)} s), step ${f(t.firstStepS)} s, cache +${mb(t.cacheGrowthBytes)}`;
  const rows: [string, string][] = [
    [`LoRA (${l.loraFileMB.toFixed(0)} MB file, ${l.unetSites} UNet sites)`, ''],
    ['  first use', `${line(l.firstUse)}; branch graphs built ${f(l.firstUse.buildS, 1)} s + sessions ${f(l.firstUse.sessionS, 1)} s`],
    ['  switch to another LoRA', line(l.switchToOther)],
    ['  switch back', line(l.switchBack)],
  ];
  if (l.noLoraStepS) {
    const { plain, branchRank0 } = l.noLoraStepS;
    rows.push(['  no-LoRA step', `plain graph ${f(plain)} s, branch graph at rank 0 ${f(branchRank0)} s (${f(100 * (branchRank0 / plain - 1), 1)}%)`]);
  }
  return rows;
}

function table(rows: [string, string][]): string {
  const w = Math.max(...rows.map((r) => r[0].length));
  return rows.map(([k, v]) => `${k.padEnd(w)}  ${v}`).join('\n');
}

async function main(): Promise<void> {
  if (process.argv.includes('--help') || process.argv.includes('-h')) {
    process.stdout.write(`${USAGE}\n`);
    return;
  }
  if (process.argv.includes('--precision')) {
    // fp32 vs int8 full images in a process of their own (bench/precision-bench.ts has the options); with
    // --sdxl-lightning an SDXL 1024² 4-step CFG 1 image instead (bench/precision-lightning.ts).
    const lightning = process.argv.includes('--sdxl-lightning');
    const rest = process.argv.slice(2).filter((a) => a !== '--precision' && a !== '--sdxl-lightning' && a !== 'bench');
    const file = lightning ? 'precision-lightning.ts' : 'precision-bench.ts';
    const child = spawnSync(process.execPath, ['--import', 'tsx', join(import.meta.dirname, file), ...rest], { stdio: 'inherit' });
    process.exitCode = child.status ?? 1;
    return;
  }
  if (process.argv.includes('--hires')) {
    // A process of its own, so its peak RSS is the hires run's alone (bench/hires-bench.ts has the options).
    const rest = process.argv.slice(2).filter((a) => a !== '--hires' && a !== 'bench');
    const child = spawnSync(process.execPath, ['--import', 'tsx', join(import.meta.dirname, 'hires-bench.ts'), ...rest], { stdio: 'inherit' });
    process.exitCode = child.status ?? 1;
    return;
  }
  if (process.argv.includes('--flux')) {
    // Flux-schnell at released shapes with quantised random weights, one process per level (bench/flux-bench.ts).
    const rest = process.argv.slice(2).filter((a) => a !== '--flux' && a !== 'bench');
    const child = spawnSync(process.execPath, ['--import', 'tsx', join(import.meta.dirname, 'flux-bench.ts'), ...rest], { stdio: 'inherit' });
    process.exitCode = child.status ?? 1;
    return;
  }
  if (process.argv.includes('--transparent-job')) {
    // A process of its own too: the figure is the whole job's peak RSS (bench/transparent-job-bench.ts).
    const rest = process.argv.slice(2).filter((a) => a !== '--transparent-job' && a !== 'bench');
    const child = spawnSync(process.execPath, ['--import', 'tsx', join(import.meta.dirname, 'transparent-job-bench.ts'), ...rest], { stdio: 'inherit' });
    process.exitCode = child.status ?? 1;
    return;
  }
  const args = parseArgs(process.argv.slice(2));
  const cacheDir = args.cacheDir ?? mkdtempSync(join(tmpdir(), 'kiln-bench-'));
  const log = (s: string) => {
    if (!args.jsonOnly) process.stdout.write(`${s}\n`);
  };
  try {
    setDefaultThreads(physicalCores());
    const loadBefore = loadavg()[0]!;
    log(
      `kiln engine bench: ${[...args.models.map((m) => m.name), ...(args.transparent ? ['transparent decoder'] : [])].join(', ')}, random weights, fp32 CPU, ${args.threads} threads, cache ${cacheDir}`,
    );
    log(`load average before: ${loadBefore.toFixed(2)} (other processes on these cores lower the wall-clock rates)`);
    const peak = await measurePeak(args.threads, args.spinning);
    const r1 = (x: number) => x.toFixed(1);
    log(
      `fp32 peak via onnxruntime (wall / CPU-time GFLOP/s): conv3x3 ${r1(peak.conv.wallGflops)} / ${r1(peak.conv.cpuGflops)}, matmul ${r1(peak.matmul.wallGflops)} / ${r1(peak.matmul.cpuGflops)}`,
    );
    const reports: ModelReport[] = [];
    for (const spec of args.models) {
      log(`\n[${spec.name}] building and running (UNet ${spec.size}x${spec.size}, batch 2)...`);
      const r = await benchModel(spec, args, cacheDir, peak);
      reports.push(r);
      const f = (x: number, d = 2) => x.toFixed(d);
      const rows: [string, string][] = Object.entries(r.build).map(([k, b]) => [
        `${k} build + session`,
        `${f(b.buildS, 1)} s (graph ${b.cached ? 'cached' : 'built'}) + ${f(b.sessionS, 1)} s session (${OPTIMIZED_LABEL[b.optimized]})`,
      ]);
      const rated = (label: string, n: NetRates): [string, string][] => [
        [label, `${f(n.bestS)} s (first ${f(n.firstS)} s), ${f(n.gflop, 0)} GFLOP, output sum ${n.checksum.toPrecision(8)}`],
        [`  achieved (wall)`, `${f(n.wallGflops, 1)} GFLOP/s = ${f(100 * n.wallRatio, 1)}% of peak ${f(peak.peak.wallGflops, 1)}`],
        [`  achieved (CPU time)`, `${f(n.cpuGflops, 1)} GFLOP/s = ${f(100 * n.cpuRatio, 1)}% of peak ${f(peak.peak.cpuGflops, 1)} (${f(n.bestCpuS)} CPU s)`],
      ];
      if (r.textEncodeS) rows.push(['text encode (batch 2)', `${f(r.textEncodeS.best, 3)} s (first ${f(r.textEncodeS.first, 3)} s)`]);
      if (r.unet) rows.push(...rated(`UNet eval ${r.imageSize}px batch 2`, r.unet));
      if (r.vaeDecode) rows.push(...rated(`VAE decode ${r.imageSize}px (${args.vaeUpsample} upsampling)`, r.vaeDecode));
      if (r.vaeDecode && r.vaeDecodeLiteralGflop) {
        rows.push(['  as diffusers counts it', `${f(r.vaeDecodeLiteralGflop, 0)} GFLOP, ${f(r.vaeDecodeLiteralGflop / r.vaeDecode.bestS, 1)} GFLOP/s (wall)`]);
      }
      if (r.lora) rows.push(...loraRows(r.lora));
      rows.push([
        'peak RSS (process)',
        `${f(r.maxRssGB)} GiB${spec.name === 'sdxl' ? (r.maxRssGB < 24 ? ' (fits in 24 GB)' : ' (does NOT fit in 24 GB)') : ' (target < 10 GiB)'}`,
      ]);
      log(table(rows));
    }
    let transparent: TransparentReport | undefined;
    if (args.transparent) {
      const size = args.size ?? 1024;
      log(`\n[layerdiffuse] transparent decoder (UNet1024, released shapes, random weights) at ${size}x${size}...`);
      transparent = await benchTransparentDecoder(size, {
        cacheDir,
        threads: args.threads,
        spinning: args.spinning,
        cacheOptimized: args.cacheOptimized,
        runs: args.runs,
      });
      const t = transparent;
      log(
        table([
          ['params / one pass', `${(t.params / 1e6).toFixed(1)} M / ${t.passGflop.toFixed(0)} GFLOP`],
          ['build + session', `${t.buildS.toFixed(1)} s (graph ${t.cached ? 'cached' : 'built'}) + ${t.sessionS.toFixed(1)} s`],
          ['decode, tta off (1 pass)', `${t.ttaOffS.toFixed(2)} s (${t.passGflops.toFixed(1)} GFLOP/s)`],
          ['decode, tta on (8 passes)', `${t.ttaOnS.toFixed(2)} s`],
          ['peak RSS (process)', `${t.maxRssGB.toFixed(2)} GiB (this bench so far, not a job's: --transparent-job measures that)`],
        ]),
      );
    }
    const result = { peak, threads: args.threads, spinning: args.spinning, loadAverage: { before: loadBefore, after: loadavg()[0]! }, reports, transparent };
    log(`load average after: ${result.loadAverage.after.toFixed(2)}`);
    log('\nJSON:');
    process.stdout.write(`${JSON.stringify(result, null, args.jsonOnly ? undefined : 1)}\n`);
  } finally {
    if (!args.cacheDir) rmSync(cacheDir, { recursive: true, force: true });
  }
}

await main();
