// VAE decoder fp32 vs int8 at SD1.5 shapes (random weights): decode time alternately, calibration error, peak RSS.
//   node --import tsx bench/vae-int8-speed.ts [--size PX] [--runs N]
import { mkdtempSync, rmSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { ModelSessions } from '../src/engine/pipelines/model-sessions.ts';
import { runSession } from '../src/engine/runtime.ts';
import { randomSd15 } from './random-sd15.ts';

const args = process.argv.slice(2);
const size = Number(args.includes('--size') ? args[args.indexOf('--size') + 1] : 512);
const runs = Number(args.includes('--runs') ? args[args.indexOf('--runs') + 1] : 2);
const cacheDir = mkdtempSync(join(tmpdir(), 'kiln-vae-int8-'));
try {
  const model = await randomSd15();
  const base = { device: 'cpu' as const, cacheDir, spinning: false };
  const fp32 = ModelSessions.fromModel(model, [], base);
  const int8 = ModelSessions.fromModel(model, [], { ...base, precision: 'int8' });
  const h = size / 8;
  const latent = { shape: [1, 4, h, h], data: Float32Array.from({ length: 4 * h * h }, (_, i) => Math.sin(i * 0.37) * 4) };
  const decode = async (ms: ModelSessions) => {
    const s = await ms.vaeDecoder();
    const name = s.inputNames[0]!;
    const t0 = performance.now();
    const cpu0 = process.cpuUsage();
    await runSession(s, { [name]: latent });
    const cpu = process.cpuUsage(cpu0);
    return { wall: (performance.now() - t0) / 1000, cpu: (cpu.user + cpu.system) / 1e6 };
  };
  await decode(fp32);
  await decode(int8); // calibration decode (fp32 + ranges)
  await decode(int8); // builds and checks the int8 graph
  const v = int8.int8VaeDecoder().result;
  console.log(`VAE int8 verdict ${v?.status}: cosine ${v?.minCosine.toFixed(5)}, relative error ${v?.maxRelativeError.toFixed(5)} ${v?.reason ?? ''}`);
  for (let r = 0; r < runs; r++) {
    const a = await decode(fp32);
    const b = await decode(int8);
    console.log(
      `decode ${size}x${size}: fp32 ${a.wall.toFixed(2)} s (cpu ${a.cpu.toFixed(2)} s), int8 ${b.wall.toFixed(2)} s (cpu ${b.cpu.toFixed(2)} s), wall x${(a.wall / b.wall).toFixed(2)}, cpu x${(a.cpu / b.cpu).toFixed(2)}; load ${loadavg()[0]!.toFixed(1)}`,
    );
  }
  console.log(`peak RSS ${(process.resourceUsage().maxRSS / 1024 / 1024).toFixed(2)} GB`);
  await fp32.release();
  await int8.release();
} finally {
  rmSync(cacheDir, { recursive: true, force: true });
}
