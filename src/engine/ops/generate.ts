// The `generate` operation: txt2img / img2img (with an optional SDXL refiner) through the pipeline stages.
import type { GenerateRequest, GenerateResult } from '../api.ts';
import { runPipeline } from '../pipelines/generate.ts';
import type { EngineOp } from './types.ts';

export const generate: EngineOp<GenerateRequest, GenerateResult> = {
  name: 'generate',
  run: (req, ctx) =>
    ctx.models.using([req.model, req.refiner?.model], async ([base, refiner]) => {
      // A size of 0 means the model's native size.
      const sized = { ...req, width: req.width || base!.nativeSize, height: req.height || base!.nativeSize };
      return runPipeline({ base: base!, refiner }, sized, ctx, ctx.overrides);
    }),
};
