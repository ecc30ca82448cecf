// The SDXL-Lightning precision bench (bench/precision-lightning.ts) on tiny-sdxl: its three processes run and report
// (fp32; int8 calibration on the 4-step image's 4 UNet calls, one per step, and one VAE decode; int8 from the stored
// verdicts, which fails unless both the UNet and the VAE decoder are int8). Keeps the bench's code path from rotting;
// its timings are not asserted.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Timing } from '../../../bench/time-image.ts';

const root = join(import.meta.dirname, '../../..');
const cacheDir = mkdtempSync(join(tmpdir(), 'kiln-lightning-bench-'));
after(() => rmSync(cacheDir, { recursive: true, force: true }));

interface Phase {
  phase: string;
  /** The bench's per-image timing, as JSON. */
  image?: Timing;
  processPeakRssGB: number;
  unet?: { evaluations: number; minCosine: number };
  vaeDecoder?: { evaluations: number; minCosine: number };
}

test('bench --precision --sdxl-lightning --tiny: fp32 then int8 SDXL images, 4 steps CFG 1, int8 UNet and VAE decoder in use', () => {
  const r = spawnSync(
    process.execPath,
    ['--import', 'tsx', 'bench/engine-bench.ts', '--precision', '--sdxl-lightning', '--tiny', '--json', '--threads', '1', '--cache-dir', cacheDir],
    { cwd: root, encoding: 'utf8', timeout: 180_000 },
  );
  assert.equal(r.status, 0, r.stderr);
  const report = JSON.parse(r.stdout.trim().split('\n').at(-1)!) as {
    case: string;
    order: string;
    fp32: Phase;
    calibration: Phase;
    int8: Phase;
    ratios: Record<string, number>;
  };
  assert.match(report.case, /^tiny-sdxl .*64x64, 4 steps Euler, SGM Uniform, CFG 1 /);
  assert.match(report.order, /^sequential/);
  for (const p of [report.fp32, report.int8]) {
    const image = p.image!;
    for (const [k, v] of Object.entries(image)) assert.ok(Number.isFinite(v) && v >= 0, `${p.phase} ${k} = ${v}`);
    assert.ok(image.totalS >= image.decodeS + 4 * image.unetPerStepS * 0.99, `${p.phase}: the image holds its 4 steps and decode`);
    assert.ok(p.processPeakRssGB > 0 && image.sampledPeakRssGB <= p.processPeakRssGB + 0.01);
  }
  assert.deepEqual([report.fp32.phase, report.calibration.phase, report.int8.phase], ['fp32', 'int8-calibration', 'int8']);
  const { unet, vaeDecoder } = report.calibration;
  assert.equal(unet?.evaluations, 4, 'one UNet call per step in the calibration image');
  assert.equal(vaeDecoder?.evaluations, 1);
  assert.ok(unet!.minCosine > 0.99 && vaeDecoder!.minCosine > 0.99);
  for (const v of Object.values(report.ratios)) assert.ok(Number.isFinite(v) && v > 0);
});
