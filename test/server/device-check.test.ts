// `--device cuda` without a working CUDA provider fails the start with the reason (it used to start, report
// /ready, and fail every job). The real engine process runs the device-check operation at start; on this CPU
// machine the CUDA provider library is absent, so the start must end with exit 1 and one line naming it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createEngine } from '../../src/engine/index.ts';
import { tempDir } from '../queue/helpers.ts';

const BIN = fileURLToPath(new URL('../../bin/kiln.js', import.meta.url));
const TINY = fileURLToPath(new URL('../fixtures/tiny-sd1', import.meta.url));
const ortDir = dirname(createRequire(import.meta.url).resolve('onnxruntime-node/package.json'));
const hasCudaProvider = existsSync(join(ortDir, 'bin', 'napi-v6', process.platform, process.arch, 'libonnxruntime_providers_cuda.so'));

test('device-check runs a one-op graph on the CPU provider', async () => {
  const engine = createEngine();
  try {
    assert.deepEqual(await engine.run('device-check', { device: 'cpu' }), { device: 'cpu', providers: ['cpu'] });
  } finally {
    await engine.close();
  }
});

test('kiln serve --device cuda without the CUDA provider exits 1 at start, naming the provider and the fix', {
  skip: hasCudaProvider && 'CUDA provider installed here',
}, async () => {
  const t = tempDir('kiln-cuda-');
  try {
    const child = spawn(process.execPath, [BIN, 'serve', '--log-level', 'fatal', '--port', '0', '--data-dir', t.dir, '--model', TINY, '--device', 'cuda'], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    const code = await new Promise<number | null>((resolve, reject) => {
      const timer = setTimeout(() => {
        child.kill('SIGKILL');
        reject(new Error(`kiln serve --device cuda did not exit within 90 s:\n${stderr}`));
      }, 90_000);
      child.once('exit', (c) => {
        clearTimeout(timer);
        resolve(c);
      });
    });
    assert.equal(code, 1, stderr);
    assert.match(
      stderr,
      /^kiln: the engine failed to start: could not start the cuda execution provider \(.*\)\. Install onnxruntime-node's GPU binaries \(see README "GPU"\) or use --device cpu\./m,
    );
  } finally {
    t.remove();
  }
});
