// Face restoration as a stage (A1111 "Restore faces": after decoding, each image replaced by its restored version) and
// as the Extras operation (blended over the original by `visibility`). The four networks are ONNX graphs built from
// their weight files (.pth through the restricted unpickler, or .safetensors) and kept per file while the engine runs.
import { createHash } from 'node:crypto';
import { statSync } from 'node:fs';
import { type FaceRestoreSettings, KilnInputError, type RawImage } from '../api.ts';
import { buildCodeFormer } from '../nets/codeformer.ts';
import { buildGfpgan } from '../nets/gfpgan.ts';
import { buildParseNet } from '../nets/parsenet.ts';
import { buildRetinaFace } from '../nets/retinaface.ts';
import type { TensorSource } from '../nets/upscaler-weights.ts';
import type { GraphBuilder } from '../onnx/graph.ts';
import { defaultCacheDir, getOrBuildGraph } from '../onnx/cache.ts';
import { createSession, runSession } from '../runtime.ts';
import { openTensorFile } from '../weights/tensor-file.ts';
import type { UpscalerSettings } from './upscaler-model.ts';
import { type FaceNets, restoreFaces } from './faces/restore.ts';

type Session = Awaited<ReturnType<typeof createSession>>;
const sessions = new Map<string, Promise<Session>>();
/** Face networks kept at once (restorer, detector, parser, and a second restorer). */
const MAX_SESSIONS = 4;

function sessionFor(file: string, kind: string, build: (b: GraphBuilder, s: TensorSource) => void, settings: UpscalerSettings): Promise<Session> {
  let stat: { size: number; mtimeMs: number };
  try {
    stat = statSync(file);
  } catch {
    throw new KilnInputError(`restore_faces: the ${kind} weights ${file} are missing`, 'restore_faces');
  }
  const key = `${kind}\0${file}\0${stat.size}\0${stat.mtimeMs}`;
  let s = sessions.get(key);
  if (!s) {
    s = (async () => {
      const f = openTensorFile(file);
      const src: TensorSource = { names: () => f.names(), shape: (n) => [...f.entry(n).shape], get: (n) => f.tensor(n) };
      const identity = createHash('sha256').update(key).digest('hex');
      const g = getOrBuildGraph(settings.cacheDir ?? defaultCacheDir(), { network: `face-${kind}`, weightsIdentity: identity, precision: 'fp32' }, (b) =>
        build(b, src),
      );
      return createSession(g.modelPath, { device: 'cpu', intraOpThreads: settings.threads });
    })();
    s.catch(() => sessions.delete(key));
    sessions.set(key, s);
    while (sessions.size > MAX_SESSIONS) sessions.delete(sessions.keys().next().value!);
  }
  return s;
}

const FACE_SHAPE = [1, 3, 512, 512];

/** The networks of one request's settings, as the flow (faces/restore.ts) calls them. */
export async function faceNets(settings: FaceRestoreSettings, runtime: UpscalerSettings): Promise<FaceNets> {
  const restorer =
    settings.model === 'CodeFormer'
      ? await sessionFor(settings.restorerPath, 'codeformer', buildCodeFormer, runtime)
      : await sessionFor(settings.restorerPath, 'gfpgan', buildGfpgan, runtime);
  const detector = await sessionFor(settings.detectorPath, 'detector', buildRetinaFace, runtime);
  const parser = await sessionFor(settings.parserPath, 'parser', buildParseNet, runtime);
  const weight = Float32Array.of(settings.weight ?? 0.5);
  return {
    detect: async (bgr) => {
      const plane = bgr.width * bgr.height;
      const chw = new Float32Array(3 * plane);
      for (let p = 0; p < plane; p++) for (let k = 0; k < 3; k++) chw[k * plane + p] = bgr.data[p * 3 + k]!;
      const out = await runSession(detector, { image: { shape: [1, 3, bgr.height, bgr.width], data: chw } });
      return { loc: out.loc!.data, conf: out.conf!.data, landms: out.landms!.data };
    },
    restore: async (input) => {
      const feeds: Record<string, { shape: number[]; data: Float32Array }> = { image: { shape: FACE_SHAPE, data: input } };
      if (settings.model === 'CodeFormer') feeds.weight = { shape: [1], data: weight };
      return (await runSession(restorer, feeds)).restored!.data;
    },
    parse: async (input) => (await runSession(parser, { image: { shape: FACE_SHAPE, data: input } })).mask!.data,
  };
}

export function validateFaceRestore(s: FaceRestoreSettings): void {
  if (s.model !== 'CodeFormer' && s.model !== 'GFPGAN') {
    throw new KilnInputError(`restore_faces.model must be "CodeFormer" or "GFPGAN", got ${JSON.stringify(s.model)}`, 'restore_faces');
  }
  for (const [name, v] of [
    ['weight', s.weight],
    ['visibility', s.visibility],
  ] as const) {
    if (v !== undefined && !(typeof v === 'number' && v >= 0 && v <= 1))
      throw new KilnInputError(`restore_faces.${name} must be a number from 0 to 1, got ${JSON.stringify(v)}`, 'restore_faces');
  }
}

/** Restores the faces of one RGB image; `visibility` < 1 blends the result over the original (A1111 Extras). */
export async function restoreImageFaces(
  image: RawImage,
  settings: FaceRestoreSettings,
  runtime: UpscalerSettings,
): Promise<{ image: RawImage; faces: number }> {
  validateFaceRestore(settings);
  if (image.channels !== 3) throw new KilnInputError('restore_faces: the image must be RGB', 'image');
  const nets = await faceNets(settings, runtime);
  const result = await restoreFaces({ data: image.data, width: image.width, height: image.height, channels: 3 }, nets);
  const visibility = settings.visibility ?? 1;
  if (visibility >= 1 || result.faces === 0) return { image: { ...image, data: result.image.data }, faces: result.faces };
  // PIL Image.blend: original + (restored - original) * alpha, rounded.
  const data = new Uint8Array(image.data.length);
  for (let i = 0; i < data.length; i++) data[i] = Math.round(image.data[i]! + (result.image.data[i]! - image.data[i]!) * visibility);
  return { image: { ...image, data }, faces: result.faces };
}
