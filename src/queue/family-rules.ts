// Request rules that depend on the model's family, checked at submission once the family is known (the engine
// checks them again for every other caller): the flow transformers (FLUX.1, SD3) pack or patch 2x2 latent pixels,
// so their image sides are multiples of 16.
import { SpecError, type JobSpec } from './job-spec.ts';

const SIDE_MULTIPLE: Readonly<Record<string, number>> = { flux: 16, sd3: 16 };

export function checkFamilySpec(spec: JobSpec, family: string | null | undefined): void {
  const multiple = family ? SIDE_MULTIPLE[family] : undefined;
  if (!multiple) return;
  for (const [field, v] of [
    ['width', spec.width],
    ['height', spec.height],
  ] as const) {
    // 0 is the model's native size.
    if (v !== 0 && v % multiple !== 0) {
      throw new SpecError(field, `must be a multiple of ${multiple} for ${family === 'flux' ? 'FLUX.1' : 'SD3'} models, got ${v}`);
    }
  }
}
