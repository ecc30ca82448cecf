// `kiln serve`: load config (flags > env > file > defaults), make sure the default model is present
// (downloading a Hugging Face repo once if needed), start the HTTP server, and shut down gracefully on
// SIGINT/SIGTERM: stop accepting, let the running job finish or re-queue it, close the database.
// Startup fails fast and clean: an unknown model, a data directory in use, a damaged database, an engine or
// plugin that fails, a port that cannot be bound each end the process with one line on stderr and a non-zero
// exit code, with nothing left running. The queue starts only once the port is bound.
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { loadConfig, printableConfig } from '../server/config.ts';
import type { Flags } from './options.ts';
import type { KilnConfig } from '../server/config.ts';
import { assertSafeBinding, buildApp } from '../server/app.ts';
import { ensureHfModel, isHfRepoId } from '../server/models/hf.ts';
import { ModelRegistry } from '../server/models/registry.ts';
import { ProgressBar } from './progress-bar.ts';
import { CorruptDatabaseError } from '../queue/sqlite-backend.ts';
import { diskFullMessage, isDiskFull } from '../storage/faults.ts';

/** Exit codes: 1 for any failed start (config, model, port, lock, engine), 65 (EX_DATAERR) for a damaged database. */
export const EXIT_STARTUP_FAILED = 1;
export const EXIT_CORRUPT_DATABASE = 65;

/** How long startup waits for the engine to come up (not for the model to load) before listening anyway. */
const ENGINE_START_WAIT_MS = 120_000;

/** What closing connections, the engine process and the database may take after the job is stopped. */
const SHUTDOWN_MARGIN_MS = 10_000;

/** A default model named by Hugging Face repo id (and not found locally) is downloaded into the cache. */
export async function ensureDefaultModel(config: KilnConfig): Promise<void> {
  const m = config.model;
  if (!m || !isHfRepoId(m) || existsSync(resolve(m))) return;
  // Found in a models folder, a label, or already in the Hugging Face cache: nothing to fetch.
  if (new ModelRegistry(config).default) return;
  const bar = new ProgressBar(`downloading ${m}`);
  const dir = await ensureHfModel(m, config.hfCacheDir, { offline: config.offline, endpoint: config.hfEndpoint, onProgress: (p) => bar.download(p) });
  bar.done(`${m} is in the Hugging Face cache: ${dir}`);
}

/** A --model that names nothing is an error at start, not a server without a default model. */
function assertKnownModel(config: KilnConfig): void {
  const models = new ModelRegistry(config);
  assertKnownVae(models, config);
  if (!config.model || models.default) return;
  const names = models.list().map((e) => e.name);
  throw new Error(
    `unknown model "${config.model}" (--model): not a file, nor a checkpoint or label in ${join(config.modelsDir, 'checkpoints')} ` +
      `(found: ${names.length ? names.join(', ') : 'none'}); give a path, a name from \`kiln models\`, or a Hugging Face repo id (owner/name)`,
  );
}

/** A --vae that names nothing is an error at start too, rather than every job's. */
function assertKnownVae(models: ModelRegistry, config: KilnConfig): void {
  if (!config.vae || models.findVae(config.vae) || existsSync(resolve(config.vae))) return;
  const names = models.list('vae').map((e) => e.name);
  throw new Error(
    `unknown VAE "${config.vae}" (--vae): not a file, nor a VAE in ${join(config.modelsDir, 'vae')} (found: ${names.length ? names.join(', ') : 'none'})`,
  );
}

/** Waits until the engine has started or failed (its model may still be loading); throws its start error. */
async function engineStarted(app: FastifyInstance): Promise<void> {
  const end = Date.now() + ENGINE_START_WAIT_MS;
  const status = app.kiln.engineStatus;
  while (status.state === 'starting' && Date.now() < end) {
    await Promise.race([app.kiln.engineReady, new Promise((r) => setTimeout(r, 25))]);
  }
  if (status.state === 'error') throw new Error(`the engine failed to start: ${status.error}`);
}

/** A listen error as the one thing to do about it. */
function listenError(e: NodeJS.ErrnoException, config: KilnConfig): Error {
  const where = `${config.host}:${config.port}`;
  if (e.code === 'EADDRINUSE')
    return new Error(`port ${config.port} on ${config.host} is already in use (another kiln or another program); stop it or choose another --port`);
  if (e.code === 'EACCES') return new Error(`not allowed to listen on ${where} (ports below 1024 need privileges); choose another --port`);
  if (e.code === 'EADDRNOTAVAIL' || e.code === 'ENOTFOUND')
    return new Error(`cannot listen on ${where}: ${config.host} is not an address of this machine; check --host`);
  return e;
}

/** One line on stderr, and the exit code for it. */
function startupFailed(e: unknown): number {
  const err = e as Error;
  const message = isDiskFull(e) ? diskFullMessage(e, 'the server cannot start') : String(err?.message ?? err);
  process.stderr.write(`kiln: ${message.replace(/\s*\n\s*/g, ' ')}\n`);
  if (process.env.KILN_DEBUG) process.stderr.write(`${err?.stack}\n`);
  return e instanceof CorruptDatabaseError ? EXIT_CORRUPT_DATABASE : EXIT_STARTUP_FAILED;
}

/** Builds and binds the server, then starts its queue; on any failure closes everything it started and throws. */
async function start(config: KilnConfig): Promise<{ app: FastifyInstance; address: string }> {
  assertSafeBinding(config);
  await ensureDefaultModel(config);
  assertKnownModel(config);
  const app = await buildApp(config, { startQueueOnReady: false });
  try {
    await engineStarted(app);
    const address = await app.listen({ host: config.host, port: config.port }).catch((e: NodeJS.ErrnoException) => {
      throw listenError(e, config);
    });
    await app.kiln.start();
    return { app, address };
  } catch (e) {
    // Nothing may outlive a failed start: the engine, the database and the data-dir lock go with the app.
    await app.close().catch(() => undefined);
    throw e;
  }
}

export async function runServe(flags: Flags, opts: { printConfig?: boolean } = {}): Promise<number> {
  let started: { app: FastifyInstance; address: string; config: KilnConfig };
  try {
    const config = loadConfig({ flags });
    if (opts.printConfig) {
      process.stdout.write(`${JSON.stringify(printableConfig(config), null, 2)}\n`);
      return 0;
    }
    started = { ...(await start(config)), config };
  } catch (e) {
    return startupFailed(e);
  }
  const { app, address, config } = started;
  // A full disk is answered (507) and retried where it happens; should one escape anyway, it must not end the
  // server: the disk will have space again, and every job is still in the database.
  process.on('unhandledRejection', (e) => {
    if (!isDiskFull(e)) throw e;
    process.stderr.write(`kiln: disk full: ${(e as Error).message}\n`);
  });
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
    // Announced only once the signal handlers are in place: a supervisor that signals right after this line
    // gets a clean shutdown, not the default signal death.
    const ready = app.kiln.readiness();
    process.stderr.write(
      `kiln: listening on ${address} (docs at ${address}/docs, playground at ${address}/)` +
        `${config.keys.length ? `, ${config.keys.length} API key(s)` : ', no API keys'}` +
        `${ready.ready ? '' : `; not ready yet: ${ready.reason}`}\n`,
    );
  });
}
