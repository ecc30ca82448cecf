// A tiny SDXL refiner derived from tiny-sdxl (no tiny refiner exists in the fixtures): bigG text encoder only,
// UNet cross-attention and add_embedding narrowed to the refiner's shapes. Shared by the refiner tests.
import { cpSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { SafetensorsFile, writeSafetensors, type TensorToWrite } from '../../../src/engine/weights/safetensors.ts';

const FIX = 'test/fixtures/tiny-sdxl';

/** Keeps the first `cols` input columns of a [rows, inCols] matrix. */
function narrow(data: Float32Array, rows: number, inCols: number, cols: number): Float32Array {
  const out = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) out.set(data.subarray(r * inCols, r * inCols + cols), r * cols);
  return out;
}

export function makeTinyRefiner(dir: string): string {
  mkdirSync(join(dir, 'unet'), { recursive: true });
  for (const part of ['text_encoder_2', 'tokenizer_2', 'vae', 'scheduler']) cpSync(join(FIX, part), join(dir, part), { recursive: true });
  const index = JSON.parse(readFileSync(join(FIX, 'model_index.json'), 'utf8'));
  index._class_name = 'StableDiffusionXLImg2ImgPipeline';
  index.text_encoder = [null, null];
  index.tokenizer = [null, null];
  index.force_zeros_for_empty_prompt = false;
  index.requires_aesthetics_score = true;
  writeFileSync(join(dir, 'model_index.json'), JSON.stringify(index));
  const config = JSON.parse(readFileSync(join(FIX, 'unet/config.json'), 'utf8'));
  const hidden = 32; // bigG stand-in: hidden 32, projection 32
  const timeDim = config.addition_time_embed_dim as number;
  config.cross_attention_dim = hidden;
  config.projection_class_embeddings_input_dim = hidden + 5 * timeDim;
  writeFileSync(join(dir, 'unet/config.json'), JSON.stringify(config));
  const src = SafetensorsFile.open(join(FIX, 'unet/diffusion_pytorch_model.safetensors'));
  const out: Record<string, TensorToWrite> = {};
  for (const name of src.names()) {
    const t = src.tensor(name);
    let { shape, data } = t;
    if (/attn2\.to_[kv]\.weight$/.test(name)) {
      data = narrow(data, shape[0]!, shape[1]!, hidden);
      shape = [shape[0]!, hidden];
    } else if (name === 'add_embedding.linear_1.weight') {
      data = narrow(data, shape[0]!, shape[1]!, hidden + 5 * timeDim);
      shape = [shape[0]!, hidden + 5 * timeDim];
    }
    out[name] = { dtype: 'F32', shape, bytes: new Uint8Array(data.buffer, data.byteOffset, data.byteLength) };
  }
  writeSafetensors(join(dir, 'unet/diffusion_pytorch_model.safetensors'), out);
  return dir;
}
