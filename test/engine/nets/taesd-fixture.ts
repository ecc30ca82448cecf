// A tiny TAESD decoder in the published layout with random weights (no reference fixture exists), for the
// graph, preview and server tests.
import { writeSafetensors } from '../../../src/engine/weights/safetensors.ts';
import type { Tensor } from '../../../src/engine/tensor.ts';

/** Deterministic uniform(-a, a) values (mulberry32). */
export function random(seed: number): (a: number) => number {
  let s = seed >>> 0;
  return (a) => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((((t ^ (t >>> 14)) >>> 0) / 4294967296) * 2 - 1) * a;
  };
}

/**
 * The published decoder with C channels in original (Sequential index) names: 1 conv(4->C), 3..5 blocks, 7 conv
 * no bias, 8..10, 12, 13..15, 17, 18 block, 19 conv(->3). `lastBlockOut` != C gives block 18 a 1x1 skip conv.
 * `groups` < 3 keeps only the first upsampling groups (x2 per group): a TAESD that fits the tiny models' x2 VAE.
 */
export function tinyTaesd(c: number, lastBlockOut = c, seed = 1, groups = 3): Record<string, Tensor> {
  const r = random(seed);
  const t: Record<string, Tensor> = {};
  const conv = (name: string, out: number, inC: number, k: number, bias: boolean) => {
    const fan = inC * k * k;
    t[`${name}.weight`] = { shape: [out, inC, k, k], data: Float32Array.from({ length: out * fan }, () => r(1.5 / Math.sqrt(fan))) };
    if (bias) t[`${name}.bias`] = { shape: [out], data: Float32Array.from({ length: out }, () => r(0.1)) };
  };
  const block = (i: number, inC: number, out: number) => {
    conv(`${i}.conv.0`, out, inC, 3, true);
    conv(`${i}.conv.2`, out, out, 3, true);
    conv(`${i}.conv.4`, out, out, 3, true);
    if (inC !== out) conv(`${i}.skip`, out, inC, 1, false);
  };
  conv('1', c, 4, 3, true);
  for (const g of groupStarts(groups)) {
    for (let i = g; i < g + 3; i++) block(i, c, c);
    conv(String(g + 4), c, c, 3, false);
  }
  const end = 3 + 5 * groups;
  block(end, c, lastBlockOut);
  conv(String(end + 1), 3, lastBlockOut, 3, true);
  return t;
}

export function writeTaesd(file: string, tensors: Record<string, Tensor>, rename: (n: string) => string = (n) => n): void {
  const out: Parameters<typeof writeSafetensors>[1] = {};
  for (const [n, t] of Object.entries(tensors)) out[rename(n)] = { dtype: 'F32', shape: t.shape, bytes: new Uint8Array(t.data.buffer.slice(0)) };
  writeSafetensors(file, out);
}

/** Sequential indices where each upsampling group's first block sits (3, 8, 13 in the published decoder). */
export function groupStarts(groups: number): number[] {
  return Array.from({ length: groups }, (_, k) => 3 + 5 * k);
}
