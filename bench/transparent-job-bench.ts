// A whole LayerDiffuse transparent SDXL job in one process, the way the engine runs it (ops/generate.ts): SDXL at
// its released shapes with seeded random weights (UNet 2.6 B, both text encoders, VAE), the attention patch
// `layer_xl_transparent_attn` at its released shapes (rank 256 on every attn1/attn2 q/k/v/out, frozen-patcher keys,
// F16 like the released file, random values) applied through the adapter machinery, sampling with CFG, the full
// SDXL VAE decode, then the transparent decoder (UNet1024, released shapes, random F16 file) with TTA on (8 passes +
// median) unless --tta off. Reports the process's peak RSS (the figure issue 12 asks for: it must fit in 24 GB),
// where each phase left it, and each phase's time. Run it alone: peak RSS is the whole process's.
//
//   node --import tsx bench/transparent-job-bench.ts [--size PX] [--steps N] [--tta on|off] [--threads N]
//                                                    [--cache-dir DIR] [--plumbing] [--json]
//   (or: npm run bench -- --transparent-job ...)
//
// --size defaults to 1024 (SDXL's native size; smaller sizes check the plumbing). --steps defaults to 2 (Euler,
// one UNet evaluation per step at CFG batch 2); the memory peak does not grow with steps. --plumbing runs the same job on a narrow
// SDXL (channels 64/128/256, 2-layer text encoders; patch, VAE and decoder as released) to check the path cheaply. The random patch and decoder files and the
// built graphs go to --cache-dir (a temporary folder, deleted afterwards, when not given); at 1024 the cache
// holds ~10 GB of UNet graph plus ~10 GB of onnxruntime's optimised copy (the server caches it too).
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, renameSync, rmSync, writeSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import type { GenerateRequest, ProgressEvent, TransparentSettings } from '../src/engine/api.ts';
import { RELEASED_TRANSPARENT_DECODER, transparentDecoderFlops, transparentDecoderParameterShapes } from '../src/engine/nets/transparent-decoder.ts';
import { unetParameterShapes } from '../src/engine/nets/unet.ts';
import { runPipeline } from '../src/engine/pipelines/generate.ts';
import { ModelSessions } from '../src/engine/pipelines/model-sessions.ts';
import { transparentPatch, validateTransparent } from '../src/engine/pipelines/transparent.ts';
import { ClipTokenizer } from '../src/engine/prompt/index.ts';
import type { Session } from '../src/engine/runtime.ts';
import { f32ToF16Bits } from '../src/engine/weights/float.ts';
import { diffusersToLdmUnetPath } from '../src/engine/weights/lora/key-map.ts';
import { parameterCount, RandomWeights } from './random-weights.ts';
import { randomSdxl } from './random-sdxl.ts';
import { SDXL, type ModelSpec } from './specs.ts';

const LIMIT_BYTES = 24 * 1024 ** 3;
/** The released patch's rank (reference-notes §1.2). */
const PATCH_RANK = 256;

interface Args {
  size: number;
  steps: number;
  tta: boolean;
  threads: number;
  cacheDir?: string;
  json: boolean;
  /** A narrow SDXL (same topology, fewer channels and layers) to check the plumbing cheaply: not the figure. */
  plumbing: boolean;
}

function parseArgs(argv: string[]): Args {
  const out: Args = { size: 1024, steps: 2, tta: true, threads: 0, json: false, plumbing: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const value = () => {
      const v = a.includes('=') ? a.slice(a.indexOf('=') + 1) : argv[++i];
      if (v === undefined) throw new Error(`${a} needs a value`);
      return v;
    };
    if (a.startsWith('--size')) {
      const v = Number(value());
      if (!(Number.isInteger(v) && v >= 64 && v <= 2048 && v % 64 === 0)) throw new Error(`--size must be a multiple of 64 from 64 to 2048, got ${v}`);
      out.size = v;
    } else if (a.startsWith('--steps')) {
      const v = Number(value());
      if (!(Number.isInteger(v) && v >= 1 && v <= 50)) throw new Error(`--steps must be an integer from 1 to 50, got ${v}`);
      out.steps = v;
    } else if (a.startsWith('--tta')) {
      const v = value();
      if (v !== 'on' && v !== 'off') throw new Error(`--tta must be on or off, got ${v}`);
      out.tta = v === 'on';
    } else if (a.startsWith('--threads')) out.threads = Number(value());
    else if (a.startsWith('--cache-dir')) out.cacheDir = value();
    else if (a === '--json') out.json = true;
    else if (a === '--plumbing') out.plumbing = true;
    else if (a === '--transparent-job' || a === 'bench')
      continue; // passed through by engine-bench / `kiln bench`
    else throw new Error(`unknown argument ${a} (see the header of bench/transparent-job-bench.ts)`);
  }
  return out;
}

