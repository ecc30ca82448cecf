// The machine's fp32 peak as onnxruntime reaches it: the faster of one large 3x3 convolution and one large
// matmul, each timed (best of several runs) after a warm-up, with the same session settings as the nets.
// Both wall-clock and CPU-time rates are measured: on a machine shared with other processes the CPU-time rate
// (FLOPs per second of CPU actually granted, times the thread count) is the stable one.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { GraphBuilder } from '../src/engine/onnx/graph.ts';
import { createSession, runSession, type Feed, type Session } from '../src/engine/runtime.ts';

export interface Rates {
  /** FLOPs / wall second. */
  wallGflops: number;
  /** FLOPs / (process CPU seconds / threads). */
  cpuGflops: number;
}

export interface PeakResult {
  conv: Rates;
  matmul: Rates;
  /** The higher of conv and matmul, for each clock. */
  peak: Rates;
}

export interface Timing {
  wallS: number;
  cpuS: number;
}

/** Times one session run: wall seconds and CPU seconds of the whole process (all onnxruntime threads). */
export async function timedRun(session: Session, feeds: Record<string, Feed>) {
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  const outputs = await runSession(session, feeds);
  const wallS = (performance.now() - t0) / 1000;
  const c = process.cpuUsage(c0);
  return { outputs, wallS, cpuS: (c.user + c.system) / 1e6 };
}

function filled(n: number, seed: number): Float32Array {
  const a = new Float32Array(n);
  let s = seed;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    a[i] = s / 2 ** 32 - 0.5;
  }
  return a;
}

async function timeGraph(build: (b: GraphBuilder) => Record<string, Feed>, flops: number, runs: number, threads: number, spinning: boolean): Promise<Rates> {
  const dir = mkdtempSync(join(tmpdir(), 'kiln-peak-'));
  try {
    const b = new GraphBuilder('peak', dir, 'fp32');
    const feeds = build(b);
    const session = await createSession(b.finish(), { device: 'cpu', intraOpThreads: threads, spinning });
    await runSession(session, feeds); // warm-up: prepacking, arena growth
    let wall = Infinity;
    let cpu = Infinity;
    for (let i = 0; i < runs; i++) {
      const t = await timedRun(session, feeds);
      wall = Math.min(wall, t.wallS);
      cpu = Math.min(cpu, t.cpuS);
    }
    await session.release();
    return { wallGflops: flops / wall / 1e9, cpuGflops: flops / (cpu / threadCount(threads)) / 1e9 };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** The number of threads onnxruntime runs one op on (0 = one per core). */
export function threadCount(threads: number): number {
  return threads > 0 ? threads : ortDefaultThreads;
}
let ortDefaultThreads = 1;
/** onnxruntime's default intra-op pool has one thread per physical core; the bench passes what it detected. */
export function setDefaultThreads(n: number): void {
  ortDefaultThreads = n;
}

/** 3x3 conv 640->640 on 64x64 (30 GFLOP) and a 4096x2048 @ 2048x4096 matmul (69 GFLOP). */
export async function measurePeak(threads = 0, spinning = true, runs = 3): Promise<PeakResult> {
  const C = 640;
  const H = 64;
  const conv = await timeGraph(
    (b) => {
      const x = b.input('x', [1, C, H, H]);
      b.output(b.conv(x, { shape: [C, C, 3, 3], data: filled(C * C * 9, 1) }, { shape: [C], data: filled(C, 2) }, 'conv', { pad: 1 }), 'y', [1, C, H, H]);
      return { x: { shape: [1, C, H, H], data: filled(C * H * H, 3) } };
    },
    2 * C * C * 9 * H * H,
    runs,
    threads,
    spinning,
  );
  const M = 4096;
  const K = 2048;
  const N = 4096;
  const matmul = await timeGraph(
    (b) => {
      const x = b.input('x', [M, K]);
      b.output(b.matmul(x, b.weight('w', { shape: [K, N], data: filled(K * N, 4) })), 'y', [M, N]);
      return { x: { shape: [M, K], data: filled(M * K, 5) } };
    },
    2 * M * K * N,
    runs,
    threads,
    spinning,
  );
  return {
    conv,
    matmul,
    peak: { wallGflops: Math.max(conv.wallGflops, matmul.wallGflops), cpuGflops: Math.max(conv.cpuGflops, matmul.cpuGflops) },
  };
}
