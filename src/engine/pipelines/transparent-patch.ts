// LayerDiffuse's UNet patch as an adapter file the LoRA machinery reads. The forge/ComfyUI files
// (layer_xl_transparent_attn/conv, `<SGM key>::lora::i` / `::diff::0`) are used as they are. The diffusers
// release (lllyasviel/LayerDiffuse_Diffusers ld_diffusers_sdxl_attn.safetensors) is a full offset under bare
// diffusers UNet names, merged as W' = W + offset (LayerDiffuse_DiffusersCLI demo_sdxl_t2i.py); it is rewritten
// once into the cache folder under the diffusers-LoRA spelling of a full offset (`unet.<path>.diff` / `.diff_b`),
// which the adapter machinery merges the same way, streaming the tensor bytes unchanged.
import { createHash } from 'node:crypto';
import { closeSync, existsSync, mkdirSync, openSync, renameSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { ModelFileError } from '../api.ts';
import { dtypeBytes } from '../weights/safetensors.ts';
import { openTensorFile, type TensorFile } from '../weights/tensor-file.ts';

/** A diffusers UNet parameter name (the offset file's keys). */
const DIFFUSERS_UNET_PARAM = /^(conv_in|time_embedding|add_embedding|down_blocks|mid_block|up_blocks|conv_norm_out|conv_out)\..*\.(weight|bias)$/;

/** The adapter file for `patch`: itself, or its rewritten copy in `cacheDir` for the diffusers-key offset format. */
export function transparentPatchFile(patch: string, cacheDir: string): string {
  const f = openTensorFile(patch);
  const names = f.names();
  if (names.some((n) => n.includes('::'))) return patch;
  if (names.length === 0 || !names.every((n) => DIFFUSERS_UNET_PARAM.test(n)))
    throw new ModelFileError(patch, 'is not a LayerDiffuse UNet patch: neither `<key>::lora::i` / `::diff::0` keys nor a diffusers UNet offset');
  const id = createHash('sha256').update(`${patch}\0${f.size}\0${f.mtimeMs}`).digest('hex').slice(0, 24);
  const dir = join(cacheDir, 'layerdiffuse');
  const out = join(dir, `diffusers-offset-${id}.safetensors`);
  if (!existsSync(out)) {
    mkdirSync(dir, { recursive: true });
    const tmp = `${out}.tmp-${process.pid}`;
    writeRenamed(f, tmp, (n) => (n.endsWith('.bias') ? `unet.${n.slice(0, -'.bias'.length)}.diff_b` : `unet.${n.slice(0, -'.weight'.length)}.diff`));
    renameSync(tmp, out);
  }
  return out;
}

/** Writes `f`'s tensors under new names to `file` (safetensors), one tensor's bytes in memory at a time. */
function writeRenamed(f: TensorFile, file: string, rename: (name: string) => string): void {
  const order = f
    .names()
    .map((n) => ({ from: n, to: rename(n) }))
    .sort((a, b) => (a.to < b.to ? -1 : 1));
  const header: Record<string, unknown> = {};
  let offset = 0;
  for (const { from, to } of order) {
    const { dtype, shape } = f.entry(from);
    const bytes = shape.reduce((a, d) => a * d, 1) * dtypeBytes(dtype);
    header[to] = { dtype, shape, data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  const json = JSON.stringify(header);
  const padded = new TextEncoder().encode(json + ' '.repeat((8 - (new TextEncoder().encode(json).byteLength % 8)) % 8));
  const len = new Uint8Array(8);
  new DataView(len.buffer).setBigUint64(0, BigInt(padded.byteLength), true);
  const fd = openSync(file, 'w');
  try {
    writeSync(fd, len);
    writeSync(fd, padded);
    for (const { from } of order) writeSync(fd, f.readBytes(from));
  } finally {
    closeSync(fd);
  }
}
