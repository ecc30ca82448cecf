// An image upscaler loaded from its weights file: the network detected from the keys, its graph built (and
// cached) once per file, an onnxruntime session, and a runner with spandrel's pad/clamp/crop around it.
import { createHash } from 'node:crypto';
import { ModelFileError, type Device } from '../api.ts';
import { detectUpscaler, type TensorSource, UpscalerFormatError, type UpscalerNet } from '../nets/upscaler.ts';
import { defaultCacheDir, getOrBuildGraph } from '../onnx/cache.ts';
import { createSession, precisionFor, runSession } from '../runtime.ts';
import { openTensorFile } from '../weights/tensor-file.ts';
import { runPadded, type UpscaleNetRunner } from './upscale-image.ts';

export interface UpscalerSettings {
  device: Device;
  cacheDir?: string;
  threads?: number;
}

export interface UpscalerModel {
  file: string;
  net: UpscalerNet;
  /** [1,3,H,W] in [0,1] -> [1,3,H*s,W*s] clamped to [0,1]. */
  run: UpscaleNetRunner;
}

/** The weights of an upscaler file as a tensor source, with an identity for the graph cache. */
export function upscalerTensors(file: string): { source: TensorSource; identity: string } {
  // .safetensors, or a pickled .pth/.pt through the restricted unpickler (wrappers such as params_ema unwrapped).
  const f = openTensorFile(file);
  const source: TensorSource = { names: () => f.names(), shape: (n) => [...f.entry(n).shape], get: (n) => f.tensor(n) };
  const layout = JSON.stringify(f.names().map((n) => [n, f.entry(n).dtype, f.entry(n).shape]));
  const identity = createHash('sha256').update(`${file}\0${f.size}\0${f.mtimeMs}\0${layout}`).digest('hex');
  return { source, identity };
}

/** Opens `file` as an upscaler; a file that is not one fails with ModelFileError naming it and the reason. */
export async function openUpscaler(file: string, settings: UpscalerSettings, tensors = upscalerTensors(file)): Promise<UpscalerModel> {
  let net: UpscalerNet;
  try {
    net = detectUpscaler(tensors.source);
  } catch (e) {
    if (e instanceof UpscalerFormatError) throw new ModelFileError(file, e.message);
    throw e;
  }
  const precision = precisionFor(settings.device);
  const graph = getOrBuildGraph(
    settings.cacheDir ?? defaultCacheDir(),
    { network: `upscaler-${net.arch.toLowerCase()}`, weightsIdentity: tensors.identity, precision, options: net.describe },
    (b) => net.build(b),
  );
  const session = await createSession(graph.modelPath, { device: settings.device, intraOpThreads: settings.threads });
  const raw = async (input: Parameters<UpscaleNetRunner>[0]) => (await runSession(session, { image: input })).upscaled!;
  return { file, net, run: (input) => runPadded(raw, input, net.multipleOf, net.scale) };
}

/** Reads only a file's header: the architecture and scale of an upscaler, or ModelFileError naming the file. */
export function inspectUpscaler(file: string): { arch: string; scale: number } {
  try {
    const net = detectUpscaler(upscalerTensors(file).source);
    return { arch: net.arch, scale: net.scale };
  } catch (e) {
    if (e instanceof UpscalerFormatError) throw new ModelFileError(file, e.message);
    throw e;
  }
}
