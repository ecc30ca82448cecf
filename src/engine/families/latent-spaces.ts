// The VAE latent spaces of the SD families. The preview tables are A1111's "Approx cheap" fits: the SD one is
// the community fit for the SD1/SD2 VAE, the SDXL one A1111's fit for the SDXL VAE (also the refiner's).
import type { LatentSpace } from './types.ts';

export const SD_LATENTS: LatentSpace = {
  name: 'sd',
  channels: 4,
  scalingFactor: 0.18215,
  previewCoefficients: [
    [0.298, 0.207, 0.208],
    [0.187, 0.286, 0.173],
    [-0.158, 0.189, 0.264],
    [-0.184, -0.271, -0.473],
  ],
};

export const SDXL_LATENTS: LatentSpace = {
  name: 'sdxl',
  channels: 4,
  scalingFactor: 0.13025,
  previewCoefficients: [
    [0.3448, 0.4168, 0.4395],
    [-0.1953, -0.029, 0.025],
    [0.1074, 0.0886, -0.0163],
    [-0.373, -0.2499, -0.2088],
  ],
};

/** The FLUX.1 VAE (ae.safetensors): 16 channels, scale 0.3611, shift 0.1159; preview table: ComfyUI's Flux fit. */
export const FLUX_LATENTS: LatentSpace = {
  name: 'flux',
  channels: 16,
  scalingFactor: 0.3611,
  shiftFactor: 0.1159,
  previewCoefficients: [
    [-0.0404, 0.0159, 0.0609],
    [0.0043, 0.0298, 0.085],
    [0.0328, -0.0749, -0.0503],
    [-0.0245, 0.0085, 0.0549],
    [0.0966, 0.0894, 0.053],
    [0.0035, 0.0399, 0.0123],
    [0.0583, 0.1184, 0.1262],
    [-0.0191, -0.0206, -0.0306],
    [-0.0324, 0.0055, 0.1001],
    [0.0955, 0.0659, -0.0545],
    [-0.0504, 0.0231, -0.0013],
    [0.05, -0.0008, -0.0088],
    [0.0982, 0.0941, 0.0976],
    [-0.1233, -0.028, -0.0897],
    [-0.0005, -0.053, -0.002],
    [-0.1273, -0.0932, -0.068],
  ],
};

/** The SD3 VAE: 16 channels, scale 1.5305, shift 0.0609; preview table: ComfyUI's SD3 fit. */
export const SD3_LATENTS: LatentSpace = {
  name: 'sd3',
  channels: 16,
  scalingFactor: 1.5305,
  shiftFactor: 0.0609,
  previewCoefficients: [
    [-0.0645, 0.0177, 0.1052],
    [0.0028, 0.0312, 0.065],
    [0.1848, 0.0762, 0.036],
    [0.0944, 0.036, 0.0889],
    [0.0897, 0.0506, -0.0364],
    [-0.002, 0.1203, 0.0284],
    [0.0855, 0.0118, 0.0283],
    [-0.0539, 0.0658, 0.1047],
    [-0.0057, 0.0116, 0.07],
    [-0.0412, 0.0281, -0.0039],
    [0.1106, 0.1171, 0.122],
    [-0.0248, 0.0682, -0.0481],
    [0.0815, 0.0846, 0.1207],
    [-0.012, -0.0055, -0.0867],
    [-0.0749, -0.0634, -0.0456],
    [-0.1418, -0.1457, -0.1259],
  ],
};
