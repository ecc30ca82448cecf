// Progress of graph builds (the first start of a model builds its graphs: tens of seconds for SD1.5's UNet), told to
// whoever runs the operation that needs them. The listener rides the operation's async context (engine.run sets it),
// so the build code deep inside a pipeline stage reports without every stage passing a callback along.
import { AsyncLocalStorage } from 'node:async_hooks';
import type { GraphBuildProgress } from '../api.ts';

type Listener = (p: GraphBuildProgress) => void;

const current = new AsyncLocalStorage<{ listener: Listener; built: number }>();

/** Runs `fn` with build progress going to `listener` (none: builds stay silent). */
export function withBuildListener<T>(listener: Listener | undefined, fn: () => T): T {
  return listener ? current.run({ listener, built: 0 }, fn) : fn();
}

/** Bytes between two progress reports of one build (a report is cheap, but a UNet writes thousands of tensors). */
const REPORT_EVERY_FRACTION = 0.05;

/**
 * A reporter for one graph build in the current operation, or undefined when nobody listens. `totalBytes` is the
 * expected size of the graph's weights (an estimate: constants and precision change it), so the fraction is capped
 * below 1 until the build is done.
 */
export function buildReporter(network: string, totalBytes: number): { written(bytes: number): void; done(): void } | undefined {
  const ctx = current.getStore();
  if (!ctx) return undefined;
  const index = ++ctx.built;
  const started = Date.now();
  let lastFraction = 0;
  let lastBytes = 0;
  const send = (bytes: number, done: boolean) =>
    ctx.listener({
      network,
      index,
      bytes,
      totalBytes,
      fraction: done ? 1 : totalBytes > 0 ? Math.min(0.99, bytes / totalBytes) : 0,
      elapsedMs: Date.now() - started,
      done,
    });
  send(0, false);
  return {
    written(bytes) {
      lastBytes = bytes;
      const f = totalBytes > 0 ? bytes / totalBytes : 0;
      if (f - lastFraction < REPORT_EVERY_FRACTION) return;
      lastFraction = f;
      send(bytes, false);
    },
    done: () => send(lastBytes, true),
  };
}
