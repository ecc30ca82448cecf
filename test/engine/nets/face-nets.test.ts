// The face-restoration networks against facexlib / GFPGAN / CodeFormer on the tiny-faces fixtures (refs/faces).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { getOrBuildGraph } from '../../../src/engine/onnx/cache.ts';
import { createSession, runSession } from '../../../src/engine/runtime.ts';
import { buildParseNet } from '../../../src/engine/nets/parsenet.ts';
import type { TensorSource } from '../../../src/engine/nets/upscaler-weights.ts';
import { openTensorFile } from '../../../src/engine/weights/tensor-file.ts';
import { SafetensorsFile } from '../../../src/engine/weights/safetensors.ts';
import { assertClose } from '../pipelines/tolerance.ts';

const cache = mkdtempSync(join(tmpdir(), 'kiln-face-nets-'));
test.after(() => rmSync(cache, { recursive: true, force: true }));

function source(file: string): TensorSource {
  const f = openTensorFile(file);
  return { names: () => f.names(), shape: (n) => [...f.entry(n).shape], get: (n) => f.tensor(n) };
}

test('ParseNet: out_mask and out_img match facexlib (atol 1e-4, rtol 1e-3)', async () => {
  const src = source('test/fixtures/tiny-faces/parsenet.safetensors');
  const g = getOrBuildGraph(cache, { network: 'parsenet-test', weightsIdentity: 'tiny-parsenet', precision: 'fp32' }, (b) => buildParseNet(b, src));
  const session = await createSession(g.modelPath, { device: 'cpu', intraOpThreads: 1 });
  const ref = SafetensorsFile.open('test/fixtures/refs/faces/parsenet_forward.safetensors');
  const out = await runSession(session, { image: ref.tensor('input') });
  assert.deepEqual(out.mask!.shape, [1, 19, 64, 64]);
  assertClose(out.mask!.data, ref.tensor('out_mask').data, 1e-4, 1e-3, 'out_mask');
  assertClose(out.image_out!.data, ref.tensor('out_img').data, 1e-4, 1e-3, 'out_img');
});
