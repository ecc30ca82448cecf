// A TAESD decoder file opened as an onnxruntime session (graph cached by the file's identity), shared by every
// model of its latent space: it decodes live previews at full image size for a fraction of the VAE's cost.
import { createHash } from 'node:crypto';
import { ModelFileError, type RawImage } from '../api.ts';
import { buildTaesdDecoder, TAESD_IO, taesdDecoderPlan, taesdDecoderWeights, type TaesdDecoderPlan } from '../nets/taesd.ts';
import { UpscalerFormatError, type TensorSource } from '../nets/upscaler-weights.ts';
import { defaultCacheDir, getOrBuildGraph } from '../onnx/cache.ts';
import { createSession, runSession, type Session } from '../runtime.ts';
import { openTensorFile } from '../weights/tensor-file.ts';
import type { SessionSettings } from './model-sessions.ts';

export interface TaesdDecoder {
  file: string;
  plan: TaesdDecoderPlan;
  /** Latent [B, C, h, w] (the sampler's, unscaled) -> RGB [B, 3, h*s, w*s] in [0, 1]. */
  decode(latent: Float32Array, shape: [number, number, number, number]): Promise<Float32Array>;
  release(): Promise<void>;
}

/** Opened decoders by file identity; a handful at most (one per latent space in practice). */
const opened = new Map<string, Promise<TaesdDecoder>>();
const MAX_OPEN = 2;

/** The decoder in `file` (.safetensors or .pth, original or diffusers AutoencoderTiny keys), opened once. */
export function openTaesdDecoder(file: string, settings: Pick<SessionSettings, 'device' | 'cacheDir' | 'threads'>): Promise<TaesdDecoder> {
  const f = openTensorFile(file);
  const layout = JSON.stringify(f.names().map((n) => [n, f.entry(n).dtype, f.entry(n).shape]));
  const identity = createHash('sha256').update(`${file}\0${f.size}\0${f.mtimeMs}\0${layout}`).digest('hex');
  let d = opened.get(identity);
  if (!d) {
    const source: TensorSource = taesdDecoderWeights({ names: () => f.names(), shape: (n) => [...f.entry(n).shape], get: (n) => f.tensor(n) });
    d = openFromSource(file, source, identity, settings);
    d.catch(() => opened.delete(identity));
    opened.set(identity, d);
    while (opened.size > MAX_OPEN) {
      const oldest = opened.keys().next().value as string;
      const p = opened.get(oldest);
      opened.delete(oldest);
      p?.then((x) => x.release()).catch(() => undefined);
    }
  }
  return d;
}

/** Builds (or reuses from the graph cache) and opens a decoder over `source` (original key names). */
export async function openFromSource(
  file: string,
  source: TensorSource,
  identity: string,
  settings: Pick<SessionSettings, 'device' | 'cacheDir' | 'threads'>,
): Promise<TaesdDecoder> {
  let plan: TaesdDecoderPlan;
  try {
    plan = taesdDecoderPlan(source);
  } catch (e) {
    if (e instanceof UpscalerFormatError) throw new ModelFileError(file, e.message);
    throw e;
  }
  // fp32 everywhere: the net is tiny, and previews should not differ by device precision.
  const graph = getOrBuildGraph(
    settings.cacheDir ?? defaultCacheDir(),
    { network: 'taesd-decoder', weightsIdentity: identity, precision: 'fp32', options: { layers: plan.layers.length } },
    (b) => buildTaesdDecoder(b, source, plan),
  );
  const session: Session = await createSession(graph.modelPath, { device: settings.device, intraOpThreads: settings.threads });
  return {
    file,
    plan,
    decode: async (latent, shape) => (await runSession(session, { [TAESD_IO.latent]: { shape, data: latent } }))[TAESD_IO.image]!.data,
    release: () => session.release(),
  };
}

/** Decodes each image of a latent batch [count, C, h, w] with TAESD to 8-bit RGB (the final-decode path). */
export async function taesdImages(decoder: TaesdDecoder, latents: Float32Array, count: number, shape: [number, number, number]): Promise<RawImage[]> {
  const per = shape[0] * shape[1] * shape[2];
  const images: RawImage[] = [];
  for (let i = 0; i < count; i++) images.push((await taesdPreview(decoder, latents.subarray(i * per, (i + 1) * per), shape))!);
  return images;
}

/** The first image of a latent batch [B, C, h, w] decoded to an 8-bit RGB preview at full size. */
export async function taesdPreview(decoder: TaesdDecoder, latents: Float32Array, shape: [number, number, number]): Promise<RawImage | undefined> {
  const [c, h, w] = shape;
  if (c !== decoder.plan.latentChannels) return undefined;
  // slice (a copy): onnxruntime wants a tensor of exactly the shape's size.
  const rgb = await decoder.decode(latents.slice(0, c * h * w), [1, c, h, w]);
  const height = h * decoder.plan.scale;
  const width = w * decoder.plan.scale;
  const plane = height * width;
  const data = new Uint8Array(plane * 3);
  for (let p = 0; p < plane; p++) for (let k = 0; k < 3; k++) data[p * 3 + k] = Math.round(rgb[k * plane + p]! * 255);
  return { data, width, height, channels: 3 };
}
