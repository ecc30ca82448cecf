// LayerDiffuse's transparent VAE decoder loaded from its weights file: the UNet1024 graph built (and cached on
// disk) once per file, an onnxruntime session, and a runner for one pass. Opened per generation and released
// after it, as the upscalers are: the file is the request's choice and its session is small next to the UNet's.
import { createHash } from 'node:crypto';
import type { Device } from '../api.ts';
import { buildTransparentDecoder, TRANSPARENT_DECODER_IO } from '../nets/transparent-decoder.ts';
import { defaultCacheDir, getOrBuildGraph } from '../onnx/cache.ts';
import { createSession, precisionFor, runSession } from '../runtime.ts';
import type { Tensor } from '../tensor.ts';
import { storedWeights } from '../weights/sources.ts';
import { openTensorFile } from '../weights/tensor-file.ts';

export interface TransparentDecoderSettings {
  device: Device;
  cacheDir?: string;
  threads?: number;
}

export interface TransparentDecoderModel {
  file: string;
  /** One pass: pixel [1,3,H,W] in [0,1] + raw latent [1,4,H/8,W/8] -> raw [1,4,H,W] (H, W multiples of 64). */
  run(pixel: Tensor, latent: Tensor): Promise<Tensor>;
  release(): Promise<void>;
}

export async function openTransparentDecoder(file: string, settings: TransparentDecoderSettings): Promise<TransparentDecoderModel> {
  const f = openTensorFile(file);
  const weights = storedWeights(file, [f]);
  const layout = JSON.stringify(f.names().map((n) => [n, f.entry(n).dtype, f.entry(n).shape]));
  const identity = createHash('sha256').update(`${file}\0${f.size}\0${f.mtimeMs}\0${layout}`).digest('hex');
  const graph = getOrBuildGraph(
    settings.cacheDir ?? defaultCacheDir(),
    { network: 'transparent-decoder', weightsIdentity: identity, precision: precisionFor(settings.device) },
    (b) => buildTransparentDecoder(b, weights, file),
  );
  const session = await createSession(graph.modelPath, { device: settings.device, intraOpThreads: settings.threads });
  return {
    file,
    run: async (pixel, latent) =>
      (await runSession(session, { [TRANSPARENT_DECODER_IO.pixel]: pixel, [TRANSPARENT_DECODER_IO.latent]: latent }))[TRANSPARENT_DECODER_IO.rgba]!,
    release: () => session.release(),
  };
}
