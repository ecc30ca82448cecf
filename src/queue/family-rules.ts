// Request rules that depend on the model's family, checked at submission once the family is known (the engine
// checks them again for every other caller): the flow transformers (FLUX.1, SD3) pack or patch 2x2 latent pixels,
// so their image sides are multiples of 16, and only the ODE samplers and flow schedules apply to them.
import { KilnInputError, resolveFlowSampling } from '../engine/index.ts';
import { SpecError, type JobSpec } from './job-spec.ts';

const SIDE_MULTIPLE: Readonly<Record<string, number>> = { flux: 16, sd3: 16 };
const FLOW_LABELS: Readonly<Record<string, string>> = { flux: 'FLUX.1', sd3: 'SD3' };

export function checkFamilySpec(spec: JobSpec, family: string | null | undefined): void {
  const multiple = family ? SIDE_MULTIPLE[family] : undefined;
  if (!multiple) return;
  for (const [field, v] of [
    ['width', spec.width],
    ['height', spec.height],
  ] as const) {
    // 0 is the model's native size.
    if (v !== 0 && v % multiple !== 0) {
      throw new SpecError(field, `must be a multiple of ${multiple} for ${FLOW_LABELS[family!]} models, got ${v}`);
    }
  }
  try {
    resolveFlowSampling(spec.sampler, spec.schedule, FLOW_LABELS[family!]!);
  } catch (e) {
    if (!(e instanceof KilnInputError)) throw e;
    // The surface's own field name when it says one (A1111 sampler_name/scheduler), else the native one.
    const field = e.field === 'sampler_name' ? (spec.sourceFields?.sampler ?? 'sampler') : (spec.sourceFields?.schedule ?? 'schedule');
    throw new SpecError(field, e.message.replace(/^(sampler_name|scheduler): /, ''));
  }
}
