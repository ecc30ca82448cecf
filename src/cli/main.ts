// The `kiln` command: one argument parser (commander) for every subcommand, with `kiln help <command>` and
// `kiln <command> --help`. Each subcommand's code lives in its own module, loaded only when it runs (the engine
// is heavy; `kiln --help` must not load onnxruntime).
import { Command, Option } from 'commander';
import { VERSION } from '../version.ts';
import { addServerOptions, flagsOf } from './options.ts';

const LOCATION_FLAGS = ['data-dir', 'models-dir', 'models-root', 'cache-dir', 'hf-cache', 'config', 'model', 'tokenizer'];

const program = new Command('kiln')
  .description('Kiln: a self-hosted Stable Diffusion image server')
  .version(VERSION, '-v, --version', 'print the version')
  .showSuggestionAfterError()
  .showHelpAfterError('(kiln --help lists the commands; kiln <command> --help its options)');

addServerOptions(
  program
    .command('serve')
    .description('start the HTTP server (flags > KILN_* env > kiln.config.json/.yaml in the data dir > defaults)')
    .option('--print-config', 'print the resolved configuration (JSON, API keys masked) and exit'),
).action(async (opts: { printConfig?: boolean }, cmd: Command) => {
  const { runServe } = await import('./serve.ts');
  process.exitCode = await runServe(flagsOf(cmd), { printConfig: Boolean(opts.printConfig) });
});

addServerOptions(
  program
    .command('worker')
    .description('run jobs from a shared Redis queue on this machine, no HTTP (needs --queue redis://…; one per GPU, each with its own --data-dir)'),
).action(async (_opts: unknown, cmd: Command) => {
  const { runWorker } = await import('./worker.ts');
  process.exitCode = await runWorker(flagsOf(cmd));
});

program
  .command('generate')
  .description('generate images from the command line, no server')
  .argument('<prompt...>', 'the prompt (A1111 syntax)')
  .option('-m, --model <path>', 'diffusers folder or single-file checkpoint (or env KILN_MODEL)')
  .option('-o, --output <file>', 'output file (.png, .jpg, .webp); several images get -1, -2... suffixes', 'kiln.png')
  .option('-n, --negative <text>', 'negative prompt', '')
  .option('--steps <n>', 'sampling steps', '20')
  .option('--cfg <x>', 'classifier-free guidance scale', '7')
  .option('--seed <n>', 'seed; -1 = random (the seed used is printed)', '-1')
  .option('--sampler <name>', 'A1111 sampler name, e.g. "Euler a", "DPM++ 2M Karras"', 'Euler a')
  .option('--schedule <name>', 'Automatic, Karras, Exponential, ...', 'Automatic')
  .option('--width <n>', "image width, a multiple of 8 (default: 512 or the model's native size)")
  .option('--height <n>', 'image height, a multiple of 8')
  .option('--batch <n>', 'images to generate (seeds seed, seed+1, ...)', '1')
  .option('--init-image <file>', 'img2img: start from this image')
  .option('--strength <x>', 'img2img denoising strength 0..1', '0.75')
  .option('--clip-skip <n>', 'A1111 clip skip (1 = last layer)', '1')
  .addOption(new Option('--tiling <axes>', 'seamless tiling on both axes, or left-right / top-bottom only').choices(['xy', 'x', 'y']))
  .addOption(new Option('--rng <source>', 'noise generator: PyTorch CPU or CUDA-compatible Philox').choices(['cpu', 'philox']).default('cpu'))
  .addOption(new Option('--device <device>', 'execution provider').choices(['cpu', 'cuda', 'tensorrt', 'webgpu']).default('cpu'))
  .option('--tokenizer <dir>', 'folder with tokenizer/ (and tokenizer_2/) for single-file checkpoints')
  .option('--vae <path>', 'separate VAE file or folder')
  .option('--quality <n>', 'JPEG/WebP quality 1-100', '90')
  .option('--data-dir <dir>', "kiln serve's data dir, whose graph cache is shared (default ./kiln-data, or env KILN_DATA_DIR)")
  .option('--cache-dir <dir>', 'graph cache folder root, shared with kiln serve (default <data-dir>/cache, or env KILN_CACHE_DIR)')
  .action(async (prompt: string[], opts) => {
    const { runGenerate } = await import('./generate.ts');
    process.exitCode = await runGenerate(opts, prompt);
  });

addServerOptions(
  program
    .command('models')
    .description('list the models Kiln sees (kind, family, size) in the models folders and the Hugging Face cache')
    .option('--no-inspect', 'skip opening files to report their family'),
  LOCATION_FLAGS,
).action(async (opts: { inspect: boolean }, cmd: Command) => {
  const { runModels } = await import('./models.ts');
  process.exitCode = await runModels(flagsOf(cmd), { inspect: opts.inspect });
});

addServerOptions(
  program
    .command('pull')
    .description(
      'download a model: a preset (kiln pull --list), owner/repo[:file] from Hugging Face (HF_TOKEN), a Civitai id, URL or AIR (CIVIT_KEY), or an https URL',
    )
    .argument('[what]', 'what to download')
    .addOption(
      new Option('--kind <kind>', 'what it is, and so which folder it goes to').choices(['checkpoint', 'lora', 'vae', 'upscaler', 'embedding', 'layerdiffuse']),
    )
    .option('--name <name>', 'store a Civitai or URL download under this name')
    .option('--list', 'list the presets'),
  [...LOCATION_FLAGS, 'hf-endpoint', 'civitai-endpoint', 'offline'],
).action(async (what: string | undefined, opts: { kind?: string; name?: string; list?: boolean }, cmd: Command) => {
  const { runPull } = await import('./pull.ts');
  process.exitCode = await runPull(what, opts, flagsOf(cmd));
});

const cache = program.command('cache').description('the graph cache shared by kiln serve and kiln generate');
for (const [name, description] of [
  ['ls', 'list cached graphs by model, with their size'],
  ['clean', 'delete cached graphs (all, or --older-than DAYS); they are rebuilt on the next start'],
] as const) {
  const sub = addServerOptions(cache.command(name).description(description), ['data-dir', 'cache-dir', 'config']);
  if (name === 'clean') sub.option('--older-than <days>', 'only graphs not used for this many days');
  sub.action(async (opts: { olderThan?: string }, cmd: Command) => {
    const { runCache } = await import('./cache.ts');
    process.exitCode = await runCache(name, flagsOf(cmd), opts);
  });
}

program
  .command('bench')
  .description('full-size engine benchmark (random weights, real shapes); options: see bench/engine-bench.ts')
  .allowUnknownOption()
  .helpOption(false)
  .argument('[args...]')
  .action(async (args: string[]) => {
    process.argv = [process.argv[0]!, 'bench', ...args];
    await import('../../bench/engine-bench.ts');
  });

program.parseAsync(process.argv).catch((err: unknown) => {
  const e = err as Error;
  process.stderr.write(`kiln: ${e.message}\n`);
  if (process.env.KILN_DEBUG) process.stderr.write(`${e.stack}\n`);
  process.exitCode = 1;
});
