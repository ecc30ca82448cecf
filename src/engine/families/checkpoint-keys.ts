// Key renamings for text encoders in single-file (LDM) checkpoints, as the families use them.
import { mapHfClip, mapOpenClip } from '../weights/ldm-keys.ts';
import type { CheckpointTextEncoder } from './types.ts';

export { mapHfClip };

/** OpenCLIP's layout (SD2's H, SDXL's bigG): optionally without its last layer, with or without the projection. */
export function openClip(opts: { dropLastLayer: boolean; withProjection: boolean }): CheckpointTextEncoder['rename'] {
  return (file, prefix) => mapOpenClip(file, prefix, opts);
}
