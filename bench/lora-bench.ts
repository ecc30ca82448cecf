// LoRA costs on the tiny fixtures (prints numbers; asserts nothing): first generation with a LoRA (branch graph
// build + session), switching to another low-rank combination (feeds only), a LoHa combination (merged: a graph of
// its own), switching back, and how much the graph cache on disk grows per combination. Full-size figures: the
// `lora` part of `npm run bench` (bench/lora-switch.ts). Plus the merge arithmetic alone for SD1.5-sized
// layers (rank 32), the part of a full-size build that LoRA adds.
// Run: node --import tsx bench/lora-bench.ts
import { mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createEngine } from '../src/engine/engine.ts';
import type { GenerateRequest, LoraSettings } from '../src/engine/api.ts';
import { applyModule } from '../src/engine/weights/lora/math.ts';
import type { LoraModule } from '../src/engine/weights/lora/formats.ts';
import type { TensorDictionary } from '../src/engine/weights/lora/tensor-dictionary.ts';

const FIX = 'test/fixtures';
const cacheDir = mkdtempSync(join(tmpdir(), 'kiln-lora-bench-'));
const engine = createEngine({ cacheDir });

function dirBytes(dir: string): number {
  let n = 0;
  for (const f of readdirSync(dir, { recursive: true })) {
    const st = statSync(join(dir, String(f)));
    if (st.isFile()) n += st.size;
  }
  return n;
}

const lora = (file: string, te: number, unet: number): LoraSettings => ({ name: file, path: `${FIX}/loras/${file}.safetensors`, te, unet });
const req: GenerateRequest = {
  model: { path: `${FIX}/tiny-sd1` },
  prompts: ['a red apple'],
  width: 64,
  height: 64,
  steps: 2,
  cfgScale: 7,
  sampler: 'Euler',
  seed: 1,
};

async function timed(label: string, r: GenerateRequest): Promise<void> {
  const before = dirBytes(cacheDir);
  const t = performance.now();
  await engine.generate(r);
  const ms = performance.now() - t;
  console.log(`${label.padEnd(44)} ${ms.toFixed(0).padStart(6)} ms   cache +${((dirBytes(cacheDir) - before) / 1e6).toFixed(2)} MB`);
}

console.log('tiny-sd1, 64x64, 2 Euler steps (each line: whole generation; cache growth on disk)');
await timed('no LoRA (cold: builds base graphs)', req);
await timed('no LoRA (warm)', req);
await timed('kohya 0.7 (first use: branch graph build)', { ...req, loras: [lora('tiny-sd1-kohya', 0.7, 0.7)] });
await timed('kohya 0.7 (warm)', { ...req, loras: [lora('tiny-sd1-kohya', 0.7, 0.7)] });
await timed('kohya 0.5 (switch: new feeds, same graph)', { ...req, loras: [lora('tiny-sd1-kohya', 0.5, 0.5)] });
await timed('kohya 0.5 + LoHa 0.3 (LoHa merged: new graph)', { ...req, loras: [lora('tiny-sd1-kohya', 0.5, 0.5), lora('tiny-sd1-loha', 0.3, 0.3)] });
await timed('kohya 0.7 again (branch graph kept)', { ...req, loras: [lora('tiny-sd1-kohya', 0.7, 0.7)] });
const base = dirBytes(cacheDir);
console.log(`graph cache now ${(base / 1e6).toFixed(2)} MB: plain graphs, the branch graphs, one merged (LoHa) combination`);

// Merge arithmetic alone at SD1.5 sizes, rank 32 (what a full-size LoRA build adds before graph building).
const shapes: Array<[string, number[], number]> = [
  ['linear 320x320', [320, 320], 1],
  ['linear 1280x1280', [1280, 1280], 1],
  ['linear ff 10240x1280', [10240, 1280], 1],
  ['conv 1280x1280x3x3 (LoCon)', [1280, 1280, 3, 3], 9],
];
console.log('merge of one rank-32 LoRA module (ms):');
for (const [label, shape, k] of shapes) {
  const out = shape[0]!;
  const inner = shape.slice(1).reduce((a, b) => a * b, 1);
  const tensors: Record<string, { shape: number[]; data: Float32Array }> = {
    up: { shape: [out, 32], data: new Float32Array(out * 32).fill(0.01) },
    down: { shape: k > 1 ? [32, inner / k, 3, 3] : [32, inner], data: new Float32Array(32 * inner).fill(0.01) },
  };
  const dict: TensorDictionary = {
    file: 'synthetic',
    names: () => Object.keys(tensors),
    shape: (n) => tensors[n]!.shape,
    get: (n) => ({ shape: tensors[n]!.shape, data: Float32Array.from(tensors[n]!.data) }),
    metadata: () => ({}),
  };
  const module: LoraModule = {
    key: label,
    algorithm: 'lora',
    tensors: new Map([
      ['up', 'up'],
      ['down', 'down'],
    ]),
  };
  const w = { shape, data: new Float32Array(out * inner) };
  const t = performance.now();
  applyModule(dict, module, 'weight', w, 1);
  console.log(`  ${label.padEnd(30)} ${(performance.now() - t).toFixed(1)}`);
}
await engine.close();
rmSync(cacheDir, { recursive: true, force: true });
