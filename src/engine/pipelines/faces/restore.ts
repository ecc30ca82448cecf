// A1111's face restoration (modules/face_restoration_utils.py restore_with_face_helper, v1.8-1.10) over
// FaceRestoreHelper(upscale 1, face size 512, retinaface_resnet50, use_parse=True): detect on the image resized to a
// short side of 640 (threshold 0.97, NMS 0.4, eye distance >= 5 px), cut every face out onto the 512 template, restore
// it with the network (RGB in [-1, 1]), convert back truncating to 8 bits, and paste it back through its parse mask.
// The networks come in through `FaceNets`, so this file is the flow only.
import { FACE_TEMPLATE_512, type Image8, similarityTransform, warpAffine8 } from './align.ts';
import { detectionsFromRaw, faceLandmarks, type RawDetections } from './detect.ts';
import { pasteFaces, type RestoredFace } from './paste.ts';
import { resizeLanczos4 } from './resize.ts';
import { type FacePhaseTimings, timed } from './timings.ts';

const DETECT_SHORT_SIDE = 640;
const FACE_SIZE = 512;
const CROP_BORDER = [135, 133, 132];
const f = Math.fround;

export interface FaceNets {
  /** RetinaFace's raw outputs for a BGR image (its priors follow from the image size). */
  detect(bgr: Image8): Promise<RawDetections>;
  /** The restorer: [1, 3, 512, 512] RGB in [-1, 1] -> the same layout. */
  restore(input: Float32Array): Promise<Float32Array>;
  /** ParseNet: [1, 3, 512, 512] RGB in [-1, 1] -> [1, 19, 512, 512] class logits. */
  parse(input: Float32Array): Promise<Float32Array>;
}

export interface FaceRestoreResult {
  /** The RGB image with every face restored (the input unchanged when no face was found). */
  image: Image8;
  /** How many faces were restored. */
  faces: number;
  /** Each restored 512x512 face (BGR), for tests and diagnostics. */
  restoredFaces: Image8[];
}

function flipChannels(img: Image8): Image8 {
  const out = new Uint8Array(img.data.length);
  for (let p = 0; p < out.length; p += 3) out.set([img.data[p + 2]!, img.data[p + 1]!, img.data[p]!], p);
  return { ...img, data: out };
}

/** A 512x512 BGR face as the networks' input: (float32(x / 255) - 0.5) / 0.5, RGB, CHW. */
function toNetworkInput(face: Image8): Float32Array {
  const plane = FACE_SIZE * FACE_SIZE;
  const out = new Float32Array(3 * plane);
  for (let p = 0; p < plane; p++) {
    for (let c = 0; c < 3; c++) out[c * plane + p] = f(f(f(face.data[p * 3 + (2 - c)]! / 255) - 0.5) / 0.5);
  }
  return out;
}

/** The network's RGB output as A1111 converts it: clamp to [-1, 1], (x + 1) / 2, x 255, truncated; BGR. */
function fromNetworkOutput(out: Float32Array): Image8 {
  const plane = FACE_SIZE * FACE_SIZE;
  const data = new Uint8Array(3 * plane);
  for (let p = 0; p < plane; p++) {
    for (let c = 0; c < 3; c++) {
      const v = Math.min(1, Math.max(-1, out[c * plane + p]!));
      data[p * 3 + (2 - c)] = Math.trunc(f(f(f(v + 1) / 2) * 255));
    }
  }
  return { data, width: FACE_SIZE, height: FACE_SIZE, channels: 3 };
}

function argmaxClasses(logits: Float32Array, classes: number): Uint8Array {
  const plane = FACE_SIZE * FACE_SIZE;
  const out = new Uint8Array(plane);
  for (let p = 0; p < plane; p++) {
    let best = 0;
    for (let k = 1; k < classes; k++) if (logits[k * plane + p]! > logits[best * plane + p]!) best = k;
    out[p] = best;
  }
  return out;
}

/** Restores every face of an RGB image; `timings`, when given, receives each phase's wall and CPU milliseconds. */
export async function restoreFaces(rgb: Image8, nets: FaceNets, timings?: FacePhaseTimings): Promise<FaceRestoreResult> {
  if (rgb.channels !== 3) throw new Error(`face restoration needs an RGB image, got ${rgb.channels} channels`);
  const bgr = flipChannels(rgb);
  // get_face_landmarks_5(resize=640): scale = short side / 640, detection at int(size / scale), boxes * scale.
  const scale = Math.min(rgb.width, rgb.height) / DETECT_SHORT_SIDE;
  const dw = Math.trunc(rgb.width / scale);
  const dh = Math.trunc(rgb.height / scale);
  const resized = await timed(timings, 'resize', () => resizeLanczos4(bgr, dw, dh));
  const raw = await timed(timings, 'detect', () => nets.detect(resized));
  const faces = await timed(timings, 'decode', () => faceLandmarks(detectionsFromRaw(raw, dw, dh), scale));
  if (faces.length === 0) return { image: rgb, faces: 0, restoredFaces: [] };
  const restored: RestoredFace[] = [];
  for (const { landmarks } of faces) {
    const { affine, crop } = await timed(timings, 'align', () => {
      const affine = similarityTransform(landmarks, FACE_TEMPLATE_512);
      return { affine, crop: warpAffine8(bgr, affine, FACE_SIZE, FACE_SIZE, CROP_BORDER) };
    });
    const input = await timed(timings, 'convert', () => toNetworkInput(crop));
    const output = await timed(timings, 'restore', () => nets.restore(input));
    const face = await timed(timings, 'convert', () => fromNetworkOutput(output));
    const parseInput = await timed(timings, 'convert', () => toNetworkInput(face));
    const logits = await timed(timings, 'parse', () => nets.parse(parseInput));
    const classes = await timed(timings, 'convert', () => argmaxClasses(logits, logits.length / (FACE_SIZE * FACE_SIZE)));
    restored.push({ face, affine, classes });
  }
  const pasted = pasteFaces(bgr, restored, timings).image;
  return { image: flipChannels(pasted), faces: restored.length, restoredFaces: restored.map((r) => r.face) };
}
