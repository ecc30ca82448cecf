// Per-model presets through the real server on tiny-sd1: a preset fills the fields a request leaves out (seen in
// the infotext the engine writes), never the ones it sets, on the native, A1111, OpenAI and seed surfaces alike;
// a bad preset is a start error naming its key.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { buildApp } from '../../src/server/app.ts';
import { loadConfig, testConfig } from '../../src/server/config.ts';
import { readInfotext } from '../../src/storage/encode.ts';
import { tempDir } from '../queue/helpers.ts';

const TINY = fileURLToPath(new URL('../fixtures/tiny-sd1', import.meta.url));

/** Presets as a config file gives them (parsed and checked by loadConfig). */
function presetsFromFile(dir: string, modelPresets: unknown) {
  return loadConfig({ flags: { 'data-dir': dir }, env: {}, file: { modelPresets } }).modelPresets;
}

test('a model preset fills the steps, sampler, CFG and size a request leaves out, on every surface, and not what it sets', async () => {
  const t = tempDir('kiln-presets-');
  const modelPresets = presetsFromFile(t.dir, { 'tiny-*': { steps: 3, sampler: 'DPM++ 2M', cfgScale: 1.5, size: '64x64' }, Other: { steps: 9 } });
  const app = await buildApp(testConfig(t.dir, { model: TINY, modelPresets }));
  try {
    await app.ready();
    await app.kiln.engineReady;
    const nativeInfo = async (payload: object) => {
      const res = await app.inject({ method: 'POST', url: '/v1/generate', payload: { prompt: 'a cat', seed: 5, ...payload } });
      assert.equal(res.statusCode, 200, res.body);
      return (await readInfotext(Buffer.from(res.json().images[0].base64, 'base64')))!;
    };
    assert.match(await nativeInfo({}), /Steps: 3, Sampler: DPM\+\+ 2M, CFG scale: 1\.5, Seed: 5, Size: 64x64/, 'native, all left out');
    assert.match(
      await nativeInfo({ steps: 2, sampler: 'Euler', cfg_scale: 7, width: 64, height: 64 }),
      /Steps: 2, Sampler: Euler, CFG scale: 7, Seed: 5, Size: 64x64/,
      'native, all set',
    );
    assert.match(await nativeInfo({ steps: 2 }), /Steps: 2, Sampler: DPM\+\+ 2M, CFG scale: 1\.5/, 'native, steps set: the rest from the preset');

    // A1111: its schema fills steps 50 and 512x512 before the handler; the preset still sees them as left out.
    const a1111 = async (payload: object) => {
      const res = await app.inject({ method: 'POST', url: '/sdapi/v1/txt2img', payload: { prompt: 'a cat', seed: 5, ...payload } });
      assert.equal(res.statusCode, 200, res.body);
      return JSON.parse(res.json().info).infotexts[0] as string;
    };
    assert.match(await a1111({}), /Steps: 3, Sampler: DPM\+\+ 2M, CFG scale: 1\.5, Seed: 5, Size: 64x64/, 'A1111, all left out');
    assert.match(
      await a1111({ steps: 2, sampler_name: 'Euler', cfg_scale: 7, width: 64, height: 64 }),
      /Steps: 2, Sampler: Euler, CFG scale: 7, Seed: 5, Size: 64x64/,
      'A1111, all set',
    );

    // OpenAI: sd.cpp-style extra args in the prompt count as set.
    const openai = await app.inject({ method: 'POST', url: '/v1/images/generations', payload: { prompt: 'a cat', response_format: 'b64_json' } });
    assert.equal(openai.statusCode, 200, openai.body);
    assert.match((await readInfotext(Buffer.from(openai.json().data[0].b64_json, 'base64')))!, /Steps: 3, Sampler: DPM\+\+ 2M, CFG scale: 1\.5.*Size: 64x64/s);

    // Seed 002 echoes the values the job ran with.
    const seed002 = await app.inject({ method: 'POST', url: '/generate', payload: { prompt: 'a cat' } });
    assert.equal(seed002.statusCode, 200, seed002.body);
    assert.deepEqual([seed002.json().steps, seed002.json().guidance_scale, seed002.json().dimensions], [3, 1.5, '64x64']);
  } finally {
    await app.close();
    t.remove();
  }
});

