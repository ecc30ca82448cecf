// An engine operation: a name, and a function from a serialisable input to a serialisable output. The worker
// protocol carries any of them unchanged, so a new operation (upscale, caption, embed) is one file here plus
// its line in ops/index.ts.
import type { RunOptions } from '../api.ts';
import type { ModelPool } from '../model-pool.ts';
import type { NoiseOverrides } from '../pipelines/overrides.ts';

export interface OpContext extends RunOptions {
  models: ModelPool;
  /** In-process test hooks of the generate op; never sent over the protocol. */
  overrides?: NoiseOverrides;
}

/**
 * Input and output must be structured-clone serialisable (plain objects, arrays, numbers, strings, typed
 * arrays). A typed array that covers its whole buffer in the output is transferred, not copied, so the
 * operation must not keep using it.
 */
export interface EngineOp<Input, Output> {
  name: string;
  run(input: Input, ctx: OpContext): Promise<Output>;
}
