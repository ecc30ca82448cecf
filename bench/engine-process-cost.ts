// What running the engine in its own process costs (issue 10): the time from killing the engine process in the
// middle of a generation to the next generation running on a fresh one, the memory of an engine process with
// the tiny SD1 model loaded against the same engine inside the server process (what the old worker thread
// added), and the IPC cost of a 1024x1024 RGB result. Prints numbers; asserts nothing.
//
//   node --import tsx bench/engine-process-cost.ts [--runs N]
import { readFileSync } from 'node:fs';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createEngine, type GenerateRequest } from '../src/engine/index.ts';
import { ProcessEngine } from '../src/queue/engine-process.ts';

const runsFlag = process.argv.indexOf('--runs');
const RUNS = runsFlag > 0 ? Number(process.argv[runsFlag + 1]) : 5;
const ENGINE = fileURLToPath(new URL('../src/engine/index.ts', import.meta.url));
const FAKE = fileURLToPath(new URL('../test/queue/fake-engine.ts', import.meta.url));
const model = { path: fileURLToPath(new URL('../test/fixtures/tiny-sd1', import.meta.url)) };
const cacheDir = mkdtempSync(join(tmpdir(), 'kiln-bench-graphs-'));
const options = { threads: 1, spinning: false, cacheDir };
const request = (steps: number, size = 64): GenerateRequest => ({
  model,
  prompts: ['a cat'],
  width: size,
  height: size,
  steps,
  cfgScale: 7,
  sampler: 'Euler',
  seed: 1,
});

const mb = (bytes: number) => `${(bytes / 2 ** 20).toFixed(0)} MB`;
/** Resident memory of a process (Linux), in bytes. */
function rssOf(pid: number): number {
  const kb = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1];
  return Number(kb ?? 0) * 1024;
}
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? Number.NaN;

// 1. Kill -> next generation running (its first progress event) on a fresh process, models reloaded from the cache.
const serverBefore = process.memoryUsage().rss;
const engine = new ProcessEngine(ENGINE, options);
await engine.start();
await engine.generate(request(1));
const killToRunning: number[] = [];
const killToDone: number[] = [];
for (let i = 0; i < RUNS; i++) {
  let stepped!: () => void;
  const firstStep = new Promise<void>((r) => (stepped = r));
  const long = engine.generate(request(1000), { onProgress: (e) => e.step >= 1 && stepped() });
  await firstStep;
  const t0 = performance.now();
  await engine.kill();
  await long.catch(() => undefined);
  let running = 0;
  await engine.generate(request(1), { onProgress: () => (running ||= performance.now() - t0) });
  killToRunning.push(running);
  killToDone.push(performance.now() - t0);
}
console.log(`kill -> next generation running: median ${median(killToRunning).toFixed(0)} ms (${killToRunning.map((x) => x.toFixed(0)).join(', ')})`);
console.log(`kill -> next 64x64 1-step generation done: median ${median(killToDone).toFixed(0)} ms`);

// 2. Memory: the engine process with the tiny model loaded, and the server process around it.
const childRss = rssOf(engine.pid!);
const serverWith = process.memoryUsage().rss;
await engine.close();
const inProcBefore = process.memoryUsage().rss;
const local = createEngine(options);
await local.load(model);
await local.generate(request(1));
const inProcDelta = process.memoryUsage().rss - inProcBefore;
await local.close();
console.log(`engine process RSS with tiny-sd1 loaded: ${mb(childRss)}`);
console.log(`server process RSS: ${mb(serverBefore)} before the engine process, ${mb(serverWith)} with it running`);
console.log(`the same engine inside the server process (what a worker thread added): +${mb(inProcDelta)}`);
console.log(`extra memory of a process over a thread: about ${mb(childRss - inProcDelta)}`);

// 3. IPC cost of one 1024x1024 RGB image: the fake engine in a process against the same fake in-process.
const fakeProc = new ProcessEngine(FAKE, {});
const fakeLocal = (await import(FAKE)).createEngine() as { generate: ProcessEngine['generate'] };
process.env.KILN_FAKE_STEP_MS = '0';
await fakeProc.generate(request(0, 1024));
const viaIpc: number[] = [];
const inProc: number[] = [];
for (let i = 0; i < RUNS; i++) {
  let t = performance.now();
  await fakeProc.generate(request(0, 1024));
  viaIpc.push(performance.now() - t);
  t = performance.now();
  await fakeLocal.generate(request(0, 1024));
  inProc.push(performance.now() - t);
}
await fakeProc.close();
console.log(
  `1024x1024 RGB result (3 MB): ${median(viaIpc).toFixed(1)} ms through the engine process vs ${median(inProc).toFixed(1)} ms in-process: IPC adds about ${(median(viaIpc) - median(inProc)).toFixed(1)} ms`,
);
rmSync(cacheDir, { recursive: true, force: true });
