// RetinaFace post-processing as facexlib 0.3.0 does it for A1111's face restoration (FaceRestoreHelper with
// det_model retinaface_resnet50): the prior boxes of the detector's three levels, decoding of the raw box and
// landmark regressions, the score threshold, sorting, NMS (torchvision.ops.nms), and the helper's scale back to the
// original image and its eye-distance filter. Arithmetic mirrors the float32 tensors of the reference.

const f = Math.fround;

/** RetinaFace's cfg (identical for resnet50 and mobile0.25): anchor sizes per level, strides, variances. */
export const RETINAFACE_CFG = {
  minSizes: [
    [16, 32],
    [64, 128],
    [256, 512],
  ],
  steps: [8, 16, 32],
  variance: [0.1, 0.2] as const,
} as const;

/** facexlib PriorBox for an input of height x width: (cx, cy, w, h) per anchor, normalised by the image size. */
export function priorBoxes(height: number, width: number): Float32Array {
  const out: number[] = [];
  RETINAFACE_CFG.steps.forEach((step, k) => {
    const rows = Math.ceil(height / step);
    const cols = Math.ceil(width / step);
    for (let i = 0; i < rows; i++) {
      for (let j = 0; j < cols; j++) {
        for (const minSize of RETINAFACE_CFG.minSizes[k]!) {
          out.push(((j + 0.5) * step) / width, ((i + 0.5) * step) / height, minSize / width, minSize / height);
        }
      }
    }
  });
  return Float32Array.from(out);
}

/** facexlib decode(): box regressions -> x1, y1, x2, y2 normalised (then scaled by the caller). */
export function decodeBoxes(loc: Float32Array, priors: Float32Array): Float32Array {
  const [v0, v1] = RETINAFACE_CFG.variance;
  const n = priors.length / 4;
  const out = new Float32Array(n * 4);
  for (let i = 0; i < n; i++) {
    const [pcx, pcy, pw, ph] = [priors[4 * i]!, priors[4 * i + 1]!, priors[4 * i + 2]!, priors[4 * i + 3]!];
    const cx = f(pcx + f(f(loc[4 * i]! * f(v0)) * pw));
    const cy = f(pcy + f(f(loc[4 * i + 1]! * f(v0)) * ph));
    const w = f(pw * f(Math.exp(f(loc[4 * i + 2]! * f(v1)))));
    const h = f(ph * f(Math.exp(f(loc[4 * i + 3]! * f(v1)))));
    const x1 = f(cx - f(w / 2));
    const y1 = f(cy - f(h / 2));
    out.set([x1, y1, f(w + x1), f(h + y1)], 4 * i);
  }
  return out;
}

/** facexlib decode_landm() for one prior: 5 (x, y) points, normalised. */
export function decodeLandmarks(landms: Float32Array, priors: Float32Array, i: number): number[] {
  const [v0] = RETINAFACE_CFG.variance;
  const out: number[] = [];
  for (let k = 0; k < 5; k++) {
    out.push(f(priors[4 * i]! + f(f(landms[10 * i + 2 * k]! * f(v0)) * priors[4 * i + 2]!)));
    out.push(f(priors[4 * i + 1]! + f(f(landms[10 * i + 2 * k + 1]! * f(v0)) * priors[4 * i + 3]!)));
  }
  return out;
}

/** torchvision.ops.nms: indices kept, in the given (score-descending) order; IoU above `threshold` suppresses. */
export function nms(boxes: readonly number[][], threshold: number): number[] {
  const area = (b: number[]) => f(f(b[2]! - b[0]!) * f(b[3]! - b[1]!));
  const keep: number[] = [];
  const suppressed = new Array<boolean>(boxes.length).fill(false);
  for (let i = 0; i < boxes.length; i++) {
    if (suppressed[i]) continue;
    keep.push(i);
    const a = boxes[i]!;
    for (let j = i + 1; j < boxes.length; j++) {
      if (suppressed[j]) continue;
      const b = boxes[j]!;
      const w = Math.max(0, f(Math.min(a[2]!, b[2]!) - Math.max(a[0]!, b[0]!)));
      const h = Math.max(0, f(Math.min(a[3]!, b[3]!) - Math.max(a[1]!, b[1]!)));
      const inter = f(w * h);
      const iou = f(inter / f(f(area(a) + area(b)) - inter));
      if (iou > threshold) suppressed[j] = true;
    }
  }
  return keep;
}

export interface RawDetections {
  /** [N, 4] box regressions, [N, 2] softmax scores (column 1 = face), [N, 10] landmark regressions. */
  loc: Float32Array;
  conf: Float32Array;
  landms: Float32Array;
}

/**
 * facexlib RetinaFace.detect_faces after the network: rows of [x1, y1, x2, y2, score, 5 x (x, y)] in the pixels of
 * the width x height input, score above `confThreshold`, highest score first, after NMS.
 */
export function detectionsFromRaw(raw: RawDetections, width: number, height: number, confThreshold = 0.97, nmsThreshold = 0.4): number[][] {
  const priors = priorBoxes(height, width);
  const n = priors.length / 4;
  const candidates: { i: number; score: number }[] = [];
  for (let i = 0; i < n; i++) {
    const score = raw.conf[2 * i + 1]!;
    if (score > confThreshold) candidates.push({ i, score });
  }
  // numpy argsort()[::-1]: descending; ties keep the reverse of their index order (a stable ascending sort, reversed).
  candidates.sort((a, b) => a.score - b.score || a.i - b.i).reverse();
  const boxes = decodeBoxes(raw.loc, priors);
  const scale = [width, height, width, height].map(f);
  const rows = candidates.map(({ i, score }) => {
    const box = [0, 1, 2, 3].map((k) => f(boxes[4 * i + k]! * scale[k]!));
    const lm = decodeLandmarks(raw.landms, priors, i).map((v, k) => f(v * (k % 2 === 0 ? f(width) : f(height))));
    return [...box, score, ...lm];
  });
  return nms(rows, nmsThreshold).map((k) => rows[k]!);
}

/**
 * FaceRestoreHelper.get_face_landmarks_5's tail: detections in the resized frame scaled back by `scale`
 * (original / resized; the whole row, as facexlib does), faces with eye distance below `eyeDistThreshold` dropped.
 * Returns each face's 5 landmarks (left eye, right eye, nose, left and right mouth corner) as [x, y] pairs.
 */
export function faceLandmarks(detections: readonly number[][], scale: number, eyeDistThreshold = 5): { box: number[]; landmarks: [number, number][] }[] {
  const out: { box: number[]; landmarks: [number, number][] }[] = [];
  for (const row of detections) {
    const r = row.map((v) => f(v * f(scale)));
    const eyeDist = Math.hypot(r[5]! - r[7]!, r[6]! - r[8]!);
    if (eyeDist < eyeDistThreshold) continue;
    const landmarks = [0, 1, 2, 3, 4].map((k) => [r[5 + 2 * k]!, r[6 + 2 * k]!] as [number, number]);
    out.push({ box: r.slice(0, 5), landmarks });
  }
  return out;
}
