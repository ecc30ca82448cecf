// Live previews: keeps the denoiser's latest x0 estimate and maps it to RGB every N model evaluations and after
// the last one: with a TAESD decoder (tiny autoencoder, A1111's "TAESD" preview) at full image size, decoded
// inside the wrapper because the decoder runs asynchronously; otherwise with the latent space's "Approx cheap" table.
import type { RawImage } from '../../api.ts';
import type { LatentSpace } from '../../families/types.ts';
import { approxCheapPreview } from '../../preview.ts';
import type { DenoiserWrapper } from '../denoise.ts';
import { taesdPreview, type TaesdDecoder } from '../taesd-model.ts';

export class PreviewTap {
  private last: Float32Array | undefined;
  private evals = 0;
  /** The newest TAESD preview not yet handed out, and whether the latest x0 estimate has been decoded. */
  private decoded: RawImage | undefined;
  private lastDecoded = false;

  constructor(
    private readonly everyEvals: number,
    private readonly space: LatentSpace,
    /** Latent shape of one image [C, h, w]. */
    private readonly shape: [number, number, number],
    private readonly taesd?: TaesdDecoder,
  ) {}

  readonly wrapper: DenoiserWrapper = (inner) => async (x, sigma) => {
    const x0 = await inner(x, sigma);
    this.last = x0;
    this.lastDecoded = false;
    this.evals++;
    if (this.taesd && this.evals % this.everyEvals === 0) await this.decodeLast();
    return x0;
  };

  /** The preview due after `done` of `total` evaluations, if one is (with TAESD: the one decoded since the last call). */
  previewAt(done: number, total: number): RawImage | undefined {
    if (this.taesd) {
      const p = this.decoded;
      this.decoded = undefined;
      return p;
    }
    if (!this.last || (done % this.everyEvals !== 0 && done < total)) return undefined;
    return approxCheapPreview(this.last, this.shape[0], this.shape[1], this.shape[2], this.space);
  }

  /** With TAESD: the preview of the final estimate when the last evaluation was not on the every-N grid. */
  async finalPreview(): Promise<RawImage | undefined> {
    if (!this.taesd || !this.last || this.lastDecoded) return undefined;
    await this.decodeLast();
    return this.previewAt(0, 0);
  }

  private async decodeLast(): Promise<void> {
    if (!this.taesd || !this.last) return;
    this.decoded = await taesdPreview(this.taesd, this.last, this.shape);
    this.lastDecoded = true;
  }

  /** Drops the held latent (the pass is over). */
  clear(): void {
    this.last = undefined;
    this.decoded = undefined;
  }
}
