// Micro-benchmark: fp32 vs int8 vs bf16 onnxruntime CPU kernels at SD1.5 UNet layer shapes (batch 2 = one CFG
// step). Each case is one small graph; prints ms per run (median of a few) and the ratio to fp32, or why the
// session would not run. Usage: node --import tsx bench/precision-micro.ts [--reps N] [--only substr]
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as ortNs from 'onnxruntime-node';
import { GraphBuilder, type Value } from '../src/engine/onnx/graph.ts';
import { OnnxDType } from '../src/engine/onnx/proto.ts';

const ort = ((ortNs as unknown as { default?: typeof ortNs }).default ?? ortNs) as typeof ortNs;
const args = process.argv.slice(2);
const reps = Number(args[args.indexOf('--reps') + 1] ?? 5) || 5;
const only = args.includes('--only') ? args[args.indexOf('--only') + 1] : undefined;

function rand(n: number, scale = 1): Float32Array {
  const a = new Float32Array(n);
  let s = 12345;
  for (let i = 0; i < n; i++) {
    s = (s * 1103515245 + 12345) >>> 0;
    a[i] = ((s / 2 ** 32) * 2 - 1) * scale;
  }
  return a;
}

/** Per-output-channel symmetric int8 of a [K, N] matrix (columns are output channels). */
function quantCols(w: Float32Array, k: number, n: number): { q: Int8Array; scale: Float32Array } {
  const scale = new Float32Array(n);
  for (let j = 0; j < n; j++) {
    let m = 0;
    for (let i = 0; i < k; i++) m = Math.max(m, Math.abs(w[i * n + j]!));
    scale[j] = m / 127 || 1;
  }
  const q = new Int8Array(k * n);
  for (let i = 0; i < k; i++) for (let j = 0; j < n; j++) q[i * n + j] = Math.round(w[i * n + j]! / scale[j]!);
  return { q, scale };
}

const bytes = (a: ArrayBufferView) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
const f32 = (b: GraphBuilder, name: string, dims: number[], data: Float32Array) => b.rawInitializer(name, dims, OnnxDType.FLOAT, bytes(data));
const i8 = (b: GraphBuilder, name: string, dims: number[], data: Int8Array) => b.rawInitializer(name, dims, OnnxDType.INT8, bytes(data));
const u8 = (b: GraphBuilder, name: string, dims: number[], data: Uint8Array) => b.rawInitializer(name, dims, OnnxDType.UINT8, data);

interface Case {
  name: string;
  input: number[];
  build: (b: GraphBuilder, x: Value) => Value;
}

function linearCases(label: string, tokens: number, k: number, n: number): Case[] {
  const shape = [2, tokens, k];
  const w = rand(k * n, 0.05);
  const { q, scale } = quantCols(w, k, n);
  return [
    { name: `${label} fp32 MatMul`, input: shape, build: (b, x) => b.matmul(x, f32(b, 'w', [k, n], w)) },
    {
      name: `${label} int8 DynamicQuantizeLinear+MatMulInteger`,
      input: shape,
      build: (b, x) => {
        const [xq, xs, xz] = b.opN('DynamicQuantizeLinear', [x], 3);
        const acc = b.op('MatMulInteger', [xq!, i8(b, 'wq', [k, n], q), xz!, i8(b, 'wz', [n], new Int8Array(n))]);
        return b.mul(b.mul(b.cast(acc, OnnxDType.FLOAT), xs!), f32(b, 'ws', [n], scale));
      },
    },
    {
      name: `${label} int8 DynamicQuantizeMatMul (contrib)`,
      input: shape,
      build: (b, x) => b.msOp('DynamicQuantizeMatMul', [x, i8(b, 'wq', [k, n], q), f32(b, 'ws', [n], scale), i8(b, 'wz', [n], new Int8Array(n))]),
    },
    {
      name: `${label} int8 static QDQ (QLinearMatMul)`,
      input: shape,
      build: (b, x) => {
        const xs = f32(b, 'xs', [], Float32Array.of(1 / 127));
        const xz = u8(b, 'xz', [], Uint8Array.of(128));
        const xdq = b.op('DequantizeLinear', [b.op('QuantizeLinear', [x, xs, xz]), xs, xz]);
        const wdq = b.op('DequantizeLinear', [i8(b, 'wq', [k, n], q), f32(b, 'ws', [n], scale), i8(b, 'wz', [n], new Int8Array(n))], { axis: 1 });
        const y = b.matmul(xdq, wdq);
        const ys = f32(b, 'ys', [], Float32Array.of(0.05));
        const yz = u8(b, 'yz', [], Uint8Array.of(128));
        return b.op('DequantizeLinear', [b.op('QuantizeLinear', [y, ys, yz]), ys, yz]);
      },
    },
    ...[4, 0].map((acc) => ({
      name: `${label} MatMulNBits bits=8 block=32 acc=${acc}`,
      input: shape,
      build: (b: GraphBuilder, x: Value) => {
        const block = 32;
        const blocks = Math.ceil(k / block);
        // [N, blocks, block] uint8 with zero point 128 (the default), one scale per block.
        const packed = new Uint8Array(n * blocks * block);
        const scales = new Float32Array(n * blocks);
        for (let j = 0; j < n; j++) {
          for (let bl = 0; bl < blocks; bl++) {
            let m = 0;
            for (let i = bl * block; i < Math.min(k, (bl + 1) * block); i++) m = Math.max(m, Math.abs(w[i * n + j]!));
            const s = m / 127 || 1;
            scales[j * blocks + bl] = s;
            for (let i = bl * block; i < Math.min(k, (bl + 1) * block); i++)
              packed[(j * blocks + bl) * block + (i - bl * block)] = Math.round(w[i * n + j]! / s) + 128;
          }
        }
        return b.msOp('MatMulNBits', [x, u8(b, 'wq', [n, blocks, block], packed), f32(b, 'ws', [n * blocks], scales)], {
          K: k,
          N: n,
          bits: 8,
          block_size: block,
          accuracy_level: acc,
        });
      },
    })),
    {
      name: `${label} bf16 Cast+MatMul`,
      input: shape,
      build: (b, x) => {
        const wb = b.cast(f32(b, 'w', [k, n], w), OnnxDType.BFLOAT16);
        return b.cast(b.matmul(b.cast(x, OnnxDType.BFLOAT16), wb), OnnxDType.FLOAT);
      },
    },
  ];
}

