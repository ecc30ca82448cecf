// Worker-thread side of ThreadedEngine: owns the engine, so onnxruntime's blocking run() never stalls HTTP.
// Abort arrives two ways: a message (seen when the engine yields to the event loop) and a shared flag that
// is checked on every progress callback (seen even when the engine never yields between steps).
import { parentPort, workerData } from 'node:worker_threads';
import { pathToFileURL } from 'node:url';
import type { GenerateOptions, GenerateRequest, GenerateResult } from '../engine/api.ts';
import type { CreateEngine, Engine, EngineOptions } from './engine.ts';
import type { ToWorker, FromWorker, WorkerError } from './engine-protocol.ts';

interface Init {
  module: string;
  options: EngineOptions;
  abortFlag: Int32Array;
}

const { module, options, abortFlag } = workerData as Init;
const port = parentPort!;
const send = (msg: FromWorker, transfer: ArrayBuffer[] = []) => port.postMessage(msg, transfer);

function toWorkerError(e: unknown): WorkerError {
  const err = e as Error & { field?: string; file?: string };
  return { name: err?.name ?? 'Error', message: err?.message ?? String(e), field: err?.field, file: err?.file, stack: err?.stack };
}

let engine: Engine;
let current: { id: number; controller: AbortController } | undefined;

async function init(): Promise<void> {
  try {
    const mod = (await import(pathToFileURL(module).href)) as { createEngine?: CreateEngine };
    if (typeof mod.createEngine !== 'function') throw new Error(`${module} does not export createEngine()`);
    engine = await mod.createEngine({
      ...options,
      onModelsChanged: (models) => send({ type: 'models', models: models.map(({ path, name, family }) => ({ path, name, family })) }),
    });
    const samplers = await engine.listSamplers();
    const schedules = await engine.listSchedules();
    send({ type: 'ready', samplers, schedules });
  } catch (e) {
    send({ type: 'init-error', error: toWorkerError(e) });
  }
}

async function generate(id: number, req: GenerateRequest, preview: GenerateOptions['preview']): Promise<void> {
  const controller = new AbortController();
  current = { id, controller };
  Atomics.store(abortFlag, 0, 0);
  const checkAbort = () => {
    if (!controller.signal.aborted && Atomics.load(abortFlag, 0) === 1) controller.abort(new Error('aborted'));
  };
  try {
    const result: GenerateResult = await engine.generate(req, {
      signal: controller.signal,
      preview,
      onProgress: (event) => {
        send({ type: 'progress', id, event }, previewTransfer(event.preview?.data));
        checkAbort();
      },
    });
    const transfer = result.images.map((im) => im.image.data.buffer as ArrayBuffer).filter((b, i, all) => all.indexOf(b) === i);
    send({ type: 'done', id, result, aborted: controller.signal.aborted }, transfer);
  } catch (e) {
    send({ type: 'error', id, error: toWorkerError(e), aborted: controller.signal.aborted });
  } finally {
    current = undefined;
  }
}

/** A preview's buffer moves to the main thread when the preview owns all of it; a view into a larger buffer is copied. */
function previewTransfer(data: Uint8Array | undefined): ArrayBuffer[] {
  if (!data || !(data.buffer instanceof ArrayBuffer)) return [];
  return data.byteOffset === 0 && data.byteLength === data.buffer.byteLength ? [data.buffer] : [];
}

async function load(id: number, ref: import('../engine/api.ts').ModelRef): Promise<void> {
  try {
    await engine.load?.(ref);
    send({ type: 'loaded', id });
  } catch (e) {
    send({ type: 'loaded', id, error: toWorkerError(e) });
  }
}

port.on('message', (msg: ToWorker) => {
  if (msg.type === 'generate') void generate(msg.id, msg.req, msg.preview);
  else if (msg.type === 'load') void load(msg.id, msg.ref);
  else if (msg.type === 'abort' && current?.id === msg.id) current.controller.abort(new Error('aborted'));
  else if (msg.type === 'close') {
    Promise.resolve(engine?.close())
      .catch(() => undefined)
      .finally(() => process.exit(0));
  }
});

await init();
