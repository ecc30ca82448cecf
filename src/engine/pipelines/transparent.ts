// LayerDiffuse transparency (seed 000), the stage after sampling: the final latents through the model's own VAE
// to RGB in [0,1], then the transparent decoder (UNet1024) on that RGB and the raw latent (latent /
// scaling_factor, as LayerDiffuse_DiffusersCLI's demo_sdxl_t2i.py), giving straight-colour RGBA. The UNet patch
// that moves the sampler into the transparent latent space is an ordinary adapter (transparentPatch), merged by
// the LoRA machinery at weight 1. Reference: reference-notes §1.3-1.5.
import { KilnInputError, type LoraSettings, type RawImage, type TransparentSettings, type Tiling } from '../api.ts';
import { TRANSPARENT_DECODER_MULTIPLE } from '../nets/transparent-decoder.ts';
import { runSession } from '../runtime.ts';
import type { ModelSessions } from './model-sessions.ts';
import { openTransparentDecoder } from './transparent-decoder-model.ts';
import { transparentPatchFile } from './transparent-patch.ts';
import { transparentDecode, type Planes } from './transparent-tta.ts';

/** UNet1024 adds the latent at 1/8 of the image size. */
const DECODER_LATENT_FACTOR = 8;

/**
 * The patch as an adapter for withAdapters: UNet only, no alpha, at weight 1 unless asked (what ComfyUI/Forge
 * apply). `cacheDir` holds the rewritten copy of a diffusers-format offset (transparent-patch.ts).
 */
export function transparentPatch(t: TransparentSettings | undefined, cacheDir: string): LoraSettings[] {
  return t ? [{ name: 'layerdiffuse', path: transparentPatchFile(t.patch, cacheDir), te: 0, unet: t.weight ?? 1 }] : [];
}

/** Refuses what the files cannot do, before any sampling: another family, a VAE that is not 8x, inpainting. */
export function validateTransparent(ms: ModelSessions, req: { transparent?: TransparentSettings; mask?: unknown }): void {
  const t = req.transparent;
  if (!t) return;
  if (ms.family.name !== t.family)
    throw new KilnInputError(
      `transparent: the LayerDiffuse files are for ${t.family} models, but ${ms.model.name} is ${ms.family.name}; choose an ${t.family} checkpoint`,
      'transparent',
    );
  if (ms.latentFactor !== DECODER_LATENT_FACTOR)
    throw new KilnInputError(
      `transparent: the transparent decoder needs a VAE that downsamples ${DECODER_LATENT_FACTOR}x; this model's downsamples ${ms.latentFactor}x`,
      'transparent',
    );
  if (req.mask) throw new KilnInputError('transparent: inpainting with a transparent result is not supported; send either mask or transparent', 'transparent');
}

const planesOf = (data: Float32Array, channels: number, height: number, width: number): Planes => ({ channels, height, width, data });

/** [4,H,W] alpha,R,G,B in [0,1] -> interleaved RGBA8 as the reference's (y*255).clip(0,255).astype(uint8) (truncation). */
export function rgbaImage(p: Planes): RawImage {
  const plane = p.height * p.width;
  const data = new Uint8Array(plane * 4);
  for (let i = 0; i < plane; i++) {
    for (let c = 0; c < 3; c++) data[i * 4 + c] = Math.trunc(Math.min(255, Math.max(0, p.data[(c + 1) * plane + i]! * 255)));
    data[i * 4 + 3] = Math.trunc(Math.min(255, Math.max(0, p.data[i]! * 255)));
  }
  return { data, width: p.width, height: p.height, channels: 4 };
}

export interface TransparentDecodeProgress {
  signal?: AbortSignal;
  /** Fraction 0..1 of the transparent decode done. */
  onProgress?: (fraction: number) => void;
  /** Each image's [4,H,W] float RGBA before 8-bit conversion (tests compare it with the reference). */
  onFloat?: (index: number, rgba: Planes) => void;
  /** With `t.preview`: each image's checkerboard preview. */
  onPreview?: (index: number, preview: RawImage) => void;
}

/** Final latents [count, c, h, w] (sampler space) -> one straight-alpha RGBA image each. */
export async function decodeTransparent(
  ms: ModelSessions,
  latents: Float32Array,
  count: number,
  shape: [number, number, number],
  t: TransparentSettings,
  tiling: Tiling | undefined,
  opts: TransparentDecodeProgress = {},
): Promise<RawImage[]> {
  const vae = await ms.vaeDecoder(tiling);
  const { device, cacheDir, threads } = ms.settings;
  const decoder = await openTransparentDecoder(t.decoder, { device, cacheDir, threads });
  try {
    const [c, h, w] = shape;
    const per = c * h * w;
    const images: RawImage[] = [];
    for (let i = 0; i < count; i++) {
      const latent = latents.slice(i * per, (i + 1) * per);
      // The VAE graph divides by the scaling factor itself; the decoder wants the raw latent.
      const { image } = await runSession(vae, { latent: { shape: [1, c, h, w], data: latent } });
      const [, , H, W] = image!.shape as [number, number, number, number];
      const pixel = image!.data.subarray(0, 3 * H * W).map((v) => Math.min(1, Math.max(0, v * 0.5 + 0.5)));
      const raw = latent.map((v) => v / ms.scalingFactor);
      const rgba = await transparentDecode((p, l) => decoder.run(p, l), planesOf(pixel, 3, H, W), planesOf(raw, c, h, w), TRANSPARENT_DECODER_MULTIPLE, {
        tta: t.tta,
        signal: opts.signal,
        onPass: (done, total) => opts.onProgress?.((i + done / total) / count),
      });
      opts.onFloat?.(i, rgba);
      if (t.preview) opts.onPreview?.(i, checkerboardPreview(rgba));
      images.push(rgbaImage(rgba));
    }
    return images;
  } finally {
    await decoder.release();
  }
}

/**
 * The reference tools' preview (DiffusersCLI vae.py forward's `vis`): [4,H,W] alpha,R,G,B over a checkerboard of
 * 64-px cells in greys 0.45 / 0.55, as 8-bit RGB.
 */
export function checkerboardPreview(p: Planes): RawImage {
  const { width, height } = p;
  const plane = width * height;
  const data = new Uint8Array(plane * 3);
  for (let y = 0; y < height; y++)
    for (let x = 0; x < width; x++) {
      const i = y * width + x;
      const grey = 0.5 + (((Math.floor(y / 64) + Math.floor(x / 64)) % 2) - 0.5) * 0.1;
      const a = p.data[i]!;
      for (let ch = 0; ch < 3; ch++) {
        const v = p.data[(ch + 1) * plane + i]! * a + grey * (1 - a);
        data[i * 3 + ch] = Math.trunc(Math.min(255, Math.max(0, v * 255)));
      }
    }
  return { data, width, height, channels: 3 };
}
