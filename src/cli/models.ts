// `kiln models`: what the server would see in the models folder, with each checkpoint's detected family.
import { parseArgs } from 'node:util';
import { inspectModel } from '../engine/index.ts';
import { loadConfig, parseFlags } from '../server/config.ts';
import { ModelRegistry, MODEL_FOLDERS, type ModelKind } from '../server/models/registry.ts';

export async function runModels(argv: string[]): Promise<number> {
  const { values } = parseArgs({ args: argv, options: { inspect: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } }, strict: false });
  if (values.help) {
    process.stdout.write(
      'Usage: kiln models [--models-dir DIR] [--data-dir DIR] [--inspect]\n  --inspect  open each checkpoint to report its family and prediction type\n',
    );
    return 0;
  }
  const { flags } = parseFlags(argv.filter((a) => a !== '--inspect'));
  const config = loadConfig({ flags });
  const registry = new ModelRegistry(config);
  process.stdout.write(`models folder: ${config.modelsDir}\n`);
  for (const kind of Object.keys(MODEL_FOLDERS) as ModelKind[]) {
    const entries = registry.list(kind);
    process.stdout.write(`\n${kind}s (${entries.length}):\n`);
    for (const e of entries) {
      let detail: string = e.format;
      if (kind === 'checkpoint' && values.inspect) {
        try {
          const m = await inspectModel({ path: e.path });
          detail = `${m.family}, ${m.prediction}, ${e.format}`;
        } catch (err) {
          detail = `unreadable: ${(err as Error).message}`;
        }
      }
      const labels = e.labels.length ? ` [${e.labels.join(', ')}]` : '';
      process.stdout.write(`  ${e.name}${labels}  (${detail})  ${e.path}\n`);
    }
  }
  return 0;
}