function convCases(label: string, size: number, c: number, o: number, kk: number): Case[] {
  const shape = [2, c, size, size];
  const w = rand(o * c * kk * kk, 0.05);
  const per = c * kk * kk;
  const scale = new Float32Array(o);
  const q = new Int8Array(w.length);
  for (let j = 0; j < o; j++) {
    let m = 0;
    for (let i = 0; i < per; i++) m = Math.max(m, Math.abs(w[j * per + i]!));
    scale[j] = m / 127 || 1;
    for (let i = 0; i < per; i++) q[j * per + i] = Math.round(w[j * per + i]! / scale[j]!);
  }
  const attrs = { kernel_shape: [kk, kk], pads: [kk >> 1, kk >> 1, kk >> 1, kk >> 1] };
  const wdims = [o, c, kk, kk];
  return [
    { name: `${label} fp32 Conv`, input: shape, build: (b, x) => b.op('Conv', [x, f32(b, 'w', wdims, w)], attrs) },
    {
      name: `${label} int8 static QDQ (QLinearConv)`,
      input: shape,
      build: (b, x) => {
        const xs = f32(b, 'xs', [], Float32Array.of(1 / 127));
        const xz = u8(b, 'xz', [], Uint8Array.of(128));
        const xdq = b.op('DequantizeLinear', [b.op('QuantizeLinear', [x, xs, xz]), xs, xz]);
        const wdq = b.op('DequantizeLinear', [i8(b, 'wq', wdims, q), f32(b, 'ws', [o], scale), i8(b, 'wz', [o], new Int8Array(o))], { axis: 0 });
        const y = b.op('Conv', [xdq, wdq], attrs);
        const ys = f32(b, 'ys', [], Float32Array.of(0.05));
        const yz = u8(b, 'yz', [], Uint8Array.of(128));
        return b.op('DequantizeLinear', [b.op('QuantizeLinear', [y, ys, yz]), ys, yz]);
      },
    },
    {
      name: `${label} int8 QDQ input+weight only, float out`,
      input: shape,
      build: (b, x) => {
        const xs = f32(b, 'xs', [], Float32Array.of(1 / 127));
        const xz = u8(b, 'xz', [], Uint8Array.of(128));
        const xdq = b.op('DequantizeLinear', [b.op('QuantizeLinear', [x, xs, xz]), xs, xz]);
        const wdq = b.op('DequantizeLinear', [i8(b, 'wq', wdims, q), f32(b, 'ws', [o], scale), i8(b, 'wz', [o], new Int8Array(o))], { axis: 0 });
        return b.op('Conv', [xdq, wdq], attrs);
      },
    },
    {
      name: `${label} int8 dynamic x -> QLinearConv (static y)`,
      input: shape,
      build: (b, x) => {
        const [xq, xs, xz] = b.opN('DynamicQuantizeLinear', [x], 3);
        const ys = f32(b, 'ys', [], Float32Array.of(0.05));
        const yz = u8(b, 'yz', [], Uint8Array.of(128));
        const y = b.op('QLinearConv', [xq!, xs!, xz!, i8(b, 'wq', wdims, q), f32(b, 'ws', [o], scale), i8(b, 'wz', [o], new Int8Array(o)), ys, yz], attrs);
        return b.op('DequantizeLinear', [y, ys, yz]);
      },
    },
    {
      name: `${label} int8 DynamicQuantizeLinear+ConvInteger`,
      input: shape,
      build: (b, x) => {
        const [xq, xs, xz] = b.opN('DynamicQuantizeLinear', [x], 3);
        // ConvInteger takes a per-tensor weight zero point of the weight's type; uint8 weights with zp 128.
        const qu = Uint8Array.from(q, (v) => v + 128);
        const acc = b.op('ConvInteger', [xq!, u8(b, 'wq', wdims, qu), xz!, u8(b, 'wz', [], Uint8Array.of(128))], attrs);
        return b.mul(b.mul(b.cast(acc, OnnxDType.FLOAT), xs!), f32(b, 'ws', [o, 1, 1], scale));
      },
    },
    {
      name: `${label} bf16 Cast+Conv`,
      input: shape,
      build: (b, x) => b.cast(b.op('Conv', [b.cast(x, OnnxDType.BFLOAT16), b.cast(f32(b, 'w', wdims, w), OnnxDType.BFLOAT16)], attrs), OnnxDType.FLOAT),
    },
  ];
}

