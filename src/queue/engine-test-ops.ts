// Test-only engine behaviours for the fault suite, active only in an engine process started with
// KILN_TEST_OPS=1 (never in production). A generate request whose first prompt starts with a marker:
//   [kiln-test:block=N]  blocks the engine process synchronously for N ms (at most 120 s) before generating,
//                        as one long native evaluation does: no progress, no event loop, abort unseen;
//   [kiln-test:segv]     ends the engine process with SIGSEGV, as a native crash does.
import type { Engine } from './engine.ts';

const MARKER = /^\[kiln-test:(block|segv)(?:=(\d{1,6}))?\]/;
const MAX_BLOCK_MS = 120_000;

function blockFor(ms: number): void {
  const end = Date.now() + Math.min(ms, MAX_BLOCK_MS);
  while (Date.now() < end) {
    /* hold the process on purpose, like a native call */
  }
}

export function registerTestOps(engine: Engine): Engine {
  const run = engine.run.bind(engine);
  const wrapped: Engine['run'] = (op, input, opts) => {
    const prompt = op === 'generate' ? (input as { prompts?: unknown[] }).prompts?.[0] : undefined;
    const m = typeof prompt === 'string' ? MARKER.exec(prompt) : null;
    if (m?.[1] === 'segv') process.kill(process.pid, 'SIGSEGV');
    if (m?.[1] === 'block') blockFor(Number(m[2] ?? 0));
    return run(op, input, opts);
  };
  return { ...engine, run: wrapped, generate: (req, o) => wrapped('generate', req, o) } as Engine;
}
