// Live previews: keeps the denoiser's latest x0 estimate and maps it to RGB (the latent space's "Approx cheap"
// table) every N model evaluations and after the last one.
import type { RawImage } from '../../api.ts';
import type { LatentSpace } from '../../families/types.ts';
import { approxCheapPreview } from '../../preview.ts';
import type { DenoiserWrapper } from '../denoise.ts';

export class PreviewTap {
  private last: Float32Array | undefined;

  constructor(
    private readonly everyEvals: number,
    private readonly space: LatentSpace,
    /** Latent shape of one image [C, h, w]. */
    private readonly shape: [number, number, number],
  ) {}

  readonly wrapper: DenoiserWrapper = (inner) => async (x, sigma) => (this.last = await inner(x, sigma));

  /** The preview due after `done` of `total` evaluations, if one is. */
  previewAt(done: number, total: number): RawImage | undefined {
    if (!this.last || (done % this.everyEvals !== 0 && done < total)) return undefined;
    return approxCheapPreview(this.last, this.shape[0], this.shape[1], this.shape[2], this.space);
  }

  /** Drops the held latent (the pass is over). */
  clear(): void {
    this.last = undefined;
  }
}
