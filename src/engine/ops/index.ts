// The engine's operations by name. Adding one: a file in this folder exporting an EngineOp, and its entry here.
import { embedImageOp } from './embed-image.ts';
import { deviceCheck } from './device-check.ts';
import { generate } from './generate.ts';
import { interrogateOp } from './interrogate.ts';
import { load } from './load.ts';
import type { EngineOp } from './types.ts';
import { upscale } from './upscale.ts';
import { restoreFacesOp } from './restore-faces.ts';

export const OPS = {
  generate,
  load,
  upscale,
  'embed-image': embedImageOp,
  interrogate: interrogateOp,
  'restore-faces': restoreFacesOp,
  'device-check': deviceCheck,
} as const;

export type Ops = typeof OPS;
export type OpName = keyof Ops;
export type OpInput<N extends OpName> = Ops[N] extends EngineOp<infer I, infer _O> ? I : never;
export type OpOutput<N extends OpName> = Ops[N] extends EngineOp<infer _I, infer O> ? O : never;

export function isOpName(name: string): name is OpName {
  return Object.hasOwn(OPS, name);
}

export type { EngineOp, OpContext } from './types.ts';
