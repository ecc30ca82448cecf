// The sampling plan of a request: the model family's noise schedule, then sampler + schedule -> sigmas.
import type { GenerateRequest } from '../api.ts';
import { planSampling, type ModelSchedule, type SamplingPlan } from '../samplers/index.ts';
import type { ModelSessions } from './model-sessions.ts';

export interface Plan extends SamplingPlan {
  modelSchedule: ModelSchedule;
}

export function planRequest(ms: ModelSessions, req: GenerateRequest): Plan {
  const flavour = req.flavour ?? 'diffusers';
  const modelSchedule = ms.unetFamily.modelSchedule(ms.model.schedulerConfig, flavour);
  const plan = planSampling({
    sampler: req.sampler,
    schedule: req.schedule,
    steps: req.steps,
    model: modelSchedule,
    flavour,
    scheduleTables: ms.unetFamily.scheduleTables,
  });
  return { ...plan, modelSchedule };
}
