// Idle unloading through the real server: the worker-thread engine frees the model after --idle-unload,
// /buffer_status (seed 003) reports it truthfully, and the next job reloads it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { buildApp } from '../../src/server/app.ts';
import { loadConfig, testConfig } from '../../src/server/config.ts';
import { tempDir } from '../queue/helpers.ts';
import { waitUntil } from './process.ts';

const TINY = fileURLToPath(new URL('../fixtures/tiny-sd1', import.meta.url));

test('an idle model is freed, reported by /buffer_status, and reloaded by the next job', async () => {
  const t = tempDir('kiln-idle-');
  const app = await buildApp(testConfig(t.dir, { model: TINY, idleUnloadMs: 300 }));
  try {
    await app.ready();
    await app.kiln.engineReady;
    const status = async () => (await app.inject('/buffer_status')).json();
    assert.deepEqual((await status()).loaded_models, ['tiny-sd1'], 'the default model is warmed up');
    await waitUntil(async () => ((await status()).loaded_models.length === 0 ? true : undefined), 5000, 'the idle unload');
    assert.equal((await status()).loaded, false);
    const gen = await app.inject({ method: 'POST', url: '/v1/generate', payload: { prompt: 'a cat', width: 64, height: 64, steps: 2 } });
    assert.equal(gen.statusCode, 200, gen.body);
    assert.deepEqual((await status()).loaded_models, ['tiny-sd1'], 'reloaded for the job');
  } finally {
    await app.close();
    t.remove();
  }
});

test("idle unload defaults to seed 003's 10-minute buffer timeout, and /ready stays true while a model is unloaded", async () => {
  const t = tempDir('kiln-idle-default-');
  try {
    assert.equal(loadConfig({ flags: { 'data-dir': t.dir }, env: {} }).idleUnloadMs, 600_000);
    assert.equal(loadConfig({ flags: { 'data-dir': t.dir, 'idle-unload': '0' }, env: {} }).idleUnloadMs, 0, '--idle-unload 0 keeps models loaded');
    const defaults = await buildApp(testConfig(t.dir, {}));
    try {
      assert.equal((await defaults.inject('/buffer_status')).json().idle_unload_s, 600, 'seed 003 reports the default');
    } finally {
      await defaults.close();
    }
    const app = await buildApp(testConfig(t.dir, { model: TINY, idleUnloadMs: 300 }));
    try {
      await app.ready();
      await app.kiln.engineReady;
      await waitUntil(async () => ((await app.inject('/buffer_status')).json().loaded_models.length === 0 ? true : undefined), 5000, 'the idle unload');
      const ready = await app.inject('/ready');
      assert.equal(ready.statusCode, 200, `an unloaded model reloads on demand, so the server stays ready: ${ready.body}`);
    } finally {
      await app.close();
    }
  } finally {
    t.remove();
  }
});
