// Engine process side of ProcessEngine: owns the engine and onnxruntime, so a native crash or a kill takes down
// this process, never the server. It runs whatever operation a message names through engine.run(). Abort
// arrives two ways: a message (seen when the engine yields to the event loop, as the real engine does while
// onnxruntime runs) and a flag file holding the aborted run's id, read on every progress callback (seen even
// when an engine never yields between steps).
import { readFileSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import type { OpName } from '../engine/index.ts';
import type { CreateEngine, Engine } from './engine.ts';
import { type EngineProcessInit, toWorkerError, type FromWorker, type ToWorker } from './engine-protocol.ts';
import { registerTestOps } from './engine-test-ops.ts';

const init = JSON.parse(process.env.KILN_ENGINE_INIT ?? '{}') as EngineProcessInit;
if (!process.send) throw new Error('the engine process must be started with an IPC channel (ProcessEngine)');
const send = (msg: FromWorker) => process.send!(msg);

let engine: Engine;
const running = new Map<number, AbortController>();

async function start(): Promise<void> {
  try {
    const mod = (await import(pathToFileURL(init.module).href)) as { createEngine?: CreateEngine };
    if (typeof mod.createEngine !== 'function') throw new Error(`${init.module} does not export createEngine()`);
    engine = await mod.createEngine({
      ...init.options,
      onModelsChanged: (models) => send({ type: 'models', models: models.map(({ path, name, family }) => ({ path, name, family })) }),
    });
    if (typeof engine.run !== 'function') throw new Error(`${init.module}: createEngine() returned an engine without run(op, input, options)`);
    if (process.env.KILN_TEST_OPS === '1') engine = registerTestOps(engine);
    const samplers = await engine.listSamplers();
    const schedules = await engine.listSchedules();
    send({ type: 'ready', samplers, schedules });
  } catch (e) {
    send({ type: 'init-error', error: toWorkerError(e) });
  }
}

/** Whether the supervisor has flagged run `id` as aborted (the flag file holds the last aborted id). */
function flaggedAborted(id: number): boolean {
  if (!init.abortFlagFile) return false;
  try {
    return Number(readFileSync(init.abortFlagFile, 'utf8')) === id;
  } catch {
    return false;
  }
}

async function run(msg: Extract<ToWorker, { type: 'run' }>): Promise<void> {
  const { id } = msg;
  const controller = new AbortController();
  running.set(id, controller);
  try {
    // The op name is checked by the engine itself (an unknown one is a KilnInputError).
    const output = await engine.run(msg.op as OpName, msg.input as never, {
      signal: controller.signal,
      preview: msg.preview,
      onProgress: (event) => {
        send({ type: 'progress', id, event });
        if (!controller.signal.aborted && flaggedAborted(id)) controller.abort(new Error('aborted'));
      },
    });
    send({ type: 'result', id, output, aborted: controller.signal.aborted });
  } catch (e) {
    send({ type: 'error', id, error: toWorkerError(e), aborted: controller.signal.aborted });
  } finally {
    running.delete(id);
  }
}

process.on('message', (msg: ToWorker) => {
  if (msg.type === 'run') void run(msg);
  else if (msg.type === 'abort') running.get(msg.id)?.abort(new Error('aborted'));
  else if (msg.type === 'close') {
    Promise.resolve(engine?.close())
      .catch(() => undefined)
      .finally(() => process.exit(0));
  }
});
// The server going away (its IPC channel closing) ends this process too: an engine never outlives its server.
process.on('disconnect', () => process.exit(0));

await start();
