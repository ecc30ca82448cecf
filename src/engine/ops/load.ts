// The `load` operation: loads a model ahead of its first use (e.g. at server start, so /ready means something).
import type { LoadedModelInfo, ModelRef } from '../api.ts';
import { loadedModelInfo } from '../pipelines/model-sessions.ts';
import type { EngineOp } from './types.ts';

export const load: EngineOp<ModelRef, LoadedModelInfo> = {
  name: 'load',
  run: async (ref, ctx) => loadedModelInfo(await ctx.models.get(ref)),
};
