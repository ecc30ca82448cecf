// TAESD decoder at real size (64 channels, published layout) with seeded random weights: decode time of one
// 64x64 latent -> 512x512 image, to set beside the full SD1.5 VAE decode (`npm run bench -- --parts vae`).
// Usage: node --import tsx bench/taesd-bench.ts [--runs N] [--latent H] [--threads N] [--cache-dir DIR]
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openFromSource } from '../src/engine/pipelines/taesd-model.ts';
import { RandomWeights } from './random-weights.ts';

function arg(name: string, fallback: number): number {
  const i = process.argv.indexOf(name);
  const v = i >= 0 ? Number(process.argv[i + 1]) : fallback;
  if (!Number.isInteger(v) || v < 1 || v > 512) throw new Error(`${name} must be an integer 1..512`);
  return v;
}

/** taesd.py's Decoder parameter shapes, original (Sequential index) names. */
function taesdShapes(latent = 4, c = 64): Map<string, number[]> {
  const m = new Map<string, number[]>();
  const conv = (name: string, out: number, inC: number, bias = true) => {
    m.set(`${name}.weight`, [out, inC, 3, 3]);
    if (bias) m.set(`${name}.bias`, [out]);
  };
  const block = (i: number) => {
    for (const k of [0, 2, 4]) conv(`${i}.conv.${k}`, c, c);
  };
  conv('1', c, latent);
  for (const g of [3, 8, 13]) {
    for (let i = g; i < g + 3; i++) block(i);
    conv(String(g + 4), c, c, false);
  }
  block(18);
  conv('19', 3, c);
  return m;
}

const runs = arg('--runs', 5);
const h = arg('--latent', 64);
const threads = process.argv.includes('--threads') ? arg('--threads', 1) : undefined;
const ci = process.argv.indexOf('--cache-dir');
const cacheDir = ci >= 0 ? process.argv[ci + 1]! : mkdtempSync(join(tmpdir(), 'kiln-taesd-bench-'));

const t0 = Date.now();
const dec = await openFromSource('random', new RandomWeights('taesd', taesdShapes(), 5), `bench-random-${h}`, { device: 'cpu', cacheDir, threads });
const buildMs = Date.now() - t0;
const latent = Float32Array.from({ length: 4 * h * h }, (_, i) => Math.sin(i * 0.37) * 2);
await dec.decode(latent, [1, 4, h, h]); // warm-up
const times: number[] = [];
for (let r = 0; r < runs; r++) {
  const s = performance.now();
  await dec.decode(latent, [1, 4, h, h]);
  times.push(performance.now() - s);
}
times.sort((a, b) => a - b);
console.log(
  JSON.stringify({
    net: 'taesd-decoder',
    latent: [h, h],
    image: [h * 8, h * 8],
    buildMs,
    runs,
    medianMs: Math.round(times[runs >> 1]!),
    minMs: Math.round(times[0]!),
  }),
);
await dec.release();
