// Face restoration's detection post-processing and geometry against facexlib 0.3.0 + OpenCV 4.6 (fixtures
// refs/faces/retinaface_decode and helper_align_paste): priors, decode, threshold, NMS, the eye-distance filter, the
// similarity to the 512 template and its inverse, and the 512x512 crops.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { SafetensorsFile } from '../../../src/engine/weights/safetensors.ts';
import { decodeBoxes, detectionsFromRaw, faceLandmarks, priorBoxes } from '../../../src/engine/pipelines/faces/detect.ts';
import { FACE_TEMPLATE_512, invertAffine, similarityTransform, warpAffine8 } from '../../../src/engine/pipelines/faces/align.ts';
import { gaussianBlur64, pasteFaces } from '../../../src/engine/pipelines/faces/paste.ts';

const dir = 'test/fixtures/refs/faces';
const open = (name: string) => ({
  json: JSON.parse(readFileSync(`${dir}/${name}.json`, 'utf8')),
  file: SafetensorsFile.open(`${dir}/${name}.safetensors`),
});

test('RetinaFace: priors, decoded boxes, detections (threshold 0.97, NMS 0.4) and landmarks as facexlib', () => {
  const { file } = open('retinaface_decode');
  const t = (k: string) => file.tensor(k).data;
  const priors = priorBoxes(640, 800);
  const refPriors = t('priors');
  assert.equal(priors.length, refPriors.length);
  for (let i = 0; i < priors.length; i++) assert.ok(Math.abs(priors[i]! - refPriors[i]!) <= 1e-6 * Math.abs(refPriors[i]!), `prior ${i}`);

  const boxes = decodeBoxes(t('loc'), priors);
  const refBoxes = t('decoded_boxes');
  const frame = [800, 640, 800, 640];
  for (let i = 0; i < boxes.length; i++) assert.ok(Math.abs(boxes[i]! * frame[i % 4]! - refBoxes[i]!) <= 1e-3, `decoded box value ${i}`);

  const rows = detectionsFromRaw({ loc: t('loc'), conf: t('conf'), landms: t('landms') }, 800, 640);
  const refRows = t('detections');
  assert.equal(rows.length, 3, 'two faces and the tiny one pass score and NMS');
  rows.forEach((row, r) =>
    row.forEach((v, k) => assert.ok(Math.abs(v - refRows[r * 15 + k]!) <= 1e-3, `detection ${r}[${k}]: ${v} vs ${refRows[r * 15 + k]}`)),
  );

  const faces = faceLandmarks(rows, 0.25);
  const refLandmarks = t('landmarks');
  assert.equal(faces.length, 2, 'the 4-px-eye face is dropped');
  faces.forEach((face, n) =>
    face.landmarks.forEach(([x, y], k) => {
      assert.ok(Math.abs(x - refLandmarks[n * 10 + 2 * k]!) <= 1e-3 && Math.abs(y - refLandmarks[n * 10 + 2 * k + 1]!) <= 1e-3, `face ${n} point ${k}`);
    }),
  );
});

test('alignment: the similarity to the 512 template, its inverse, and the warped 512x512 crops as OpenCV', () => {
  const { json, file } = open('helper_align_paste');
  const landmarks = file.tensor('landmarks').data;
  const image = file.readBytes('image_rgb');
  // The helper works on BGR.
  const bgr = new Uint8Array(image.length);
  for (let p = 0; p < image.length; p += 3) bgr.set([image[p + 2]!, image[p + 1]!, image[p]!], p);
  const src = { data: bgr, width: 200, height: 160, channels: 3 };
  for (let n = 0; n < 2; n++) {
    const points = [0, 1, 2, 3, 4].map((k) => [landmarks[n * 10 + 2 * k]!, landmarks[n * 10 + 2 * k + 1]!] as [number, number]);
    const m = similarityTransform(points, FACE_TEMPLATE_512);
    m.flat().forEach((v, k) => assert.ok(Math.abs(v - json.affine_matrices[n].flat()[k]) <= 2e-5, `affine ${n}[${k}]`));
    invertAffine(m)
      .flat()
      .forEach((v, k) => assert.ok(Math.abs(v - json.inverse_affine_matrices[n].flat()[k]) <= 2e-5, `inverse ${n}[${k}]`));
    // Warp with the reference's own matrix, so the fixed-point sampling is what is compared.
    const crop = warpAffine8(src, json.affine_matrices[n], 512, 512, [135, 133, 132]);
    const ref = file.readBytes(`cropped_bgr.${n}`);
    let off = 0;
    let worst = 0;
    for (let i = 0; i < ref.length; i++) {
      const d = Math.abs(crop.data[i]! - ref[i]!);
      if (d) off++;
      worst = Math.max(worst, d);
    }
    assert.ok(worst <= 1 && off <= ref.length * 0.001, `crop ${n}: ${off} values off, worst ${worst}`);
    // With our own fit the crop still agrees (the matrices differ by ~1e-5).
    const own = warpAffine8(src, m, 512, 512, [135, 133, 132]);
    let ownOff = 0;
    for (let i = 0; i < ref.length; i++) if (Math.abs(own.data[i]! - ref[i]!) > 1) ownOff++;
    assert.ok(ownOff <= ref.length * 0.01, `crop ${n} with the fitted matrix: ${ownOff} values off by more than 1`);
  }
});

