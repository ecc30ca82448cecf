// A1111's whole restore_with_face_helper on the tiny face networks (refs/faces/a1111_restore_{gfpgan,codeformer}):
// the detector returns the given raw outputs of refs/faces/retinaface_decode (random weights find no real faces),
// everything after it is ours: landmarks, crops, the network, A1111's truncating conversion, the parse mask, paste.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { getOrBuildGraph } from '../../../src/engine/onnx/cache.ts';
import { createSession, runSession } from '../../../src/engine/runtime.ts';
import type { GraphBuilder } from '../../../src/engine/onnx/graph.ts';
import { buildParseNet } from '../../../src/engine/nets/parsenet.ts';
import { buildGfpgan } from '../../../src/engine/nets/gfpgan.ts';
import { buildCodeFormer } from '../../../src/engine/nets/codeformer.ts';
import type { TensorSource } from '../../../src/engine/nets/upscaler-weights.ts';
import { openTensorFile } from '../../../src/engine/weights/tensor-file.ts';
import { SafetensorsFile } from '../../../src/engine/weights/safetensors.ts';
import { restoreFaces, type FaceNets } from '../../../src/engine/pipelines/faces/restore.ts';

const cache = mkdtempSync(join(tmpdir(), 'kiln-face-restore-'));
test.after(() => rmSync(cache, { recursive: true, force: true }));
const FACES = 'test/fixtures/tiny-faces';
const REFS = 'test/fixtures/refs/faces';

function source(file: string): TensorSource {
  const f = openTensorFile(file);
  return { names: () => f.names(), shape: (n) => [...f.entry(n).shape], get: (n) => f.tensor(n) };
}

async function net(name: string, file: string, build: (b: GraphBuilder, s: TensorSource) => void) {
  const src = source(file);
  const g = getOrBuildGraph(cache, { network: name, weightsIdentity: name, precision: 'fp32' }, (b) => build(b, src));
  return createSession(g.modelPath, { device: 'cpu', intraOpThreads: 1 });
}

const decode = SafetensorsFile.open(`${REFS}/retinaface_decode.safetensors`);
const shape512 = [1, 3, 512, 512];

async function nets(restorer: 'gfpgan' | 'codeformer'): Promise<FaceNets & { detectedSizes: string[] }> {
  const parse = await net('parsenet', `${FACES}/parsenet.safetensors`, buildParseNet);
  const restore =
    restorer === 'gfpgan'
      ? await net('gfpgan', `${FACES}/gfpgan-v1.4-tiny.pth`, buildGfpgan)
      : await net('codeformer', `${FACES}/codeformer-tiny.pth`, buildCodeFormer);
  const detectedSizes: string[] = [];
  return {
    detectedSizes,
    detect: async (bgr) => {
      detectedSizes.push(`${bgr.width}x${bgr.height}`);
      return { loc: decode.tensor('loc').data, conf: decode.tensor('conf').data, landms: decode.tensor('landms').data };
    },
    restore: async (input) => {
      const feeds: Record<string, { shape: number[]; data: Float32Array }> = { image: { shape: shape512, data: input } };
      if (restorer === 'codeformer') feeds.weight = { shape: [1], data: Float32Array.of(0.5) };
      return (await runSession(restore, feeds)).restored!.data;
    },
    parse: async (input) => (await runSession(parse, { image: { shape: shape512, data: input } })).mask!.data,
  };
}

function compare(got: Uint8Array, want: Uint8Array, what: string): void {
  assert.equal(got.length, want.length, what);
  let over1 = 0;
  let worst = 0;
  for (let i = 0; i < want.length; i++) {
    const d = Math.abs(got[i]! - want[i]!);
    if (d > 1) over1++;
    worst = Math.max(worst, d);
  }
  assert.ok(worst <= 2 && over1 <= want.length * 0.005, `${what}: worst ${worst}, ${over1} values off by 2`);
}

for (const restorer of ['gfpgan', 'codeformer'] as const) {
  test(`A1111 restore faces with ${restorer}: the restored faces and the image as A1111 returns it`, async () => {
    const ref = SafetensorsFile.open(`${REFS}/a1111_restore_${restorer}.safetensors`);
    const n = await nets(restorer);
    const result = await restoreFaces({ data: ref.readBytes('image_rgb'), width: 200, height: 160, channels: 3 }, n);
    assert.deepEqual(n.detectedSizes, ['800x640'], 'detection runs with the short side at 640');
    assert.equal(result.faces, 2);
    result.restoredFaces.forEach((face, i) => compare(face.data, ref.readBytes(`restored_face_bgr.${i}`), `face ${i}`));
    compare(result.image.data, ref.readBytes('restored_image_rgb'), 'restored image');
  });
}
