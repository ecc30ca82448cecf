// `kiln pull`: a preset, a Hugging Face repo (or one file of it), a Civitai model or an https URL, with a progress
// bar (bytes, rate, ETA), resume of an interrupted transfer, and the checksum the source publishes. Lands where
// `kiln serve` looks (the HF cache for repos; the kind's folder in the models roots otherwise).
import { DownloadError } from '../download/fetch-file.ts';
import { loadConfig } from '../server/config.ts';
import { featureFolderIn, PULL_PRESETS, pull, type PullKind } from '../server/models/pull.ts';
import { ModelRegistry } from '../server/models/registry.ts';
import type { Flags } from './options.ts';
import { ProgressBar } from './progress-bar.ts';

export async function runPull(what: string | undefined, opts: { kind?: string; name?: string; list?: boolean }, flags: Flags): Promise<number> {
  if (opts.list || !what) {
    process.stdout.write('Presets (kiln pull NAME):\n');
    for (const [name, p] of Object.entries(PULL_PRESETS)) process.stdout.write(`  ${name.padEnd(22)} ${p.kind.padEnd(12)} ${p.description}\n`);
    return what || opts.list ? 0 : 1;
  }
  const config = loadConfig({ flags });
  if (config.offline) throw new Error('--offline / KILN_OFFLINE is set: nothing can be downloaded');
  const registry = new ModelRegistry(config);
  const primary = registry.roots[0]!;
  const bar = new ProgressBar(what);
  const started = Date.now();
  try {
    const got = await pull(what, {
      folderFor: (kind) => registry.folderFor(kind),
      // Feature files go where their catalogs read them: the models folder (--models-dir).
      featureFolder: featureFolderIn(primary.path, primary.ownedByKiln),
      ...(opts.kind ? { kind: opts.kind as PullKind } : {}),
      ...(opts.name ? { name: opts.name } : {}),
      hfCacheDir: config.hfCacheDir,
      hfEndpoint: config.hfEndpoint,
      civitaiEndpoint: config.civitaiEndpoint,
      onProgress: (p) => bar.download(p),
    });
    const seconds = ((Date.now() - started) / 1000).toFixed(1);
    bar.done(
      got.map((g) => `${g.kind} ${g.name}${g.family ? ` (${g.family})` : ''}: ${g.path}${g.sha256 ? `, sha256 ${g.sha256.slice(0, 12)}…` : ''}`).join('\n') +
        `\ndone in ${seconds}s`,
    );
    return 0;
  } catch (e) {
    bar.done('');
    if (e instanceof DownloadError && e.code === 'network') process.stderr.write('kiln: the partial file is kept; run the same command again to resume\n');
    throw e;
  }
}
