import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { EngineCrashError, type EngineRestart, ProcessEngine } from '../../src/queue/engine-process.ts';
import { KilnInputError, type GenerateRequest, type OpName } from '../../src/engine/index.ts';

const FAKE = fileURLToPath(new URL('./fake-engine.ts', import.meta.url));

function request(prompt: string, steps: number): GenerateRequest {
  return { model: { path: 'x' }, prompts: [prompt], width: 64, height: 64, steps, cfgScale: 7, sampler: 'Euler', seed: 5 };
}

test('a blocking engine in the engine process leaves the server thread free; results and progress come back', async () => {
  process.env.KILN_FAKE_BLOCKING = '1';
  process.env.KILN_FAKE_STEP_MS = '30';
  const engine = new ProcessEngine(FAKE);
  try {
    const lists = await engine.start();
    assert.equal((lists.samplers as Array<{ name: string }>)[0]!.name, 'Euler');
    let progress = 0;
    const gen = engine.generate(request('a', 10), { onProgress: () => progress++ });
    // While the worker busy-waits for ~300 ms, main-thread timers must keep firing on time.
    const lags: number[] = [];
    for (let i = 0; i < 20; i++) {
      const t0 = performance.now();
      await new Promise((r) => setTimeout(r, 5));
      lags.push(performance.now() - t0 - 5);
    }
    const result = await gen;
    assert.ok(Math.max(...lags) < 25, `main thread stalled ${Math.max(...lags).toFixed(1)} ms`);
    assert.equal(progress, 11);
    assert.equal(result.images[0]!.seed, 5);
    assert.equal(result.images[0]!.image.data.length, 64 * 64 * 3);
  } finally {
    await engine.close();
    delete process.env.KILN_FAKE_BLOCKING;
  }
});

test('abort reaches a blocking engine within one step; engine errors keep their class and field', async () => {
  process.env.KILN_FAKE_BLOCKING = '1';
  process.env.KILN_FAKE_STEP_MS = '30';
  const engine = new ProcessEngine(FAKE);
  try {
    const controller = new AbortController();
    let last = 0;
    let atAbort = -1;
    const gen = engine.generate(request('a', 100), {
      signal: controller.signal,
      onProgress: (e) => {
        last = e.step;
        if (e.step === 3 && atAbort < 0) {
          atAbort = 3;
          controller.abort();
        }
      },
    });
    await assert.rejects(gen, { name: 'AbortError' });
    assert.ok(last <= atAbort + 2, `ran to step ${last} after abort at ${atAbort}`);
    await assert.rejects(engine.generate(request('[input-error]', 2), {}), (e: unknown) => e instanceof KilnInputError && e.field === 'sampler');
    const ok = await engine.generate(request('b', 2), {});
    assert.equal(ok.images.length, 1, 'the worker is usable after an abort and an error');
  } finally {
    await engine.close();
    delete process.env.KILN_FAKE_BLOCKING;
  }
});

test('an engine process that is killed mid-generation fails that call and a fresh process serves the next', async () => {
  process.env.KILN_FAKE_STEP_MS = '20';
  const engine = new ProcessEngine(FAKE);
  try {
    const gen = engine.generate(request('[ignore-abort]', 100), {});
    await new Promise((r) => setTimeout(r, 200));
    await engine.kill();
    await assert.rejects(gen, /exited/);
    const ok = await engine.generate(request('b', 2), {});
    assert.equal(ok.images.length, 1);
  } finally {
    await engine.close();
  }
});

test('a module without createEngine fails start() with a clear message', async () => {
  const engine = new ProcessEngine(fileURLToPath(new URL('./helpers.ts', import.meta.url)));
  await assert.rejects(engine.start(), /does not export createEngine/);
  await engine.close();
});

test('any engine operation travels by name through the same messages; an unknown one keeps its error class', async () => {
  const engine = new ProcessEngine(FAKE);
  try {
    const info = await engine.run('load', { path: 'some/model' });
    assert.equal(info.path, 'some/model');
    assert.equal(info.family, 'sd1');
    await assert.rejects(engine.run('caption' as OpName, {} as never), (e: unknown) => e instanceof KilnInputError && e.field === 'op');
    const ok = await engine.run('generate', request('c', 2));
    assert.equal(ok.images[0]!.image.data.length, 64 * 64 * 3, 'image buffers arrive whole');
  } finally {
    await engine.close();
  }
});

test('an engine process that crashes (killed from outside) fails the running call with EngineCrashError and is replaced at once', async () => {
  process.env.KILN_FAKE_STEP_MS = '20';
  const engine = new ProcessEngine(FAKE);
  try {
    await engine.start();
    const firstPid = engine.pid!;
    const restarted = new Promise<EngineRestart>((resolve) => {
      engine.onRestart = resolve;
    });
    const gen = engine.generate(request('a', 100), {});
    await new Promise((r) => setTimeout(r, 200));
    process.kill(firstPid, 'SIGKILL');
    await assert.rejects(gen, (e: unknown) => e instanceof EngineCrashError && e.signal === 'SIGKILL');
    // The replacement starts without waiting for a call, so the next job finds it ready.
    const restart = await restarted;
    assert.equal(restart.reason, 'crash');
    assert.equal(engine.starts, 2);
    assert.notEqual(engine.pid, firstPid);
    const ok = await engine.generate(request('b', 2), {});
    assert.equal(ok.images.length, 1);
  } finally {
    await engine.close();
  }
  assert.equal(engine.pid, undefined, 'close() leaves no engine process behind');
});
