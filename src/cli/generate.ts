// `kiln generate`: one generation from the command line, written to image files with metadata embedded.
import { writeFileSync } from 'node:fs';
import { extname } from 'node:path';
import sharp from 'sharp';
import { createEngine, type Device, type GenerateRequest, type RawImage, type RngSource, type Tiling } from '../engine/index.ts';
import { graphCacheDir, loadConfig } from '../server/config.ts';
import { encodeImage, type ImageFormat } from '../storage/encode.ts';
import { ProgressBar } from './progress-bar.ts';
import { networkLabel } from '../queue/build-log.ts';
import { ensureTokenizers } from '../server/models/tokenizers.ts';

/** Option values as the CLI parser (src/cli/main.ts) hands them over: strings, defaults filled in. */
export interface GenerateValues {
  model?: string;
  output: string;
  negative: string;
  steps: string;
  cfg: string;
  seed: string;
  sampler: string;
  schedule: string;
  width?: string;
  height?: string;
  batch: string;
  initImage?: string;
  strength: string;
  clipSkip: string;
  tiling?: string;
  rng: string;
  device: string;
  tokenizer?: string;
  vae?: string;
  quality: string;
  cacheDir?: string;
  dataDir?: string;
}

export async function runGenerate(v: GenerateValues, positionals: string[]): Promise<number> {
  const values = { ...v, 'init-image': v.initImage, 'clip-skip': v.clipSkip };
  const prompt = positionals.join(' ');
  const modelPath = values.model ?? process.env.KILN_MODEL;
  if (!modelPath) throw new Error('--model is required (a diffusers folder or a .safetensors file); see kiln generate --help');
  if (!prompt) throw new Error('a prompt is required, e.g. kiln generate -m MODEL "a red apple"');

  const format = formatFromExtension(values.output!);
  const int = (name: string, v: string | undefined) => {
    const n = Number(v);
    if (!Number.isInteger(n)) throw new Error(`--${name} must be an integer, got '${v}'`);
    return n;
  };
  const numeric = (name: string, v: string | undefined) => {
    const n = Number(v);
    if (!Number.isFinite(n)) throw new Error(`--${name} must be a number, got '${v}'`);
    return n;
  };
  if (values.tiling !== undefined && !['xy', 'x', 'y'].includes(values.tiling)) throw new Error(`--tiling must be xy, x or y, got '${values.tiling}'`);
  if (!['cpu', 'philox'].includes(values.rng!)) throw new Error(`--rng must be cpu or philox, got '${values.rng}'`);
  if (!['cpu', 'cuda', 'tensorrt', 'webgpu'].includes(values.device!)) throw new Error(`--device must be cpu, cuda, tensorrt or webgpu`);

  let initImage: RawImage | undefined;
  if (values['init-image']) {
    const { data, info } = await sharp(values['init-image']).removeAlpha().raw().toBuffer({ resolveWithObject: true });
    initImage = { data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength), width: info.width, height: info.height, channels: 3 };
  }
  const seed = int('seed', values.seed);
  const request: GenerateRequest = {
    model: { path: modelPath, tokenizerDir: values.tokenizer, vae: values.vae },
    prompts: [prompt],
    negativePrompt: values.negative,
    imagesPerPrompt: int('batch', values.batch),
    width: values.width ? int('width', values.width) : initImage ? roundTo8(initImage.width) : 0,
    height: values.height ? int('height', values.height) : initImage ? roundTo8(initImage.height) : 0,
    steps: int('steps', values.steps),
    cfgScale: numeric('cfg', values.cfg),
    sampler: values.sampler!,
    schedule: values.schedule,
    seed: seed < 0 ? undefined : seed,
    rng: values.rng as RngSource,
    clipSkip: int('clip-skip', values['clip-skip']),
    init: initImage ? { image: initImage, strength: numeric('strength', values.strength) } : undefined,
    tiling: values.tiling as Tiling | undefined,
    device: values.device as Device,
  };

  // The graph cache kiln serve uses (same --cache-dir / KILN_CACHE_DIR / data-dir resolution), so a model built
  // by one is not built again by the other.
  const config = loadConfig({ flags: { ...(v.cacheDir ? { 'cache-dir': v.cacheDir } : {}), ...(v.dataDir ? { 'data-dir': v.dataDir } : {}) } });
  const cacheDir = graphCacheDir(config);
  // A single file's tokenizer comes from the HF cache, fetched there first if missing (the engine never downloads).
  await ensureTokenizers(request.model, { hfCacheDir: config.hfCacheDir, endpoint: config.hfEndpoint, offline: config.offline });
  const engine = createEngine({ device: values.device as Device, cacheDir, hfCacheDir: config.hfCacheDir });
  const bar = new ProgressBar('generating');
  const started = Date.now();
  try {
    const result = await engine.generate(request, {
      onProgress: (e) => {
        // The first run of a model builds its graphs (tens of seconds for a real one): say which and how far.
        if (e.build) {
          const b = e.build;
          const label = `${networkLabel(b.network)} graph`;
          const text = b.done
            ? `${label} built in ${(b.elapsedMs / 1000).toFixed(1)}s`
            : `building ${label} (first run only)… ${Math.round(b.fraction * 100)}%`;
          bar.status(b.fraction, text, b.done || b.bytes === 0);
          return;
        }
        bar.update(e.fraction, e.phase === 'sampling' ? `step ${e.step}/${e.totalSteps}` : e.phase);
      },
    });
    const files: string[] = [];
    for (const [i, img] of result.images.entries()) {
      const file = result.images.length === 1 ? values.output! : withSuffix(values.output!, i);
      writeFileSync(file, await encodeImage(img.image, { format, quality: int('quality', values.quality), infotext: img.infotext }));
      files.push(`${file} (seed ${img.seed})`);
    }
    const seconds = ((Date.now() - started) / 1000).toFixed(2);
    bar.done(`wrote ${files.join(', ')} in ${seconds}s (sampling ${(result.timings.sampleMs / 1000).toFixed(2)}s)`);
    process.stdout.write(`seed: ${result.images[0]!.seed}\ntime: ${seconds}s\n`);
    return 0;
  } finally {
    await engine.close();
  }
}

function roundTo8(n: number): number {
  return Math.max(8, Math.round(n / 8) * 8);
}

function formatFromExtension(file: string): ImageFormat {
  const ext = extname(file).toLowerCase();
  if (ext === '.png') return 'png';
  if (ext === '.jpg' || ext === '.jpeg') return 'jpeg';
  if (ext === '.webp') return 'webp';
  throw new Error(`--output must end in .png, .jpg or .webp, got '${file}'`);
}

function withSuffix(file: string, i: number): string {
  const ext = extname(file);
  return `${file.slice(0, file.length - ext.length)}-${i + 1}${ext}`;
}
