// `kiln models`: what the server would see — every models root (Kiln, A1111 or ComfyUI layout) and the Hugging
// Face cache — with each model's kind, family (from its headers/keys; --no-inspect skips opening files) and size.
import { inspectLora, inspectModel } from '../engine/index.ts';
import { loadConfig } from '../server/config.ts';
import { sizeOf } from '../server/models/size.ts';
import { KIND_FOLDERS, ModelRegistry, type ModelEntry, type ModelKind } from '../server/models/registry.ts';
import type { Flags } from './options.ts';
import { formatBytes } from './progress-bar.ts';

async function familyOf(e: ModelEntry): Promise<string> {
  try {
    if (e.kind === 'checkpoint') return (await inspectModel({ path: e.path })).family;
    if (e.kind === 'lora') return inspectLora(e.path).family ?? '?';
  } catch (err) {
    return `unreadable: ${(err as Error).message.split('\n')[0]}`;
  }
  return '-';
}

export async function runModels(flags: Flags, opts: { inspect?: boolean } = {}): Promise<number> {
  const config = loadConfig({ flags });
  const registry = new ModelRegistry(config);
  for (const r of registry.roots) process.stdout.write(`models root: ${r.path} (${r.layout} layout)\n`);
  process.stdout.write(`Hugging Face cache: ${config.hfCacheDir}\n`);
  const rows: string[][] = [['KIND', 'NAME', 'FAMILY', 'SIZE', 'FORMAT', 'PATH']];
  for (const kind of Object.keys(KIND_FOLDERS) as ModelKind[]) {
    for (const e of registry.list(kind)) {
      let size = '?';
      try {
        size = formatBytes(sizeOf(e.path));
      } catch {
        // a dangling link: shown with '?'
      }
      const labels = e.labels.length ? ` [${e.labels.join(', ')}]` : '';
      rows.push([kind, `${e.name}${labels}`, opts.inspect === false ? '-' : await familyOf(e), size, e.format, e.path]);
    }
  }
  const widths = rows[0]!.map((_, i) => Math.min(60, Math.max(...rows.map((r) => r[i]!.length))));
  for (const r of rows) process.stdout.write(`${r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('  ')}\n`);
  if (rows.length === 1) process.stdout.write('(no models found; kiln pull sd15, or --models-dir / --models-root an A1111 or ComfyUI models folder)\n');
  return 0;
}
