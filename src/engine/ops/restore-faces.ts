// The `restore-faces` operation: A1111 Extras' GFPGAN / CodeFormer pass over one image (pipelines/face-restore.ts).
import type { FaceRestoreSettings, RawImage } from '../api.ts';
import { restoreImageFaces } from '../pipelines/face-restore.ts';
import type { EngineOp } from './types.ts';

export interface RestoreFacesRequest {
  image: RawImage;
  settings: FaceRestoreSettings;
}

export const restoreFacesOp: EngineOp<RestoreFacesRequest, { image: RawImage; faces: number }> = {
  name: 'restore-faces',
  run: (req, ctx) => restoreImageFaces(req.image, req.settings, ctx.models.upscalerSettings),
};
