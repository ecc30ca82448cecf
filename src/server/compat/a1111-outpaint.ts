// A1111's "Poor man's outpainting" img2img script (scripts/poor_mans_outpainting.py) as the job model's outpaint:
// script_args = [pixels, mask_blur, inpainting_fill, direction[]], defaults 128, 4, 0 (fill), all four sides.
// Kiln paints the whole grown canvas at once rather than A1111's per-tile passes.
import type { OutpaintSpec } from '../../queue/job-spec.ts';
import { HttpError } from '../errors.ts';

export const POOR_MANS_OUTPAINTING = "Poor man's outpainting";
const SIDES = { left: 'left', right: 'right', up: 'top', down: 'bottom' } as const;

export function isPoorMansOutpainting(scriptName: string | null | undefined): boolean {
  return typeof scriptName === 'string' && scriptName.trim().toLowerCase() === POOR_MANS_OUTPAINTING.toLowerCase();
}

export function poorMansOutpaint(args: unknown[] | null | undefined): OutpaintSpec {
  const [pixels = 128, blur = 4, fill = 0, direction = Object.keys(SIDES)] = args ?? [];
  const bad = (what: string) =>
    new HttpError(422, 'invalid_request', `script_args: ${what} (Poor man's outpainting takes [pixels, mask_blur, inpainting_fill, direction])`, 'script_args');
  if (!Number.isInteger(pixels) || (pixels as number) < 8 || (pixels as number) > 256) throw bad('pixels must be an integer from 8 to 256');
  if (typeof blur !== 'number' || blur < 0 || blur > 64) throw bad('mask_blur must be from 0 to 64');
  const fillIndex = typeof fill === 'string' ? ['fill', 'original', 'latent noise', 'latent nothing'].indexOf(fill) : fill;
  if (!Number.isInteger(fillIndex) || (fillIndex as number) < 0 || (fillIndex as number) > 3) throw bad('inpainting_fill must be 0-3 or its name');
  if (!Array.isArray(direction) || direction.length === 0 || direction.length > 4 || !direction.every((d) => typeof d === 'string' && d in SIDES))
    throw bad('direction must be a non-empty list of "left", "right", "up", "down"');
  const spec: OutpaintSpec = { fill: fillIndex as number, blur };
  for (const d of direction as (keyof typeof SIDES)[]) spec[SIDES[d]] = pixels as number;
  return spec;
}