/**
 * Writes a safetensors file one tensor at a time (each made by `make` just before it is written), so the bench's
 * own RSS never holds a whole file. F16 like the released LayerDiffuse files.
 */
function writeF16Streamed(file: string, shapes: Map<string, number[]>, make: (name: string, shape: number[]) => Float32Array): number {
  const names = [...shapes.keys()].sort();
  const header: Record<string, unknown> = {};
  let offset = 0;
  for (const n of names) {
    const bytes = shapes.get(n)!.reduce((a, d) => a * d, 1) * 2;
    header[n] = { dtype: 'F16', shape: shapes.get(n), data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  const json = JSON.stringify(header);
  const jsonBytes = new TextEncoder().encode(json + ' '.repeat((8 - (new TextEncoder().encode(json).byteLength % 8)) % 8));
  const len = new Uint8Array(8);
  new DataView(len.buffer).setBigUint64(0, BigInt(jsonBytes.byteLength), true);
  const tmp = `${file}.tmp-${process.pid}`;
  const fd = openSync(tmp, 'w');
  try {
    writeSync(fd, len);
    writeSync(fd, jsonBytes);
    for (const n of names) {
      const values = make(n, shapes.get(n)!);
      const half = new Uint16Array(values.length);
      for (let i = 0; i < values.length; i++) half[i] = f32ToF16Bits(values[i]!);
      writeSync(fd, new Uint8Array(half.buffer));
    }
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, file);
  return 8 + jsonBytes.byteLength + offset;
}

function uniform(n: number, seed: number, amplitude: number): Float32Array {
  const a = new Float32Array(n);
  let s = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    a[i] = (s / 2 ** 32 - 0.5) * amplitude;
  }
  return a;
}

/** --plumbing: SDXL's topology and conditioning widths with narrow blocks and 2-layer text encoders. */
function plumbingSpec(): ModelSpec {
  return {
    ...SDXL,
    unet: { ...SDXL.unet, block_out_channels: [64, 128, 256], attention_head_dim: [1, 2, 4], transformer_layers_per_block: [1, 1, 2] },
    textEncoders: SDXL.textEncoders.map((te) => ({ ...te, config: { ...te.config, num_hidden_layers: 2 } })),
  };
}

/** The UNet's attention q/k/v/out in diffusers names -> `diffusion_model.<SGM path>` (the released patch's module keys). */
function patchShapes(spec: ModelSpec): Map<string, number[]> {
  const unet = spec.unet as { layers_per_block: number; up_block_types: string[] };
  const upHasAttention = (i: number) => /CrossAttn/.test(unet.up_block_types[i] ?? '');
  const shapes = new Map<string, number[]>();
  for (const [name, shape] of unetParameterShapes(spec.unet)) {
    const m = /^(.*\.attn[12]\.(to_q|to_k|to_v|to_out\.0))\.weight$/.exec(name);
    if (!m) continue;
    const ldm = diffusersToLdmUnetPath(m[1]!, unet.layers_per_block, upHasAttention);
    if (!ldm) throw new Error(`no SGM path for ${m[1]}`);
    const [out, inn] = shape as [number, number];
    shapes.set(`diffusion_model.${ldm}.weight::lora::0`, [out, PATCH_RANK]); // up
    shapes.set(`diffusion_model.${ldm}.weight::lora::1`, [PATCH_RANK, inn]); // down
  }
  return shapes;
}

const gib = (bytes: number) => Number((bytes / 1024 ** 3).toFixed(2));
const peakRss = () => process.resourceUsage().maxRSS * 1024;

/** A named moment: elapsed seconds, the process's resident set then, and its peak so far (monotonic). */
interface Mark {
  at: string;
  s: number;
  rssGB: number;
  peakGB: number;
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  const cacheDir = args.cacheDir ?? mkdtempSync(join(tmpdir(), 'kiln-transparent-job-'));
  const loadBefore = loadavg();
  const t0 = performance.now();
  const marks: Mark[] = [];
  const mark = (at: string) => {
    const m = { at, s: (performance.now() - t0) / 1000, rssGB: gib(process.memoryUsage.rss()), peakGB: gib(peakRss()) };
    marks.push(m);
    // Live on stderr: a long run shows where it is.
    process.stderr.write(`[${m.s.toFixed(1)} s, RSS ${m.rssGB} GiB, peak ${m.peakGB} GiB] ${at}\n`);
  };
  try {
    // The LayerDiffuse files, written once into the cache folder (streamed; reused by a later run with --cache-dir).
    const spec = args.plumbing ? { ...plumbingSpec(), name: 'sdxl-plumbing' } : SDXL;
    const inputs = join(cacheDir, `bench-layerdiffuse-${spec.name}`);
    mkdirSync(inputs, { recursive: true });
    const patchFile = join(inputs, 'layer_xl_transparent_attn-random.safetensors');
    const decoderFile = join(inputs, 'vae_transparent_decoder-random.safetensors');
    const pShapes = patchShapes(spec);
    if (!existsSync(patchFile)) {
      let seed = 100;
      // up x down moves each weight by ~1e-3 of its scale: the job stays finite, the shapes are the released ones.
      writeF16Streamed(patchFile, pShapes, (name, shape) => uniform(shape[0]! * shape[1]!, seed++, name.endsWith('::lora::0') ? 0.01 : 0.1));
    }
    const dShapes = transparentDecoderParameterShapes(RELEASED_TRANSPARENT_DECODER);
    if (!existsSync(decoderFile)) {
      const random = new RandomWeights('transparent decoder', dShapes, 30);
      writeF16Streamed(decoderFile, dShapes, (name) => random.get(name).data);
    }
    mark('files ready');

    const model = await randomSdxl(spec);
    const tokenizers = await Promise.all(model.tokenizerDirs.map((d) => ClipTokenizer.fromDir(d)));
    mark('model ready');
    const ms = ModelSessions.fromModel(model, tokenizers, { device: 'cpu', cacheDir, threads: args.threads, spinning: false });
    const transparent: TransparentSettings = { decoder: decoderFile, patch: patchFile, family: 'sdxl', tta: args.tta };
    const req: GenerateRequest = {
      model: { path: model.path },
      prompts: ['a glass bottle, transparent background'],
      negativePrompt: 'blurry',
      width: args.size,
      height: args.size,
      steps: args.steps,
      cfgScale: 5,
      sampler: 'Euler',
      seed: 1,
      transparent,
    };
    // Exactly what ops/generate.ts does with a transparent request.
    validateTransparent(ms, req);
    const view = ms.withAdapters(transparentPatch(req.transparent, cacheDir));
    mark('patch applied (an adapter view; its factors are read when the UNet session is made)');

    // Times each network: time to its session (graph build or cache + session creation) and its runs. The session
    // is wrapped, not changed: the UNet's is already a proxy that adds the patch's branch factors to each run.
    const nets: Record<string, { readyS: number; runS: number; runs: number }> = {};
    const wrapped = new Map<Session, Session>();
    const timed = (label: string, get: () => Promise<Session>) => async () => {
      if (!nets[label]) mark(`${label} requested`);
      const t = performance.now();
      const s = await get();
      if (!nets[label]) {
        nets[label] = { readyS: (performance.now() - t) / 1000, runS: 0, runs: 0 };
        mark(`${label} session ready`);
      }
      let w = wrapped.get(s);
      if (!w) {
        const stats = nets[label]!;
        const run = async (...a: Parameters<Session['run']>) => {
          if (label === 'vae-decoder') mark('vae-decoder run starts (transparent decoder session ready)');
          const r0 = performance.now();
          const out = await s.run(...a);
          stats.runS += (performance.now() - r0) / 1000;
          stats.runs++;
          if (label === 'vae-decoder') mark('vae-decoder run done');
          return out;
        };
        w = new Proxy(s, {
          get(target, prop) {
            if (prop === 'run') return run;
            const v = Reflect.get(target, prop, target);
            return typeof v === 'function' ? v.bind(target) : v;
          },
        });
        wrapped.set(s, w);
      }
      return w;
    };
    const unet = view.unet.bind(view);
    const vaeDecoder = view.vaeDecoder.bind(view);
    const textEncoder = view.textEncoder.bind(view);
    view.unet = (tiling) => timed('unet', () => unet(tiling))();
    view.vaeDecoder = (tiling) => timed('vae-decoder', () => vaeDecoder(tiling))();
    view.textEncoder = (index, opts) => timed(`text-encoder-${index}`, () => textEncoder(index, opts))();

    // Sampling events come after each evaluation; decoding's first event comes before the VAE.
    let lastPhase = '';
    let passEvents = 0;
    const onProgress = (e: ProgressEvent) => {
      if (e.phase !== lastPhase) mark(`${e.phase} ${e.phase === 'sampling' ? 'first evaluation done' : 'starts'}`);
      lastPhase = e.phase;
      if (e.phase === 'decoding' && e.fraction > 0.92 && e.fraction < 1 && ++passEvents === 1) mark('first transparent decoder pass done');
    };
    const tJob = performance.now();
    const result = await runPipeline({ base: view }, req, { onProgress });
    const jobS = (performance.now() - tJob) / 1000;
    mark('job done');
    await ms.release();

    const img = result.images[0]!.image;
    if (img.channels !== 4) throw new Error(`the job returned ${img.channels} channels, not RGBA`);
    let alphaMin = 255;
    let alphaMax = 0;
    for (let i = 3; i < img.data.length; i += 4) {
      alphaMin = Math.min(alphaMin, img.data[i]!);
      alphaMax = Math.max(alphaMax, img.data[i]!);
    }
    const at = (name: string) => marks.find((m) => m.at.startsWith(name))?.s;
    const span = (a: string, b: string) => {
      const x = at(a);
      const y = at(b);
      return x === undefined || y === undefined ? undefined : Number((y - x).toFixed(1));
    };
    const r1 = (x: number) => Number(x.toFixed(1));
    const peak = peakRss();
    const report = {
      case: `transparent SDXL job ${img.width}x${img.height}${args.plumbing ? ' (PLUMBING CHECK: narrow SDXL, not the figure)' : ''}`,
      steps: `${args.steps} Euler (${nets.unet?.runs ?? 0} UNet evaluations, each CFG batch 2)`,
      tta: args.tta ? 'on (8 passes + median)' : 'off (1 pass)',
      patch: { file: patchFile, modules: pShapes.size / 2, rank: PATCH_RANK, params: parameterCount(pShapes) },
      decoder: { params: parameterCount(dShapes), passGflop: r1(transparentDecoderFlops(RELEASED_TRANSPARENT_DECODER, args.size, args.size) / 1e9) },
      peakRssGB: gib(peak),
      fitsIn24GB: peak <= LIMIT_BYTES,
      jobS: r1(jobS),
      graphBuildAndSessionsS: r1(view.buildMs / 1000),
      networks: Object.fromEntries(Object.entries(nets).map(([k, v]) => [k, { readyS: r1(v.readyS), runS: r1(v.runS), runs: v.runs }])),
      phasesS: {
        patchApplied: span('model ready', 'patch applied'),
        encoding: span('encoding starts', 'unet requested'),
        sampling: span('unet requested', 'decoding starts'),
        vaeSessionReady: span('decoding starts', 'vae-decoder session ready'),
        transparentDecoderSession: span('vae-decoder session ready', 'vae-decoder run starts'),
        vaeDecode: span('vae-decoder run starts', 'vae-decoder run done'),
        transparentDecode: span('vae-decoder run done', 'job done'),
      },
      alpha: { min: alphaMin, max: alphaMax },
      marks,
      loadAverage: { before: loadBefore.map(r1), after: loadavg().map(r1) },
      threads: args.threads || 'onnxruntime default (one per core)',
      cacheDir: args.cacheDir ? cacheDir : `${cacheDir} (temporary, deleted)`,
    };
    if (args.json) console.log(JSON.stringify(report));
    else {
      console.log(
        `${report.case}: ${args.plumbing ? 'narrow SDXL' : 'SDXL released shapes'}, random weights, fp32 CPU; patch rank ${PATCH_RANK} on ${report.patch.modules} modules`,
      );
      console.log(`  ${report.steps}, transparent decoder TTA ${report.tta}`);
      console.log(`  peak RSS ${report.peakRssGB} GiB (${report.fitsIn24GB ? 'fits in' : 'does NOT fit in'} 24 GiB)`);
      console.log(`  job ${report.jobS} s, of which graph builds + sessions ${report.graphBuildAndSessionsS} s`);
      console.log(`  phases (s): ${JSON.stringify(report.phasesS)}`);
      console.log(`  networks (s): ${JSON.stringify(report.networks)}`);
      console.log(
        `  alpha range ${alphaMin}..${alphaMax}; load average before ${report.loadAverage.before.join(' ')}, after ${report.loadAverage.after.join(' ')}`,
      );
      console.log('  where the peak was reached (elapsed s, RSS then, peak so far, GiB):');
      for (const m of marks) console.log(`    ${m.s.toFixed(1).padStart(7)}  ${m.rssGB.toFixed(2).padStart(6)}  ${m.peakGB.toFixed(2).padStart(6)}  ${m.at}`);
    }
    if (!report.fitsIn24GB) process.exitCode = 1;
  } finally {
    if (!args.cacheDir) rmSync(cacheDir, { recursive: true, force: true });
  }
}

await main();
