// `kiln serve`: load config (flags > env > file > defaults), make sure the default model is present
// (downloading a Hugging Face repo once if needed), start the HTTP server, and shut down gracefully on
// SIGINT/SIGTERM: stop accepting, let the running job finish or re-queue it, close the database.
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parseFlags, loadConfig, optionsHelp } from '../server/config.ts';
import type { KilnConfig } from '../server/config.ts';
import { assertSafeBinding, buildApp } from '../server/app.ts';
import { ensureHfModel, isHfRepoId } from '../server/models/hf.ts';

/** What closing connections, the engine process and the database may take after the job is stopped. */
const SHUTDOWN_MARGIN_MS = 10_000;

const USAGE = `Usage: kiln serve [--model M] [--port 7860] [--host 127.0.0.1] [--data-dir DIR] [options]

`;

/** A default model named by Hugging Face repo id (and not found locally) is downloaded into the cache. */
async function ensureDefaultModel(config: KilnConfig): Promise<void> {
  const m = config.model;
  if (!m || !isHfRepoId(m) || existsSync(resolve(m))) return;
  const local = ['', '.safetensors'].some((ext) => existsSync(join(config.modelsDir, 'checkpoints', `${m}${ext}`)));
  if (local || Object.keys(config.modelAliases).includes(m)) return;
  await ensureHfModel(m, config.cacheDir, { offline: config.offline });
}

export async function runServe(argv: string[]): Promise<number> {
  const { flags } = parseFlags(argv);
  if (flags.help) {
    process.stdout.write(`${USAGE + optionsHelp()}\n`);
    return 0;
  }
  const config = loadConfig({ flags });
  assertSafeBinding(config);
  await ensureDefaultModel(config);
  const app = await buildApp(config);
  const address = await app.listen({ host: config.host, port: config.port });
  const ready = app.kiln.readiness();
  process.stderr.write(
    `kiln: listening on ${address} (docs at ${address}/docs)` +
      `${config.keys.length ? `, ${config.keys.length} API key(s)` : ', no API keys'}` +
      `${ready.ready ? '' : `; not ready yet: ${ready.reason}`}\n`,
  );

  return new Promise<number>((done) => {
    let closing = false;
    const shutdown = (signal: string) => {
      if (closing) {
        process.stderr.write('kiln: second signal, exiting now\n');
        process.exit(1);
      }
      closing = true;
      const { shutdownGraceMs, abortGraceMs } = config.queue;
      process.stderr.write(`kiln: ${signal}: shutting down (the running job gets ${shutdownGraceMs / 1000} s to finish, then it is re-queued)\n`);
      // The grace, then the abort grace before the engine process is killed, then a margin for closing
      // connections and the database: past that something hangs, and exiting beats holding the port forever.
      const deadlineMs = shutdownGraceMs + abortGraceMs + SHUTDOWN_MARGIN_MS;
      setTimeout(() => {
        process.stderr.write(`kiln: shutdown did not finish within ${deadlineMs / 1000} s; exiting now\n`);
        process.exit(1);
      }, deadlineMs).unref();
      app.close().then(
        () => done(0),
        (e: Error) => {
          process.stderr.write(`kiln: shutdown failed: ${e.message}\n`);
          done(1);
        },
      );
    };
    process.once('SIGINT', () => shutdown('SIGINT'));
    process.once('SIGTERM', () => shutdown('SIGTERM'));
  });
}
