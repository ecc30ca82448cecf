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