test('a preset deepCache turns step reuse on for requests that do not set deep_cache, on every surface', async () => {
  const t = tempDir('kiln-presets-dc-');
  const modelPresets = presetsFromFile(t.dir, { 'tiny-sd1': { steps: 4, size: '64x64', deepCache: { interval: 2, branch: 1 } } });
  const app = await buildApp(testConfig(t.dir, { model: TINY, modelPresets }));
  try {
    await app.ready();
    await app.kiln.engineReady;
    const native = async (payload: object) => {
      const res = await app.inject({ method: 'POST', url: '/v1/generate', payload: { prompt: 'a cat', seed: 5, ...payload } });
      assert.equal(res.statusCode, 200, res.body);
      return (await readInfotext(Buffer.from(res.json().images[0].base64, 'base64')))!;
    };
    assert.match(await native({}), /DeepCache interval: 2, DeepCache branch: 1/, 'native, left out');
    assert.doesNotMatch(await native({ deep_cache: { interval: 1 } }), /DeepCache/, 'native, explicitly off');
    assert.match(await native({ deep_cache: { interval: 3 } }), /DeepCache interval: 3, DeepCache branch: 0/, 'native, set');
    const a1111 = await app.inject({ method: 'POST', url: '/sdapi/v1/txt2img', payload: { prompt: 'a cat', seed: 5 } });
    assert.equal(a1111.statusCode, 200, a1111.body);
    assert.match(JSON.parse(a1111.json().info).infotexts[0], /DeepCache interval: 2, DeepCache branch: 1/, 'A1111 cannot send it: the preset applies');
  } finally {
    await app.close();
    t.remove();
  }
  const fileError = (deepCache: unknown) => () => presetsFromFile(t.dir, { fast: { deepCache } });
  assert.throws(fileError({ interval: 11 }), /modelPresets\.fast\.deepCache \(config file\): must be \{"interval": 1-10/);
  assert.throws(fileError({ interval: 2, depth: 1 }), /modelPresets\.fast\.deepCache/);
  assert.throws(fileError(2), /modelPresets\.fast\.deepCache/);
});

test('model presets: an exact name or label wins over a wildcard; bad presets are start errors naming the key', async () => {
  const t = tempDir('kiln-presets-bad-');
  try {
    // Matching: a label (alias) before a wildcard.
    const { presetFor } = await import('../../src/server/model-presets.ts');
    const presets = presetsFromFile(t.dir, { '*turbo*': { steps: 4 }, 'My Turbo': { steps: 6, cfgScale: 1 } });
    assert.equal(presetFor(presets, ['sdxl-turbo', 'My Turbo'])?.key, 'My Turbo');
    assert.equal(presetFor(presets, ['sd-Turbo-v2'])?.key, '*turbo*');
    assert.equal(presetFor(presets, ['sd15']), undefined);

    const fileError = (modelPresets: unknown) => () => presetsFromFile(t.dir, modelPresets);
    assert.throws(fileError({ fast: { size: '100x64' } }), /modelPresets\.fast\.size \(config file\): must be a multiple of 8 from 64 to 2048, got 100/);
    assert.throws(fileError({ fast: { steps: 0 } }), /modelPresets\.fast\.steps \(config file\): must be an integer from 1 to 150/);
    assert.throws(fileError({ fast: { stepz: 4 } }), /modelPresets\.fast\.stepz \(config file\): unknown preset key; did you mean "steps"/);
    assert.throws(fileError({ fast: { cfgScale: 'low' } }), /modelPresets\.fast\.cfgScale/);
    assert.throws(fileError(['x']), /modelPresets \(config file\): must map model names/);
    // Sampler and schedule names are checked against the engine's lists when the server starts.
    await assert.rejects(
      buildApp(testConfig(t.dir, { modelPresets: { fast: { sampler: 'Eular' } } })),
      /modelPresets\.fast\.sampler \(config file\): unknown sampler "Eular"; available: .*Euler/,
    );
    await assert.rejects(
      buildApp(testConfig(t.dir, { modelPresets: { fast: { schedule: 'Karas' } } })),
      /modelPresets\.fast\.schedule .*unknown schedule "Karas"/,
    );
  } finally {
    t.remove();
  }
});
