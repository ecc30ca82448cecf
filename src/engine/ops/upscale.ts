// The `upscale` operation: A1111's Extras upscale of one image (pipelines/extras-upscale.ts).
import { extrasUpscale, type UpscaleRequest, type UpscaleResult } from '../pipelines/extras-upscale.ts';
import type { EngineOp } from './types.ts';

export const upscale: EngineOp<UpscaleRequest, UpscaleResult> = {
  name: 'upscale',
  run: (req, ctx) =>
    extrasUpscale(req, ctx.models.upscalerSettings, (fraction) =>
      ctx.onProgress?.({ phase: 'upscaling', step: 0, totalSteps: 0, fraction: Math.min(0.99, fraction) }),
    ),
};
