// Worker-thread side of ThreadedEngine: owns the engine, so onnxruntime's blocking run() never stalls HTTP.
// It runs whatever operation a message names through engine.run(). Abort arrives two ways: a message (seen
// when the engine yields to the event loop) and a shared flag holding the aborted run's id, checked on every
// progress callback (seen even when the engine never yields between steps).
import { parentPort, workerData } from 'node:worker_threads';
import { pathToFileURL } from 'node:url';
import type { OpName } from '../engine/index.ts';
import type { CreateEngine, Engine, EngineOptions } from './engine.ts';
import { toWorkerError, transferables, type FromWorker, type ToWorker } from './engine-protocol.ts';

interface Init {
  module: string;
  options: EngineOptions;
  abortFlag: Int32Array;
}

const { module, options, abortFlag } = workerData as Init;
const port = parentPort!;
const send = (msg: FromWorker, transfer: ArrayBuffer[] = []) => port.postMessage(msg, transfer);

let engine: Engine;
const running = new Map<number, AbortController>();

async function init(): Promise<void> {
  try {
    const mod = (await import(pathToFileURL(module).href)) as { createEngine?: CreateEngine };
    if (typeof mod.createEngine !== 'function') throw new Error(`${module} does not export createEngine()`);
    engine = await mod.createEngine({
      ...options,
      onModelsChanged: (models) => send({ type: 'models', models: models.map(({ path, name, family }) => ({ path, name, family })) }),
    });
    if (typeof engine.run !== 'function') throw new Error(`${module}: createEngine() returned an engine without run(op, input, options)`);
    const samplers = await engine.listSamplers();
    const schedules = await engine.listSchedules();
    send({ type: 'ready', samplers, schedules });
  } catch (e) {
    send({ type: 'init-error', error: toWorkerError(e) });
  }
}

async function run(msg: Extract<ToWorker, { type: 'run' }>): Promise<void> {
  const { id } = msg;
  const controller = new AbortController();
  running.set(id, controller);
  const checkAbort = () => {
    if (!controller.signal.aborted && Atomics.load(abortFlag, 0) === id) controller.abort(new Error('aborted'));
  };
  try {
    // The op name is checked by the engine itself (an unknown one is a KilnInputError).
    const output = await engine.run(msg.op as OpName, msg.input as never, {
      signal: controller.signal,
      preview: msg.preview,
      onProgress: (event) => {
        send({ type: 'progress', id, event }, transferables(event.preview));
        checkAbort();
      },
    });
    send({ type: 'result', id, output, aborted: controller.signal.aborted }, transferables(output));
  } catch (e) {
    send({ type: 'error', id, error: toWorkerError(e), aborted: controller.signal.aborted });
  } finally {
    running.delete(id);
  }
}

port.on('message', (msg: ToWorker) => {
  if (msg.type === 'run') void run(msg);
  else if (msg.type === 'abort') running.get(msg.id)?.abort(new Error('aborted'));
  else if (msg.type === 'close') {
    Promise.resolve(engine?.close())
      .catch(() => undefined)
      .finally(() => process.exit(0));
  }
});

await init();
