// The engine's model memory: idle models are freed (and reload on demand), at most N stay loaded, and
// every change is reported.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { createEngine, type LoadedModelInfo } from '../../src/engine/index.ts';
import type { GenerateRequest } from '../../src/engine/api.ts';

const req = (path: string): GenerateRequest => ({
  model: { path },
  prompts: ['a cat'],
  width: 64,
  height: 64,
  steps: 2,
  cfgScale: 7,
  sampler: 'Euler',
  seed: 3,
});

test('an idle model is freed after idleUnloadMs, reported, and reloads for the next job', async () => {
  const cacheDir = mkdtempSync(join(tmpdir(), 'kiln-idle-'));
  const reports: string[][] = [];
  const engine = createEngine({ cacheDir, idleUnloadMs: 150, onModelsChanged: (m: LoadedModelInfo[]) => reports.push(m.map((x) => x.name)) });
  try {
    // 30 steps take well over 150 ms: the model must not be freed while a generation uses it.
    const first = await engine.generate({ ...req('test/fixtures/tiny-sd1'), steps: 30 });
    assert.deepEqual(
      engine.loadedModels().map((m) => m.name),
      ['tiny-sd1'],
    );
    await sleep(1000);
    assert.deepEqual(engine.loadedModels(), [], 'freed after being idle');
    assert.deepEqual(reports, [['tiny-sd1'], []]);
    const again = await engine.generate({ ...req('test/fixtures/tiny-sd1'), steps: 30 });
    assert.deepEqual(Buffer.from(again.images[0]!.image.data), Buffer.from(first.images[0]!.image.data), 'the reloaded model gives the same image');
  } finally {
    await engine.close();
    rmSync(cacheDir, { recursive: true, force: true });
  }
});

test('loading more than maxLoadedModels frees the least recently used', async () => {
  const cacheDir = mkdtempSync(join(tmpdir(), 'kiln-lru-'));
  const engine = createEngine({ cacheDir, maxLoadedModels: 1 });
  try {
    await engine.generate(req('test/fixtures/tiny-sd1'));
    await engine.generate(req('test/fixtures/tiny-sd2'));
    assert.deepEqual(
      engine.loadedModels().map((m) => m.family),
      ['sd2'],
    );
  } finally {
    await engine.close();
    rmSync(cacheDir, { recursive: true, force: true });
  }
});
