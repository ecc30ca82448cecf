// Step reuse (DeepCache) vs the whole UNet on a model, measured the way docs/step-reuse.md describes: for the fixed
// prompt and seed set of the int8 method (QUALITY_CASES), each setting's image is compared with the same request
// without reuse: final image PSNR, largest pixel difference and the final latents' cosine similarity, plus the
// sampling time. Works on any local SD1/SD2/SDXL model (random weights only bound the numerics, not the look).
//   node --import tsx bench/step-reuse-quality.ts [--model PATH] [--size PX] [--steps N] [--settings 2/0,3/0,2/1]
//   [--precision fp32|int8] [--threads N]
import { mkdtempSync, rmSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { createEngine } from '../src/engine/engine.ts';
import type { DeepCacheSettings, GenerateRequest } from '../src/engine/api.ts';
import { cosineSimilarity, imageDifference } from '../src/engine/precision/quality.ts';
import { QUALITY_CASES } from './int8-quality.ts';

const args = process.argv.slice(2);
const arg = (name: string, dflt: string) => (args.includes(name) ? args[args.indexOf(name) + 1]! : dflt);
const size = Number(arg('--size', '64'));
const steps = Number(arg('--steps', '20'));
const precision = arg('--precision', 'fp32') as 'fp32' | 'int8';
const settings: DeepCacheSettings[] = arg('--settings', '2/0,3/0,2/1,3/2')
  .split(',')
  .map((s) => {
    const [interval, branch] = s.split('/').map(Number);
    return { interval: interval!, branch: branch ?? 0 };
  });

const dir = mkdtempSync(join(tmpdir(), 'kiln-step-reuse-quality-'));
const engine = createEngine({ cacheDir: dir, threads: Number(arg('--threads', '1')), precision, int8: { calibrationEvaluations: steps } });
try {
  const base: Omit<GenerateRequest, 'prompts' | 'seed'> = {
    model: { path: arg('--model', 'test/fixtures/tiny-sd1') },
    negativePrompt: 'blurry',
    width: size,
    height: size,
    steps,
    cfgScale: 7,
    sampler: 'Euler',
  };
  // int8: the first generations calibrate (fp32); measure after the int8 graph is in use.
  if (precision === 'int8') for (let i = 0; i < 2; i++) await engine.generate({ ...base, prompts: ['a photograph of a cat'], seed: 1000 + i });
  const run = async (req: GenerateRequest) => {
    let final = new Float32Array();
    const res = await engine.generate(req, {}, { onFinalLatents: (t) => (final = t.data.slice()) });
    return { image: res.images[0]!.image.data, final, ms: res.timings.sampleMs };
  };
  const references = [];
  for (const c of QUALITY_CASES) references.push(await run({ ...base, prompts: [c.prompt], seed: c.seed }));
  const wholeMs = references.reduce((s, r) => s + r.ms, 0);
  console.log(
    `${base.model.path} ${size}x${size}, ${steps} Euler steps, CFG 7, ${precision}; whole UNet sampling ${wholeMs} ms for ${QUALITY_CASES.length} images`,
  );
  for (const dc of settings) {
    const psnrs: number[] = [];
    const diffs: number[] = [];
    const cosines: number[] = [];
    let ms = 0;
    for (const [i, c] of QUALITY_CASES.entries()) {
      const r = await run({ ...base, prompts: [c.prompt], seed: c.seed, deepCache: dc });
      const d = imageDifference(r.image, references[i]!.image);
      psnrs.push(d.psnr);
      diffs.push(d.maxDiff);
      cosines.push(cosineSimilarity(r.final, references[i]!.final));
      ms += r.ms;
    }
    console.log(
      `interval ${dc.interval} branch ${dc.branch}: PSNR ${Math.min(...psnrs).toFixed(2)}-${Math.max(...psnrs).toFixed(2)} dB, max pixel diff ${Math.min(...diffs)}-${Math.max(...diffs)}, final latent cosine >= ${Math.min(...cosines).toFixed(5)}, sampling ${ms} ms (x${(wholeMs / ms).toFixed(2)})`,
    );
  }
  console.log(`load ${loadavg()[0]!.toFixed(2)}`);
} finally {
  await engine.close();
  rmSync(dir, { recursive: true, force: true });
}
