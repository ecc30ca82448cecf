// /v1/models reports each checkpoint's family (from its headers), so clients can tell SD1 from SDXL.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { startTestServer } from './helpers.ts';
import { tempDir } from '../queue/helpers.ts';

test('the models endpoint lists SD1, SD2 and SDXL checkpoints with their family and prediction type', async () => {
  const t = tempDir('kiln-family-');
  const ckpt = join(t.dir, 'models', 'checkpoints');
  mkdirSync(ckpt, { recursive: true });
  symlinkSync(resolve('test/fixtures/tiny-sd1.safetensors'), join(ckpt, 'tiny-sd1.safetensors'));
  symlinkSync(resolve('test/fixtures/tiny-sd2'), join(ckpt, 'tiny-sd2'));
  symlinkSync(resolve('test/fixtures/tiny-sdxl'), join(ckpt, 'tiny-sdxl'));
  writeFileSync(join(ckpt, 'broken.safetensors'), 'not a model');
  const s = await startTestServer({}, { dir: t.dir });
  try {
    const models = (await s.app.inject('/v1/models')).json().models as { name: string; family: string | null; prediction: string | null; problem?: string }[];
    const by = Object.fromEntries(models.map((m) => [m.name, m]));
    assert.equal(by['tiny-sd1']!.family, 'sd1');
    assert.equal(by['tiny-sd1']!.prediction, 'epsilon');
    assert.equal(by['tiny-sd2']!.family, 'sd2');
    assert.equal(by['tiny-sd2']!.prediction, 'v_prediction');
    assert.equal(by['tiny-sdxl']!.family, 'sdxl');
    assert.equal(by.broken!.family, null);
    assert.match(by.broken!.problem!, /broken\.safetensors/);
  } finally {
    await s.close();
    t.remove();
  }
});
