// The `generate` operation: txt2img / img2img (with an optional SDXL refiner) through the pipeline stages.
import type { GenerateRequest, GenerateResult } from '../api.ts';
import { defaultCacheDir } from '../onnx/cache.ts';
import { runPipeline } from '../pipelines/generate.ts';
import { runFlowPipeline } from '../pipelines/flow-generate.ts';
import { transparentPatch, validateTransparent } from '../pipelines/transparent.ts';
import type { EngineOp } from './types.ts';

export const generate: EngineOp<GenerateRequest, GenerateResult> = {
  name: 'generate',
  run: (req, ctx) =>
    ctx.models.using([req.model, req.refiner?.model], async ([base, refiner]) => {
      // A size of 0 means the model's native size.
      const sized = { ...req, width: req.width || base!.nativeSize, height: req.height || base!.nativeSize };
      // Flux / SD3: their own pipeline (no adapters yet: flow-plan.ts refuses LoRAs by name).
      if (base!.family.kind === 'flow') return runFlowPipeline(base!, sized, ctx, ctx.overrides);
      // LoRAs are merged into the base model's graphs (a view of it keyed by the LoRA set); the refiner stays plain.
      validateTransparent(base!, req);
      // LayerDiffuse's UNet patch is one more adapter (after the request's LoRAs; it adds no infotext hash).
      const adapters = [...(req.loras ?? []), ...transparentPatch(req.transparent, base!.settings.cacheDir ?? defaultCacheDir())];
      const withLoras = adapters.length || req.embeddings?.length ? base!.withAdapters(adapters, req.embeddings ?? []) : base!;
      return runPipeline({ base: withLoras, refiner }, sized, ctx, ctx.overrides);
    }),
};
