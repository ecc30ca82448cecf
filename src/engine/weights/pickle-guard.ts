// A plain unpickle of a PyTorch file (.ckpt/.pt/.pth/.bin) runs whatever code the file's author put in it, so
// Kiln reads those only through the restricted reader (pickle/, via openTensorFile). These helpers recognise such
// files by name or first bytes where only .safetensors is accepted, and explain how to convert.
import { extname } from 'node:path';
import { ModelFileError } from '../api.ts';

const PICKLED_EXTENSIONS = new Set(['.ckpt', '.pt', '.pth', '.bin', '.pkl', '.pickle']);

export const CONVERT_HINT =
  'Download the .safetensors version of the model, or convert it once with a trusted Python setup, e.g. ' +
  "`python -c \"import torch, safetensors.torch as st; sd = torch.load('model.ckpt', map_location='cpu', weights_only=True); " +
  "sd = sd.get('state_dict', sd); st.save_file({k: v.contiguous() for k, v in sd.items() if hasattr(v, 'contiguous')}, 'model.safetensors')\"`.";

export function pickledFileError(file: string, why: string): ModelFileError {
  return new ModelFileError(
    file,
    `${why}. Only .safetensors is read here: a plain unpickle of a PyTorch file can run arbitrary code hidden in it (Kiln reads single-file .ckpt/.pt checkpoints only through its restricted reader). ${CONVERT_HINT}`,
  );
}

/** Throws for file names that are PyTorch pickle formats. */
export function refusePickledName(file: string): void {
  const ext = extname(file).toLowerCase();
  if (PICKLED_EXTENSIONS.has(ext)) throw pickledFileError(file, `"${ext}" is a pickled PyTorch checkpoint format`);
}

/** Recognises torch.save's zip container ("PK\x03\x04") and raw pickle streams (protocol 2+ start with 0x80). */
export function pickleMagic(head: Uint8Array): string | undefined {
  if (head.length >= 4 && head[0] === 0x50 && head[1] === 0x4b && head[2] === 0x03 && head[3] === 0x04) {
    return 'the file is a zip archive (the torch.save format, which holds a pickle)';
  }
  if (head.length >= 2 && head[0] === 0x80 && head[1]! >= 2 && head[1]! <= 5) {
    return `the file is a Python pickle stream (protocol ${head[1]})`;
  }
  return undefined;
}