function attentionCases(): Case[] {
  // Self-attention scores at 64x64 latents: 2 batch x 8 heads, 4096 queries, head dim 40.
  const shape = [16, 4096, 40];
  return [
    { name: 'attn QK^T [16,4096,40]x[16,40,4096] fp32', input: shape, build: (b, x) => b.matmul(x, b.transpose(x, [0, 2, 1])) },
    {
      name: 'attn QK^T int8 dynamic MatMulInteger',
      input: shape,
      build: (b, x) => {
        const [xq, xs, xz] = b.opN('DynamicQuantizeLinear', [x], 3);
        const acc = b.op('MatMulInteger', [xq!, b.transpose(xq!, [0, 2, 1]), xz!, xz!]);
        return b.mul(b.cast(acc, OnnxDType.FLOAT), b.mul(xs!, xs!));
      },
    },
    {
      name: 'attn MultiHeadAttention fp32 (q=k=v [2,4096,320])',
      input: [2, 4096, 320],
      build: (b, x) => b.attention(x, x, x, { heads: 8, headDim: 40 }),
    },
  ];
}

const cases: Case[] = [
  ...linearCases('linear 320->320 x 2x4096', 4096, 320, 320),
  ...linearCases('linear 320->2560 x 2x4096 (GEGLU)', 4096, 320, 2560),
  ...linearCases('linear 1280->1280 x 2x256', 256, 1280, 1280),
  ...convCases('conv3x3 320->320 @64', 64, 320, 320, 3),
  ...convCases('conv3x3 1280->1280 @8', 8, 1280, 1280, 3),
  ...attentionCases(),
].filter((c) => !only || c.name.includes(only));

const root = mkdtempSync(join(tmpdir(), 'kiln-precision-micro-'));
const baseline = new Map<string, number>();
try {
  for (const [i, c] of cases.entries()) {
    const dir = join(root, String(i));
    mkdirSync(dir);
    const b = new GraphBuilder('micro', dir);
    const x = b.input('x', c.input);
    b.output(c.build(b, x), 'y', ['d0', 'd1', 'd2', 'd3'].slice(0, c.input.length));
    const path = b.finish();
    let line: string;
    try {
      const session = await ort.InferenceSession.create(path, { executionProviders: ['cpu'], graphOptimizationLevel: 'all' });
      const feed = { x: new ort.Tensor('float32', rand(c.input.reduce((a, d) => a * d, 1)), c.input) };
      await session.run(feed); // warm-up: prepacking, arena
      const times: number[] = [];
      for (let r = 0; r < reps; r++) {
        const t0 = performance.now();
        await session.run(feed);
        times.push(performance.now() - t0);
      }
      await session.release();
      times.sort((a, z) => a - z);
      const ms = times[times.length >> 1]!;
      const group = c.name.split(/ (fp32|int8|bf16|MatMulNBits)/)[0]!;
      if (c.name.includes('fp32')) baseline.set(group, ms);
      const base = baseline.get(group);
      line = `${ms.toFixed(1).padStart(8)} ms${base && !c.name.includes('fp32') ? `  x${(base / ms).toFixed(2)} vs fp32` : ''}`;
    } catch (e) {
      line = `   fails: ${(e as Error).message.split('\n')[0]!.slice(0, 140)}`;
    }
    console.log(`${c.name.padEnd(58)} ${line}`);
  }
} finally {
  rmSync(root, { recursive: true, force: true });
}
