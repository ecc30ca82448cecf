// The image-understanding operations across the engine-process boundary (what `kiln serve` runs): results with
// Float32Arrays come back intact, and an input error keeps its class and field.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DEFAULT_ENGINE_MODULE } from '../../src/server/services.ts';
import { ProcessEngine } from '../../src/queue/engine-process.ts';
import { KilnInputError } from '../../src/engine/index.ts';
import { SafetensorsFile } from '../../src/engine/weights/safetensors.ts';
import { FIXTURES } from '../engine/nets/fixture-io.ts';

const tmp = mkdtempSync(join(tmpdir(), 'kiln-vision-process-'));
const engine = new ProcessEngine(DEFAULT_ENGINE_MODULE, { cacheDir: join(tmp, 'graphs'), threads: 1 });
after(async () => {
  await engine.close();
  rmSync(tmp, { recursive: true, force: true });
});

const ref = SafetensorsFile.open(join(FIXTURES, 'refs', 'clip_vision', 'clip_vision.safetensors'));
const image = { data: Uint8Array.from(ref.readFloat32('image_48x40')), width: 48, height: 40, channels: 3 as const };
const clip = { path: join(FIXTURES, 'tiny-clip-vision'), name: 'tiny-clip-vision' };

test('embed-image in the engine process: the CLIP embedding and the VAE latent arrive as float arrays', async () => {
  await engine.start();
  const r = await engine.run('embed-image', { image, clip, model: { path: join(FIXTURES, 'tiny-sd1') }, vaeSize: 16 });
  assert.ok(r.clip instanceof Float32Array && r.clip.length === 16);
  const expected = ref.readFloat32('image_embeds').subarray(0, 16);
  for (let i = 0; i < 16; i++) assert.ok(Math.abs(r.clip[i]! - expected[i]!) < 1e-4);
  assert.deepEqual(r.vaeShape, [4, 8, 8]);
  assert.equal(r.vae!.length, 256);
  await assert.rejects(
    engine.run('interrogate', { image, clip, model: { path: join(FIXTURES, 'tiny-sd1') } }),
    (e: unknown) => e instanceof KilnInputError && e.field === 'clip_model',
  );
});
