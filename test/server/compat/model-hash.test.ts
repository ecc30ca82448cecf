// The A1111 checkpoint hash has one source, the engine: /sdapi/v1/sd-models and the infotext's "Model hash"
// agree for a diffusers folder whose UNet comes as an fp16 file (alone, or beside the fp32 one it is not
// loaded from).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { SafetensorsFile, writeSafetensors, type TensorToWrite } from '../../../src/engine/weights/safetensors.ts';
import { f32ToF16Bits } from '../../../src/engine/weights/float.ts';
import { modelHashes } from '../../../src/engine/index.ts';
import { tempDir } from '../../queue/helpers.ts';
import { startCompatServer, TINY_SD1 } from './helpers.ts';

const UNET = 'unet/diffusion_pytorch_model';

/** tiny-sd1's UNet rewritten as an fp16 file. */
function writeFp16Unet(from: string, to: string): void {
  const src = SafetensorsFile.open(from);
  const out: Record<string, TensorToWrite> = {};
  for (const name of src.names()) {
    const t = src.tensor(name);
    const half = Uint16Array.from(t.data, (v) => f32ToF16Bits(v));
    out[name] = { dtype: 'F16', shape: t.shape, bytes: new Uint8Array(half.buffer) };
  }
  writeSafetensors(to, out);
}

async function listedAndInfotextHashes(model: string): Promise<{ listed: string; sha256: string; infotext: string }> {
  const s = await startCompatServer({ model });
  try {
    const [entry] = (await s.app.inject('/sdapi/v1/sd-models')).json() as { hash: string; sha256: string }[];
    const r = await s.app.inject({ method: 'POST', url: '/sdapi/v1/txt2img', payload: { prompt: 'x', steps: 1, width: 64, height: 64, seed: 1 } });
    assert.equal(r.statusCode, 200, r.body);
    return { listed: entry!.hash, sha256: entry!.sha256, infotext: JSON.parse(r.json().info).sd_model_hash };
  } finally {
    await s.close();
  }
}

test('an fp16 UNet beside the fp32 one: listing and infotext both hash the fp32 file the model loads', async () => {
  const t = tempDir('kiln-hash-');
  try {
    const folder = join(t.dir, 'tiny-sd1-both');
    cpSync(TINY_SD1, folder, { recursive: true });
    // Sorted by name the fp16 file comes first; the loader still prefers the fp32 one.
    writeFp16Unet(join(folder, `${UNET}.safetensors`), join(folder, `${UNET}.fp16.safetensors`));
    const { listed, sha256, infotext } = await listedAndInfotextHashes(folder);
    const fp32 = await modelHashes(join(TINY_SD1));
    assert.equal(listed, infotext);
    assert.equal(listed, fp32.shortHash, 'the hash is of the UNet the model was loaded from');
    assert.equal(sha256, fp32.sha256);
  } finally {
    t.remove();
  }
});

test('an fp16-only UNet: listing and infotext both hash the fp16 file', async () => {
  const t = tempDir('kiln-hash-');
  try {
    const folder = join(t.dir, 'tiny-sd1-fp16');
    cpSync(TINY_SD1, folder, { recursive: true });
    writeFp16Unet(join(folder, `${UNET}.safetensors`), join(folder, `${UNET}.fp16.safetensors`));
    rmSync(join(folder, `${UNET}.safetensors`));
    const { listed, infotext } = await listedAndInfotextHashes(folder);
    const own = await modelHashes(folder);
    assert.equal(listed, infotext);
    assert.equal(listed, own.shortHash);
    assert.notEqual(listed, (await modelHashes(TINY_SD1)).shortHash, 'the fp16 file is a different file');
  } finally {
    t.remove();
  }
});