test('paste-back through the parse mask: warped faces, soft masks and the blended image as facexlib + OpenCV', () => {
  const { json, file } = open('helper_align_paste');
  const image = file.readBytes('image_rgb');
  const bgr = new Uint8Array(image.length);
  for (let p = 0; p < image.length; p += 3) bgr.set([image[p + 2]!, image[p + 1]!, image[p]!], p);
  // The reference's stand-in "restored" faces: the crops shifted per BGR channel.
  const shifts = [
    [20, -12, 6],
    [-16, 10, -4],
  ];
  const faces = [0, 1].map((n) => {
    const crop = file.readBytes(`cropped_bgr.${n}`);
    const face = crop.map((v, i) => Math.min(255, Math.max(0, v + shifts[n]![i % 3]!)));
    return { face: { data: face, width: 512, height: 512, channels: 3 }, affine: json.affine_matrices[n], classes: file.readBytes(`parse_argmax.${n}`) };
  });
  const { image: pasted, masks } = pasteFaces({ data: bgr, width: 200, height: 160, channels: 3 }, faces);
  masks.forEach((mask, n) => {
    const ref = file.tensor(`inv_soft_mask_parse.${n}`).data;
    let worst = 0;
    for (let i = 0; i < ref.length; i++) worst = Math.max(worst, Math.abs(mask[i]! - ref[i]!));
    assert.ok(worst <= 1e-3, `mask ${n}: worst ${worst}`);
  });
  const back = warpAffine8(faces[0]!.face, invertAffine(json.affine_matrices[0]), 200, 160, [0, 0, 0]);
  const refBack = file.readBytes('inv_restored_bgr.0');
  let backOff = 0;
  for (let i = 0; i < refBack.length; i++) if (Math.abs(back.data[i]! - refBack[i]!) > 1) backOff++;
  assert.equal(backOff, 0, 'the face warped back');
  const ref = file.readBytes('pasted_parse_bgr');
  let over1 = 0;
  let worst = 0;
  for (let i = 0; i < ref.length; i++) {
    const d = Math.abs(pasted.data[i]! - ref[i]!);
    if (d > 1) over1++;
    worst = Math.max(worst, d);
  }
  assert.ok(worst <= 2 && over1 <= ref.length * 0.005, `pasted: worst ${worst}, ${over1} values off by 2`);
});

test('the fast Gaussian blur (zero-row and zero-span skips, symmetric taps) equals a plain separable cv2.GaussianBlur', () => {
  const reflect = (i: number, n: number) => (i < 0 ? -i : i >= n ? 2 * n - 2 - i : i);
  const plain = (src: Float64Array, w: number, h: number) => {
    const k = Array.from({ length: 101 }, (_, i) => Math.exp((-0.5 * (i - 50) ** 2) / 121));
    const sum = k.reduce((a, b) => a + b, 0);
    const tmp = new Float64Array(src.length);
    const out = new Float64Array(src.length);
    for (let y = 0; y < h; y++)
      for (let x = 0; x < w; x++) for (let i = -50; i <= 50; i++) tmp[y * w + x]! += (k[i + 50]! / sum) * src[y * w + reflect(x + i, w)]!;
    for (let y = 0; y < h; y++)
      for (let x = 0; x < w; x++) for (let i = -50; i <= 50; i++) out[y * w + x]! += (k[i + 50]! / sum) * tmp[reflect(y + i, h) * w + x]!;
    return out;
  };
  const [w, h] = [180, 150];
  // A mask like a face's: zero rows at the top and bottom, a zero band at the left, a hole, and an edge-touching blob.
  const mask = new Float64Array(w * h);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const face = y > 60 && y < 120 && x > 70 && x < 170 && (x - 120) ** 2 + (y - 90) ** 2 > 64;
      mask[y * w + x] = face || (y < 4 && x > 150) ? 255 : 0;
    }
  }
  for (const src of [mask, gaussianBlur64(mask, w, h)]) {
    const fast = gaussianBlur64(src, w, h);
    const ref = plain(src, w, h);
    let worst = 0;
    for (let i = 0; i < ref.length; i++) worst = Math.max(worst, Math.abs(fast[i]! - ref[i]!));
    assert.ok(worst < 1e-9, `worst difference ${worst}`);
  }
});
