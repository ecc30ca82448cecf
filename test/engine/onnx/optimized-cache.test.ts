import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { buildVaeDecoder, vaeDecoderGraphOptions } from '../../../src/engine/nets/vae.ts';
import { getOrBuildGraph, OPTIMIZED_MODEL, OPTIMIZED_WEIGHTS, optimizedEntry } from '../../../src/engine/onnx/cache.ts';
import { openSession, runSession, type SessionOptions } from '../../../src/engine/runtime.ts';
import type { Tensor } from '../../../src/engine/tensor.ts';
import { fixtureModel, ref } from '../nets/fixture-io.ts';

// The tiny VAE decoder: convolutions (which 'all' level turns into NCHWc layouts), group norms, attention.
const CPU: SessionOptions = { device: 'cpu', intraOpThreads: 1 };

async function freshGraph(): Promise<{ modelPath: string; cleanup: () => void }> {
  const cacheDir = mkdtempSync(join(tmpdir(), 'kiln-optcache-'));
  const m = await fixtureModel('tiny-sd1');
  const { modelPath } = getOrBuildGraph(
    cacheDir,
    { network: 'vae-decoder', weightsIdentity: 'tiny-sd1', precision: 'fp32', options: vaeDecoderGraphOptions({}) },
    (b) => buildVaeDecoder(b, m.vae, m.vaeConfig),
  );
  return { modelPath, cleanup: () => rmSync(cacheDir, { recursive: true, force: true }) };
}

async function decode(modelPath: string, opts: SessionOptions) {
  const opened = await openSession(modelPath, opts);
  const { image } = await runSession(opened.session, { latent: ref('sd1/vae').float('decode_input_latent') });
  await opened.session.release();
  return { ...opened, image: image! };
}

/** The one optimised entry beside the graph (its folder name depends on this machine). */
function entryDir(modelPath: string): string {
  const dirs = readdirSync(dirname(modelPath)).filter((d) => d.startsWith('optimized-'));
  assert.equal(dirs.length, 1, `expected one optimised entry, found ${dirs.join(', ') || 'none'}`);
  return join(dirname(modelPath), dirs[0]!);
}

function assertIdentical(a: Tensor, b: Tensor, what: string): void {
  assert.deepEqual(a.shape, b.shape, `${what} shape`);
  for (let i = 0; i < a.data.length; i++) {
    if (!Object.is(a.data[i], b.data[i])) assert.fail(`${what}: element ${i} differs: ${a.data[i]} vs ${b.data[i]}`);
  }
}

test('second session creation loads the cached optimised model, with outputs identical to the plain session', async () => {
  const g = await freshGraph();
  try {
    const plain = await decode(g.modelPath, CPU);
    assert.equal(plain.optimized, 'off');
    assert.equal(
      readdirSync(dirname(g.modelPath)).some((d) => d.startsWith('optimized-')),
      false,
      'no cache unless asked for',
    );

    const first = await decode(g.modelPath, { ...CPU, cacheOptimized: true });
    assert.equal(first.optimized, 'saved');
    const dir = entryDir(g.modelPath);
    for (const f of [OPTIMIZED_MODEL, OPTIMIZED_WEIGHTS, 'complete', 'environment.json']) assert.ok(existsSync(join(dir, f)), `${f} in the entry`);
    assert.ok(statSync(join(dir, OPTIMIZED_WEIGHTS)).size > 0, 'large initializers go to the external file');

    const second = await decode(g.modelPath, { ...CPU, cacheOptimized: true });
    assert.equal(second.optimized, 'loaded');
    assert.equal(second.rejected, undefined);
    assertIdentical(first.image, plain.image, 'session that saved the entry');
    assertIdentical(second.image, plain.image, 'session loaded from the entry');
  } finally {
    g.cleanup();
  }
});

for (const [what, corrupt] of [
  ['garbage model.onnx', (dir: string) => writeFileSync(join(dir, OPTIMIZED_MODEL), 'not a protobuf at all')],
  ['truncated weights.bin', (dir: string) => truncateSync(join(dir, OPTIMIZED_WEIGHTS), 100)],
] as [string, (dir: string) => void][]) {
  test(`a corrupt optimised entry (${what}) falls back to the plain model and is rewritten`, async () => {
    const g = await freshGraph();
    try {
      const plain = await decode(g.modelPath, CPU);
      assert.equal((await decode(g.modelPath, { ...CPU, cacheOptimized: true })).optimized, 'saved');
      corrupt(entryDir(g.modelPath));

      const fallback = await decode(g.modelPath, { ...CPU, cacheOptimized: true });
      assert.ok(fallback.rejected, 'the refused entry is reported');
      assert.equal(fallback.optimized, 'saved', 'the entry is rebuilt from the plain model');
      assertIdentical(fallback.image, plain.image, 'fallback session');

      const again = await decode(g.modelPath, { ...CPU, cacheOptimized: true });
      assert.equal(again.optimized, 'loaded');
      assertIdentical(again.image, plain.image, 'rewritten entry');
    } finally {
      g.cleanup();
    }
  });
}

