// The machine's fp32 peak as onnxruntime reaches it: the faster of one large 3x3 convolution and one large
// matmul, each timed (best of several runs) after a warm-up, in the same process and thread settings as the nets.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import ort from 'onnxruntime-node';
import { GraphBuilder } from '../src/engine/onnx/graph.ts';

export interface PeakResult {
  convGflops: number;
  matmulGflops: number;
  peakGflops: number;
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

async function timeGraph(build: (b: GraphBuilder) => Record<string, ort.Tensor>, flops: number, runs: number, threads: number): Promise<number> {
  const dir = mkdtempSync(join(tmpdir(), 'kiln-peak-'));
  try {
    const b = new GraphBuilder('peak', dir, 'fp32');
    const feeds = build(b);
    const session = await ort.InferenceSession.create(b.finish(), { executionProviders: ['cpu'], graphOptimizationLevel: 'all', intraOpNumThreads: threads });
    await session.run(feeds); // warm-up: prepacking, arena growth
    let best = Infinity;
    for (let i = 0; i < runs; i++) {
      const t = performance.now();
      await session.run(feeds);
      best = Math.min(best, (performance.now() - t) / 1000);
    }
    await session.release();
    return flops / best / 1e9;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** 3x3 conv 640->640 on 64x64 (30 GFLOP) and a 4096x2048 @ 2048x4096 matmul (69 GFLOP). */
export async function measurePeak(threads = 0, runs = 3): Promise<PeakResult> {
  const C = 640, H = 64;
  const convGflops = await timeGraph(
    (b) => {
      const x = b.input('x', [1, C, H, H]);
      b.output(b.conv(x, { shape: [C, C, 3, 3], data: filled(C * C * 9, 1) }, { shape: [C], data: filled(C, 2) }, 'conv', { pad: 1 }), 'y', [1, C, H, H]);
      return { x: new ort.Tensor('float32', filled(C * H * H, 3), [1, C, H, H]) };
    },
    2 * C * C * 9 * H * H,
    runs,
    threads,
  );
  const M = 4096, K = 2048, N = 4096;
  const matmulGflops = await timeGraph(
    (b) => {
      const x = b.input('x', [M, K]);
      b.output(b.matmul(x, b.weight('w', { shape: [K, N], data: filled(K * N, 4) })), 'y', [M, N]);
      return { x: new ort.Tensor('float32', filled(M * K, 5), [M, K]) };
    },
    2 * M * K * N,
    runs,
    threads,
  );
  return { convGflops, matmulGflops, peakGflops: Math.max(convGflops, matmulGflops) };
}
