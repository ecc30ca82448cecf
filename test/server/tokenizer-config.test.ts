// A single-file checkpoint carries no tokenizer: `--tokenizer DIR` (config field `tokenizer`) supplies one.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, symlinkSync } from 'node:fs';
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

test("without --tokenizer, the server fetches a single file's CLIP tokenizer into the HF cache with the one downloader, once", async () => {
  const { startHubServer } = await import('../download/hub-server.ts');
  const files = Object.fromEntries(['vocab.json', 'merges.txt'].map((f) => [f, readFileSync(resolve('test/fixtures/tiny-sd1/tokenizer', f))]));
  const hub = await startHubServer({ 'openai/clip-vit-large-patch14': { commit: 'd'.repeat(40), files } });
  const t = tempDir('kiln-tok-fetch-');
  const ckpt = join(t.dir, 'models', 'checkpoints');
  mkdirSync(ckpt, { recursive: true });
  symlinkSync(resolve('test/fixtures/tiny-sd1.safetensors'), join(ckpt, 'tiny-single.safetensors'));
  const config = testConfig(t.dir, { model: 'tiny-single', hfEndpoint: hub.url });
  const app = await buildApp(config);
  try {
    await app.ready();
    await app.kiln.engineReady;
    const ready = await app.inject('/ready');
    assert.equal(ready.statusCode, 200, ready.body);
    const snapshot = join(config.hfCacheDir, 'models--openai--clip-vit-large-patch14', 'snapshots', 'd'.repeat(40));
    assert.deepEqual(readFileSync(join(snapshot, 'vocab.json')), files['vocab.json'], 'in the standard cache layout');
    const fetched = hub.requests.filter((r) => r.method === 'GET' && r.url.includes('/resolve/')).length;
    const r = await app.inject({ method: 'POST', url: '/v1/generate', payload: { prompt: 'a red apple', width: 64, height: 64, steps: 2 } });
    assert.equal(r.statusCode, 200, r.body);
    assert.equal(hub.requests.filter((x) => x.method === 'GET' && x.url.includes('/resolve/')).length, fetched, 'the job found them cached');
  } finally {
    await app.close();
    await hub.close();
    t.remove();
  }
  // Offline, nothing is fetched and the error says what to put where.
  const t2 = tempDir('kiln-tok-offline-');
  mkdirSync(join(t2.dir, 'models', 'checkpoints'), { recursive: true });
  symlinkSync(resolve('test/fixtures/tiny-sd1.safetensors'), join(t2.dir, 'models', 'checkpoints', 'tiny-single.safetensors'));
  const offline = await buildApp(testConfig(t2.dir, { model: 'tiny-single', offline: true }));
  try {
    await offline.ready();
    await offline.kiln.engineReady;
    const ready = await offline.inject('/ready');
    assert.equal(ready.statusCode, 503);
    assert.match(ready.json().reason, /clip-l tokenizer is missing.*openai\/clip-vit-large-patch14\/resolve\/main\/vocab\.json.*--tokenizer/s);
  } finally {
    await offline.close();
    t2.remove();
  }
});
