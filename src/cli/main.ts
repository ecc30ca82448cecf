// `kiln` command dispatcher: each subcommand lives in its own module and is loaded only when used.
const USAGE = `kiln — self-hosted Stable Diffusion server

Usage:
  kiln serve [options]            start the HTTP server (kiln serve --help)
  kiln worker --queue redis://…   run jobs from a shared Redis queue, no HTTP (kiln worker --help)
  kiln generate [options] PROMPT  generate images from the command line (kiln generate --help)
  kiln models [--dir DIR]         list the models Kiln can see
  kiln bench [options]            full-size engine benchmark (random weights, real shapes)
`;

const [command, ...rest] = process.argv.slice(2);

async function main(): Promise<number> {
  switch (command) {
    case 'serve':
      return (await import('./serve.ts')).runServe(rest);
    case 'worker':
      return (await import('./worker.ts')).runWorker(rest);
    case 'generate':
      return (await import('./generate.ts')).runGenerate(rest);
    case 'models':
      return (await import('./models.ts')).runModels(rest);
    case 'bench': {
      process.argv = [process.argv[0]!, 'bench', ...rest];
      await import('../../bench/engine-bench.ts');
      return 0;
    }
    case undefined:
    case '-h':
    case '--help':
    case 'help':
      process.stdout.write(USAGE);
      return command === undefined ? 1 : 0;
    default:
      process.stderr.write(`kiln: unknown command '${command}'\n\n${USAGE}`);
      return 1;
  }
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    const e = err as Error;
    process.stderr.write(`kiln: ${e.message}\n`);
    if (process.env.KILN_DEBUG) process.stderr.write(`${e.stack}\n`);
    process.exitCode = 1;
  },
);