test('an entry that a previous process died loading (its marker outlived it) is rebuilt; a live loader is no reason', async () => {
  const g = await freshGraph();
  try {
    const plain = await decode(g.modelPath, CPU);
    assert.equal((await decode(g.modelPath, { ...CPU, cacheOptimized: true })).optimized, 'saved');
    const dir = entryDir(g.modelPath);
    assert.deepEqual(
      readdirSync(dir).filter((f) => f.startsWith('loading-')),
      [],
      'no marker left after a load',
    );

    writeFileSync(join(dir, `loading-${process.ppid}`), ''); // a process that is alive and may be loading right now
    const shared = await decode(g.modelPath, { ...CPU, cacheOptimized: true });
    assert.equal(shared.optimized, 'loaded');
    assert.deepEqual(
      readdirSync(dir).filter((f) => f.startsWith('loading-')),
      [`loading-${process.ppid}`],
      'only our own marker is removed',
    );
    rmSync(join(dir, `loading-${process.ppid}`));

    const dead = spawnSync(process.execPath, ['-e', '']).pid; // exited by now
    writeFileSync(join(dir, `loading-${dead}`), '');
    const rebuilt = await decode(g.modelPath, { ...CPU, cacheOptimized: true });
    assert.match(rebuilt.rejected ?? '', /crashed while loading/);
    assert.equal(rebuilt.optimized, 'saved');
    assertIdentical(rebuilt.image, plain.image, 'session after the crashed entry');
    assert.equal((await decode(g.modelPath, { ...CPU, cacheOptimized: true })).optimized, 'loaded');
  } finally {
    g.cleanup();
  }
});

test("saving an entry deletes the ones this machine made with another onnxruntime, not other machines' ones", async () => {
  const g = await freshGraph();
  try {
    assert.equal((await decode(g.modelPath, { ...CPU, cacheOptimized: true })).optimized, 'saved');
    const dir = entryDir(g.modelPath);
    const env = JSON.parse(readFileSync(join(dir, 'environment.json'), 'utf8')) as Record<string, string>;
    const sibling = (name: string, e: Record<string, string>) => {
      const d = join(dirname(g.modelPath), name);
      mkdirSync(d);
      writeFileSync(join(d, 'environment.json'), JSON.stringify(e));
      writeFileSync(join(d, 'complete'), '');
      return d;
    };
    const olderRuntime = sibling('optimized-0000000000000001', { ...env, onnxruntime: '0.0.1' });
    const otherMachine = sibling('optimized-0000000000000002', { ...env, onnxruntime: '0.0.1', cpuFeatures: 'elsewhere' });
    const busy = sibling('optimized-0000000000000003', { ...env, onnxruntime: '0.0.2' });
    writeFileSync(join(busy, `loading-${process.ppid}`), '');

    rmSync(dir, { recursive: true }); // the next start saves again
    assert.equal((await decode(g.modelPath, { ...CPU, cacheOptimized: true })).optimized, 'saved');
    assert.equal(existsSync(olderRuntime), false, 'superseded entry deleted');
    assert.equal(existsSync(otherMachine), true, "another machine's entry kept");
    assert.equal(existsSync(busy), true, 'an entry being loaded is kept');
  } finally {
    g.cleanup();
  }
});

test('an entry without its completion marker (a crash mid-write) is never loaded', async () => {
  const g = await freshGraph();
  try {
    const entry = optimizedEntry(g.modelPath, { any: 'environment' });
    assert.equal(entry.ready, false);
    mkdirSync(entry.dir);
    writeFileSync(entry.modelPath, 'half written');
    assert.equal(optimizedEntry(g.modelPath, { any: 'environment' }).ready, false);
    assert.notEqual(optimizedEntry(g.modelPath, { any: 'other machine' }).dir, entry.dir, 'another environment, another entry');
    // The real environment's entry is a different folder again; it gets written and loaded normally.
    assert.equal((await decode(g.modelPath, { ...CPU, cacheOptimized: true })).optimized, 'saved');
    assert.equal((await decode(g.modelPath, { ...CPU, cacheOptimized: true })).optimized, 'loaded');
  } finally {
    g.cleanup();
  }
});
