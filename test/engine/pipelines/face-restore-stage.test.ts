// The face-restoration stage and the `restore-faces` operation through the engine, on the tiny fixtures. The tiny
// detector has random weights and finds no face (its best score is 0.60 < 0.97), so the pixels stay as they were;
// the restoration itself is tested with given detections in face-restore.test.ts.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createEngine } from '../../../src/engine/engine.ts';
import type { FaceRestoreSettings } from '../../../src/engine/api.ts';

const cacheDir = mkdtempSync(join(tmpdir(), 'kiln-faces-stage-'));
const engine = createEngine({ cacheDir });
after(async () => {
  await engine.close();
  rmSync(cacheDir, { recursive: true, force: true });
});

const FACES = 'test/fixtures/tiny-faces';
const settings: FaceRestoreSettings = {
  model: 'CodeFormer',
  weight: 0.5,
  restorerPath: `${FACES}/codeformer-tiny.pth`,
  detectorPath: `${FACES}/retinaface-mobilenet0.25.safetensors`,
  parserPath: `${FACES}/parsenet.safetensors`,
};
const request = {
  model: { path: 'test/fixtures/tiny-sd1' },
  prompts: ['a portrait'],
  width: 64,
  height: 64,
  steps: 2,
  cfgScale: 7,
  sampler: 'Euler',
  seed: 5,
};

test('restore faces in txt2img: the stage runs, infotext says "Face restoration: CodeFormer" where A1111 puts it', async () => {
  const plain = await engine.generate(request);
  const restored = await engine.generate({ ...request, restoreFaces: settings });
  assert.match(restored.images[0]!.infotext, /Seed: 5, Face restoration: CodeFormer, Size: 64x64/);
  assert.doesNotMatch(plain.images[0]!.infotext, /Face restoration/);
  assert.deepEqual(restored.images[0]!.image.data, plain.images[0]!.image.data, 'no face found: the image is unchanged');
});

test('restore faces: missing weights and bad settings are input errors naming the field and the file', async () => {
  await assert.rejects(engine.generate({ ...request, restoreFaces: { ...settings, restorerPath: `${FACES}/nope.pth` } }), (e: Error & { field?: string }) => {
    assert.equal(e.field, 'restore_faces');
    assert.match(e.message, /nope\.pth/);
    return true;
  });
  await assert.rejects(engine.generate({ ...request, restoreFaces: { ...settings, weight: 2 } }), /restore_faces\.weight must be a number from 0 to 1/);
  await assert.rejects(engine.generate({ ...request, restoreFaces: { ...settings, model: 'Other' as 'GFPGAN' } }), /"CodeFormer" or "GFPGAN"/);
});

test('the restore-faces operation (Extras) with GFPGAN returns the image and the number of faces', async () => {
  const image = { data: new Uint8Array(48 * 40 * 3).map((_, i) => (i * 7) % 256), width: 48, height: 40, channels: 3 as const };
  const out = await engine.run('restore-faces', {
    image,
    settings: { ...settings, model: 'GFPGAN', restorerPath: `${FACES}/gfpgan-v1.4-tiny.pth`, visibility: 0.5 },
  });
  assert.equal(out.faces, 0);
  assert.deepEqual(out.image.data, image.data);
});
