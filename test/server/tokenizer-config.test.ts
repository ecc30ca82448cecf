// A single-file checkpoint carries no tokenizer: `--tokenizer DIR` (config field `tokenizer`) supplies one.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, symlinkSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { buildApp } from '../../src/server/app.ts';
import { testConfig } from '../../src/server/config.ts';
import { createEngine } from '../../src/engine/engine.ts';
import { tempDir } from '../queue/helpers.ts';

test('a single-file checkpoint generates with the configured tokenizer folder', async () => {
  const t = tempDir('kiln-tok-');
  const ckpt = join(t.dir, 'models', 'checkpoints');
  mkdirSync(ckpt, { recursive: true });
  symlinkSync(resolve('test/fixtures/tiny-sd1.safetensors'), join(ckpt, 'tiny-single.safetensors'));
  const engine = createEngine({ cacheDir: join(t.dir, 'graphs') });
  const app = await buildApp(testConfig(t.dir, { model: 'tiny-single', tokenizer: resolve('test/fixtures/tiny-sd1') }), { engine: engine as never });
  try {
    await app.ready();
    await app.kiln.engineReady;
    assert.equal((await app.inject('/ready')).statusCode, 200);
    const r = await app.inject({ method: 'POST', url: '/v1/generate', payload: { prompt: 'a red apple', width: 64, height: 64, steps: 2 } });
    assert.equal(r.statusCode, 200, r.body);
  } finally {
    await app.close();
    await engine.close();
    t.remove();
  }
});
