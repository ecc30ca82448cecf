// `kiln generate`: one generation from the command line, written to image files with metadata embedded.
import { writeFileSync } from 'node:fs';
import { extname } from 'node:path';
import { parseArgs } from 'node:util';
import sharp from 'sharp';
import { createEngine, type Device, type GenerateRequest, type RawImage, type RngSource, type Tiling } from '../engine/index.ts';
import { encodeImage, type ImageFormat } from '../storage/encode.ts';
import { ProgressBar } from './progress-bar.ts';

const HELP = `Usage: kiln generate --model PATH [options] PROMPT

  --model, -m PATH      diffusers folder or single-file .safetensors checkpoint (or KILN_MODEL)
  --output, -o FILE     output file (.png, .jpg, .webp); several images get -1, -2... suffixes [kiln.png]
  --negative, -n TEXT   negative prompt
  --steps N             sampling steps [20]
  --cfg X               classifier-free guidance scale [7]
  --seed N              seed; -1 or absent = random (the seed used is printed)
  --sampler NAME        A1111 sampler name, e.g. "Euler a", "DPM++ 2M Karras" [Euler a]
  --schedule NAME       Automatic, Karras, Exponential, ... [Automatic]
  --width N, --height N image size, multiples of 8 [512, or the model's native size]
  --batch N             images to generate (seeds seed, seed+1, ...) [1]
  --init-image FILE     img2img: start from this image
  --strength X          img2img denoising strength 0..1 [0.75]
  --clip-skip N         A1111 clip skip (1 = last layer) [1; SD2 uses its penultimate layer anyway]
  --tiling xy|x|y       seamless tiling on both axes (A1111 tiling), or left-right / top-bottom only
  --rng cpu|philox      noise generator: PyTorch CPU (default) or CUDA-compatible Philox
  --device cpu|cuda|tensorrt|webgpu  execution provider [cpu]
  --tokenizer DIR       folder with tokenizer/ (and tokenizer_2/) for single-file checkpoints
  --vae PATH            separate VAE file or folder
  --quality N           JPEG/WebP quality 1-100 [90]
`;

export async function runGenerate(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      model: { type: 'string', short: 'm' },
      output: { type: 'string', short: 'o', default: 'kiln.png' },
      negative: { type: 'string', short: 'n', default: '' },
      steps: { type: 'string', default: '20' },
      cfg: { type: 'string', default: '7' },
      seed: { type: 'string', default: '-1' },
      sampler: { type: 'string', default: 'Euler a' },
      schedule: { type: 'string', default: 'Automatic' },
      width: { type: 'string' },
      height: { type: 'string' },
      batch: { type: 'string', default: '1' },
      'init-image': { type: 'string' },
      strength: { type: 'string', default: '0.75' },
      'clip-skip': { type: 'string', default: '1' },
      tiling: { type: 'string' },
      rng: { type: 'string', default: 'cpu' },
      device: { type: 'string', default: 'cpu' },
      tokenizer: { type: 'string' },
      vae: { type: 'string' },
      quality: { type: 'string', default: '90' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    process.stdout.write(HELP);
    return 0;
  }
  const prompt = positionals.join(' ');
  const modelPath = values.model ?? process.env.KILN_MODEL;
  if (!modelPath) throw new Error(`--model is required (a diffusers folder or a .safetensors file)\n\n${HELP}`);
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

  const engine = createEngine({ device: values.device as Device });
  const bar = new ProgressBar('generating');
  const started = Date.now();
  try {
    const result = await engine.generate(request, {
      onProgress: (e) => bar.update(e.fraction, e.phase === 'sampling' ? `step ${e.step}/${e.totalSteps}` : e.phase),
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
