// Face-restoration bench: A1111's whole "Restore faces" flow (pipelines/faces/restore.ts: resize to a short side of
// 640, RetinaFace, decode + NMS, align to the 512 template, restore, ParseNet, paste back through the soft mask) on a
// 512x512 image with one face, for GFPGAN and CodeFormer, with the four networks at their RELEASED shapes and key
// names (bench/face-shapes.ts) and seeded random weights. The weights are written as .safetensors files to a
// temporary folder (so the real load path runs: file -> graph -> session) and deleted afterwards, with the graphs.
//
//   npm run bench:faces [-- --only gfpgan|codeformer] [--runs N] [--threads N] [--tiny] [--keep-dir DIR] [--json]
//
// Random weights detect nothing, so the detector's real outputs (computed and timed) get one confident candidate
// written into them, at the level-3 prior nearest the image centre, with the 5 landmarks of the FFHQ template; every
// other score is capped below the 0.97 threshold. Everything after that is the production flow.
// --tiny runs the same flow on the tiny fixture networks (test/fixtures/tiny-faces): the non-network phases at
// full cost, the networks nearly free. Peak RSS of the whole run is printed (the released nets need ~2-3 GB:
// run it under `flock /work/locks/heavy` on a shared machine).
import { mkdtempSync, rmSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import type { FaceRestoreSettings } from '../src/engine/api.ts';
import { faceNets } from '../src/engine/pipelines/face-restore.ts';
import { FACE_TEMPLATE_512 } from '../src/engine/pipelines/faces/align.ts';
import { priorBoxes, RETINAFACE_CFG } from '../src/engine/pipelines/faces/detect.ts';
import { type FaceNets, restoreFaces } from '../src/engine/pipelines/faces/restore.ts';
import { type FacePhase, type FacePhaseTimings, newFaceTimings } from '../src/engine/pipelines/faces/timings.ts';
import { writeSafetensors, type TensorToWrite } from '../src/engine/weights/safetensors.ts';
import { codeformerShapes, gfpganShapes, parsenetShapes, retinafaceResnet50Shapes, type ShapeTable, valueCount } from './face-shapes.ts';

/** The released files' sizes in bytes (GitHub release assets; fp32 values + the pickle/zip overhead). */
const RELEASED_BYTES = {
  'GFPGANv1.4.pth': 348_632_874,
  'codeformer.pth': 376_637_898,
  'detection_Resnet50_Final.pth': 109_497_761,
  'parsing_parsenet.pth': 85_331_193,
};

interface Args {
  restorers: ('GFPGAN' | 'CodeFormer')[];
  runs: number;
  threads?: number;
  tiny: boolean;
  json: boolean;
}

function parseArgs(argv: string[]): Args {
  const out: Args = { restorers: ['GFPGAN', 'CodeFormer'], runs: 3, tiny: false, json: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const next = () => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${a} needs a value`);
      return v;
    };
    if (a === '--only') {
      const v = next().toLowerCase();
      if (v !== 'gfpgan' && v !== 'codeformer') throw new Error('--only takes gfpgan or codeformer');
      out.restorers = [v === 'gfpgan' ? 'GFPGAN' : 'CodeFormer'];
    } else if (a === '--runs') out.runs = Math.max(1, Math.min(20, Number(next()) || 1));
    else if (a === '--threads') out.threads = Math.max(1, Number(next()) || 1);
    else if (a === '--tiny') out.tiny = true;
    else if (a === '--json') out.json = true;
    else if (a === '--help') {
      console.log('npm run bench:faces [-- --only gfpgan|codeformer] [--runs N] [--threads N] [--tiny] [--json]');
      process.exit(0);
    } else throw new Error(`unknown option ${a}`);
  }
  return out;
}

/** Seeded values for a state-dict entry, scaled so activations stay finite through the deep nets. */
function randomTensor(name: string, shape: number[], seed: number): TensorToWrite {
  if (name.endsWith('num_batches_tracked')) return { dtype: 'I64', shape, bytes: new Uint8Array(8) };
  const n = shape.reduce((a, b) => a * b, 1);
  const data = new Float32Array(n);
  let s = seed ^ 0x9e3779b1;
  for (let i = 0; i < name.length; i++) s = Math.imul(s ^ name.charCodeAt(i), 16777619);
  s |= 1;
  const next = () => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return (s >>> 0) / 4294967296 - 0.5;
  };
  const last = name.slice(name.lastIndexOf('.') + 1);
  if (last === 'running_var') for (let i = 0; i < n; i++) data[i] = 1 + 0.2 * next();
  else if (name.includes('noises.noise')) for (let i = 0; i < n; i++) data[i] = Math.sqrt(12) * next();
  else if (shape.length <= 1 || (shape.length === 4 && shape[0] === 1 && shape[2] === 1)) {
    const isScale = last === 'weight' && shape.length === 1 && !name.endsWith('style_conv1.weight') && !/style_convs\.\d+\.weight$/.test(name);
    for (let i = 0; i < n; i++) data[i] = isScale ? 1 + 0.1 * next() : 0.02 * next();
  } else {
    // Uniform with std 1/sqrt(fan-in); the modulated convs' [1, out, in, k, k] weights count in * k * k.
    const fanIn = shape.length === 5 ? shape[2]! * shape[3]! * shape[4]! : n / shape[0]!;
    const a = Math.sqrt(12 / fanIn);
    for (let i = 0; i < n; i++) data[i] = a * next();
  }
  return { dtype: 'F32', shape, bytes: new Uint8Array(data.buffer) };
}

function writeRandom(file: string, table: ShapeTable, seed: number, prefix = ''): void {
  const tensors: Record<string, TensorToWrite> = {};
  for (const [name, shape] of table) tensors[prefix + name] = randomTensor(name, shape, seed);
  writeSafetensors(file, tensors);
}

/** A smooth 512x512 RGB test image (gradients and a disc); its content does not change the cost. */
function testImage(size: number): { data: Uint8Array; width: number; height: number; channels: 3 } {
  const data = new Uint8Array(size * size * 3);
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) {
      const inside = (x - size / 2) ** 2 + (y - size / 2) ** 2 < (size / 4) ** 2;
      const p = (y * size + x) * 3;
      data[p] = inside ? 220 : (x * 255) / size;
      data[p + 1] = inside ? 170 : (y * 255) / size;
      data[p + 2] = inside ? 140 : 90;
    }
  }
  return { data, width: size, height: size, channels: 3 };
}

/** Writes one confident face into the detector's raw outputs (see the header); returns them. */
function withOneFace(raw: { loc: Float32Array; conf: Float32Array; landms: Float32Array }, width: number, height: number) {
  const priors = priorBoxes(height, width);
  const count = priors.length / 4;
  const conf = Float32Array.from(raw.conf);
  for (let i = 0; i < count; i++) {
    if (conf[2 * i + 1]! > 0.5) {
      conf[2 * i + 1] = 0.5;
      conf[2 * i] = 0.5;
    }
  }
  // The level-3 (stride 32), 256-px prior nearest the centre: its box is the face (zero box regression).
  let best = 0;
  let bestD = Infinity;
  const level3 = count - 2 * Math.ceil(height / 32) * Math.ceil(width / 32);
  for (let i = level3; i < count; i += 2) {
    const d = (priors[4 * i]! - 0.5) ** 2 + (priors[4 * i + 1]! - 0.5) ** 2;
    if (d < bestD) [best, bestD] = [i, d];
  }
  const loc = Float32Array.from(raw.loc);
  const landms = Float32Array.from(raw.landms);
  loc.fill(0, 4 * best, 4 * best + 4);
  conf[2 * best] = 0.001;
  conf[2 * best + 1] = 0.999;
  const [cx, cy, pw, ph] = [priors[4 * best]!, priors[4 * best + 1]!, priors[4 * best + 2]!, priors[4 * best + 3]!];
  const v0 = RETINAFACE_CFG.variance[0];
  FACE_TEMPLATE_512.forEach(([tx, ty], k) => {
    // Template point (0..512 in the face box) -> normalised image position -> facexlib's landmark encoding.
    const x = cx - pw / 2 + (tx / 512) * pw;
    const y = cy - ph / 2 + (ty / 512) * ph;
    landms[10 * best + 2 * k] = (x - cx) / (v0 * pw);
    landms[10 * best + 2 * k + 1] = (y - cy) / (v0 * ph);
  });
  return { loc, conf, landms };
}

interface RunReport {
  wallMs: number;
  cpuMs: number;
  phases: FacePhaseTimings;
}

interface RestorerReport {
  restorer: string;
  firstCallS: number;
  runs: RunReport[];
  /** The fastest run (wall), with its network / other split. */
  best: RunReport & { networkWallMs: number; otherWallMs: number; otherCpuMs: number };
  faces: number;
  maxRssGB: number;
}

const PHASES: readonly FacePhase[] = ['resize', 'detect', 'decode', 'align', 'convert', 'restore', 'parse', 'mask', 'paste'];
const NETWORK_PHASES = new Set<FacePhase>(['detect', 'restore', 'parse']);

async function benchRestorer(
  settings: FaceRestoreSettings,
  runtime: { device: 'cpu'; cacheDir: string; threads?: number },
  runs: number,
): Promise<RestorerReport> {
  const image = testImage(512);
  const t0 = performance.now();
  const real = await faceNets(settings, runtime); // builds (or reads) the graphs and opens the sessions
  const nets: FaceNets = {
    ...real,
    detect: async (bgr) => withOneFace(await real.detect(bgr), bgr.width, bgr.height),
  };
  const firstResult = await restoreFaces(image, nets);
  const firstCallS = (performance.now() - t0) / 1000;
  const out: RunReport[] = [];
  for (let i = 0; i < runs; i++) {
    const phases = newFaceTimings();
    const c0 = process.cpuUsage();
    const t = performance.now();
    await restoreFaces(image, nets, phases);
    const c = process.cpuUsage(c0);
    out.push({ wallMs: performance.now() - t, cpuMs: (c.user + c.system) / 1000, phases });
  }
  const best = out.reduce((a, b) => (b.wallMs < a.wallMs ? b : a));
  const sum = (rec: Partial<Record<FacePhase, number>>, net: boolean) =>
    PHASES.filter((p) => NETWORK_PHASES.has(p) === net).reduce((s, p) => s + (rec[p] ?? 0), 0);
  const networkWallMs = sum(best.phases.wall, true);
  return {
    restorer: settings.model,
    firstCallS,
    runs: out,
    best: { ...best, networkWallMs, otherWallMs: best.wallMs - networkWallMs, otherCpuMs: best.cpuMs - sum(best.phases.cpu, true) },
    faces: firstResult.faces,
    maxRssGB: process.resourceUsage().maxRSS / 2 ** 20,
  };
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  const work = mkdtempSync(join(tmpdir(), 'kiln-face-bench-'));
  try {
    const log = (s: string) => {
      if (!args.json) console.log(s);
    };
    let files: { GFPGAN: string; CodeFormer: string; detector: string; parser: string };
    if (args.tiny) {
      const fx = resolve(import.meta.dirname, '../test/fixtures/tiny-faces');
      files = {
        GFPGAN: join(fx, 'gfpgan-v1.4-tiny.pth'),
        CodeFormer: join(fx, 'codeformer-tiny.pth'),
        detector: join(fx, 'retinaface-mobilenet0.25.safetensors'),
        parser: join(fx, 'parsenet.safetensors'),
      };
      log('tiny fixture networks (test/fixtures/tiny-faces)');
    } else {
      const tables = [
        ['GFPGANv1.4.pth', 'GFPGAN', gfpganShapes(), 'gfpgan-v1.4-random.safetensors', ''],
        ['codeformer.pth', 'CodeFormer', codeformerShapes(), 'codeformer-random.safetensors', ''],
        // The released detector was saved from DataParallel: every key starts with "module." (stripped on load).
        ['detection_Resnet50_Final.pth', 'detector', retinafaceResnet50Shapes(), 'retinaface-resnet50-random.safetensors', 'module.'],
        ['parsing_parsenet.pth', 'parser', parsenetShapes(), 'parsenet-random.safetensors', ''],
      ] as const;
      const paths: Record<string, string> = {};
      for (const [released, role, table, file, prefix] of tables) {
        if (role === 'GFPGAN' && !args.restorers.includes('GFPGAN')) continue;
        if (role === 'CodeFormer' && !args.restorers.includes('CodeFormer')) continue;
        const values = valueCount(table);
        const t = performance.now();
        paths[role] = join(work, file);
        writeRandom(paths[role]!, table, 22, prefix);
        const overhead = RELEASED_BYTES[released] - values * 4;
        log(
          `${released.padEnd(29)} ${table.size} tensors, ${(values / 1e6).toFixed(2)} M values = ${((values * 4) / 2 ** 20).toFixed(1)} MiB fp32; ` +
            `released file ${RELEASED_BYTES[released]} bytes (+${overhead} bytes of pickle/zip); random copy written in ${((performance.now() - t) / 1000).toFixed(1)} s`,
        );
      }
      files = { GFPGAN: paths.GFPGAN ?? '', CodeFormer: paths.CodeFormer ?? '', detector: paths.detector!, parser: paths.parser! };
    }
    const runtime = { device: 'cpu' as const, cacheDir: join(work, 'graphs'), threads: args.threads };
    const reports: RestorerReport[] = [];
    for (const restorer of args.restorers) {
      const settings: FaceRestoreSettings = { model: restorer, restorerPath: files[restorer], detectorPath: files.detector, parserPath: files.parser };
      const r = await benchRestorer(settings, runtime, args.runs);
      reports.push(r);
      const ms = (v: number | undefined) => `${(v ?? 0).toFixed(0)}`;
      const b = r.best;
      log(`\n${restorer}: ${r.faces} face; first call (graph build + sessions + one restore) ${r.firstCallS.toFixed(1)} s`);
      log(`  fastest of ${args.runs} runs: ${ms(b.wallMs)} ms wall per face (512x512 image, one face), ${ms(b.cpuMs)} ms CPU (all threads)`);
      log(`  phases, wall ms: ${PHASES.map((p) => `${p} ${ms(b.phases.wall[p])}`).join(', ')}`);
      log(`  phases, CPU ms:  ${PHASES.map((p) => `${p} ${ms(b.phases.cpu[p])}`).join(', ')}`);
      log(
        `  networks ${ms(b.networkWallMs)} ms wall; everything else ${ms(b.otherWallMs)} ms wall, ${ms(b.otherCpuMs)} ms CPU; peak RSS so far ${r.maxRssGB.toFixed(2)} GB`,
      );
    }
    const [l1, l5] = loadavg();
    log(`\nload average ${l1!.toFixed(2)} / ${l5!.toFixed(2)} (1 / 5 min); timings on a shared machine are upper bounds`);
    if (args.json) console.log(JSON.stringify({ tiny: args.tiny, reports, loadavg: loadavg() }, null, 1));
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

await main();
