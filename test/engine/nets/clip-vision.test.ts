// The CLIP vision tower and CLIPImageProcessor against transformers 4.26 (refs/clip_vision, tiny-clip-vision):
// pixel_values, every hidden state, last_hidden_state, pooler_output and image_embeds; and the seed-003 flow
// (a 64x64 Pillow BICUBIC resize first) giving diffusers' UniDiffuser encode_image_clip_latents.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { getOrBuildGraph } from '../../../src/engine/onnx/cache.ts';
import { buildClipVisionEncoder, clipVisionGraphOptions, type ClipVisionOptions } from '../../../src/engine/nets/clip-vision.ts';
import { clipPreprocess, clipProcessingFromConfig } from '../../../src/engine/pipelines/clip-preprocess.ts';
import { pilResize } from '../../../src/engine/pipelines/pil-resize.ts';
import { createSession, runSession } from '../../../src/engine/runtime.ts';
import type { Tensor } from '../../../src/engine/tensor.ts';
import { openClipModelWeights } from '../../../src/engine/weights/clip-keys.ts';
import { SafetensorsFile, writeSafetensors, type TensorToWrite } from '../../../src/engine/weights/safetensors.ts';
import { assertClose, FIXTURES, ref } from './fixture-io.ts';

const cacheDir = mkdtempSync(join(tmpdir(), 'kiln-clip-vision-'));
test.after(() => rmSync(cacheDir, { recursive: true, force: true }));

const r = ref('clip_vision/clip_vision');
const MODEL = join(FIXTURES, 'tiny-clip-vision');
const processing = clipProcessingFromConfig(JSON.parse(readFileSync(join(MODEL, 'preprocessor_config.json'), 'utf8')), 32);

/** The stored uint8 HWC images (read as floats by value, back to bytes). */
function readU8(name: string): Uint8Array {
  return Uint8Array.from(r.float(name).data);
}
function image(name: string, width: number, height: number) {
  return { data: readU8(name), width, height, channels: 3 as const };
}

function stack(parts: Tensor[]): Tensor {
  const data = new Float32Array(parts.reduce((n, t) => n + t.data.length, 0));
  let o = 0;
  for (const t of parts) {
    data.set(t.data, o);
    o += t.data.length;
  }
  return { shape: [parts.length, ...parts[0]!.shape.slice(1)], data };
}

async function vision(opts: ClipVisionOptions) {
  const { weights, config } = openClipModelWeights(MODEL);
  const key = { network: 'tiny-clip-vision', weightsIdentity: 'fixture', precision: 'fp32' as const, options: clipVisionGraphOptions(opts) };
  const { modelPath } = getOrBuildGraph(cacheDir, key, (b) => buildClipVisionEncoder(b, weights.vision, config.vision, opts));
  return createSession(modelPath, { device: 'cpu' });
}

const images = () => [image('image_48x40', 48, 40), image('image_30x52', 30, 52)];

test('CLIPImageProcessor: shortest-edge bicubic resize, centre crop and normalisation give transformers pixel_values (atol 1e-6)', () => {
  const pixels = stack(images().map((im) => clipPreprocess(im, processing)));
  const max = assertClose(pixels, r.float('pixel_values'), 1e-6, 0, 'pixel_values');
  assert.ok(max <= 1e-6);
});

for (const attention of ['contrib', 'onnx'] as const) {
  test(`vision tower (${attention} attention): hidden states, last_hidden_state, pooler_output and image_embeds within 1e-4`, async () => {
    const session = await vision({ allOutputs: true, attention });
    const out = await runSession(session, { pixel_values: r.float('pixel_values') });
    for (let i = 0; i <= 4; i++) assertClose(out[`hidden_states.${i}`]!, r.float(`hidden_states.${i}`), 1e-4, 1e-4, `hidden_states.${i}`);
    assertClose(out.last_hidden_state!, r.float('last_hidden_state'), 1e-4, 1e-4, 'last_hidden_state');
    assertClose(out.pooler_output!, r.float('pooler_output'), 1e-4, 1e-4, 'pooler_output');
    assertClose(out.image_embeds!, r.float('image_embeds'), 1e-4, 1e-4, 'image_embeds');
  });
}

test('end to end from the uint8 images: preprocessing then the plain graph gives image_embeds', async () => {
  const session = await vision({});
  const out = await runSession(session, { pixel_values: stack(images().map((im) => clipPreprocess(im, processing))) });
  assert.deepEqual(Object.keys(out), ['image_embeds']);
  assertClose(out.image_embeds!, r.float('image_embeds'), 1e-4, 1e-4, 'image_embeds');
});

test("seed 003's flow: Image.resize((64, 64)) (BICUBIC) then the processor gives UniDiffuser's encode_image_clip_latents", async () => {
  const [first] = images();
  const square = pilResize(first!, 64, 64, 'bicubic');
  assert.deepEqual(square.data, readU8('seedflow_image_64x64'));
  const session = await vision({});
  const out = await runSession(session, { pixel_values: clipPreprocess(square, processing) });
  assertClose(out.image_embeds!, r.float('seedflow_image_embeds'), 1e-4, 1e-4, 'seedflow_image_embeds');
});

test('the same weights in the OpenCLIP layout (fused in_proj, visual.proj [width, embed], open_clip_config.json) give the same image_embeds', async () => {
  const src = SafetensorsFile.open(join(MODEL, 'model.safetensors'));
  const tensors: Record<string, TensorToWrite> = {};
  const f32 = (data: Float32Array, shape: number[]): TensorToWrite => ({
    dtype: 'F32',
    shape,
    bytes: new Uint8Array(data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength)),
  });
  const get = (n: string) => src.tensor(`vision_model.${n}`);
  const put = (name: string, t: Tensor) => {
    tensors[`visual.${name}`] = f32(t.data, t.shape);
  };
  put('conv1.weight', get('embeddings.patch_embedding.weight'));
  put('class_embedding', get('embeddings.class_embedding'));
  put('positional_embedding', get('embeddings.position_embedding.weight'));
  for (const p of ['weight', 'bias']) {
    put(`ln_pre.${p}`, get(`pre_layrnorm.${p}`));
    put(`ln_post.${p}`, get(`post_layernorm.${p}`));
  }
  for (let i = 0; i < 4; i++) {
    const l = (n: string) => get(`encoder.layers.${i}.${n}`);
    const b = `transformer.resblocks.${i}.`;
    for (const p of ['weight', 'bias']) {
      const qkv = ['q_proj', 'k_proj', 'v_proj'].map((n) => l(`self_attn.${n}.${p}`));
      put(`${b}attn.in_proj_${p}`, stack(qkv.map((t) => ({ shape: [1, ...t.shape], data: t.data }))));
      tensors[`visual.${b}attn.in_proj_${p}`]!.shape = p === 'weight' ? [96, 32] : [96];
      put(`${b}attn.out_proj.${p}`, l(`self_attn.out_proj.${p}`));
      put(`${b}ln_1.${p}`, l(`layer_norm1.${p}`));
      put(`${b}ln_2.${p}`, l(`layer_norm2.${p}`));
      put(`${b}mlp.c_fc.${p}`, l(`mlp.fc1.${p}`));
      put(`${b}mlp.c_proj.${p}`, l(`mlp.fc2.${p}`));
    }
  }
  const proj = src.tensor('visual_projection.weight'); // [16, 32] -> OpenCLIP's [32, 16]
  const t = new Float32Array(32 * 16);
  for (let o = 0; o < 16; o++) for (let i = 0; i < 32; i++) t[i * 16 + o] = proj.data[o * 32 + i]!;
  put('proj', { shape: [32, 16], data: t });
  const dir = join(cacheDir, 'openclip-tiny');
  mkdirSync(dir);
  writeSafetensors(join(dir, 'open_clip_model.safetensors'), tensors);
  writeFileSync(
    join(dir, 'open_clip_config.json'),
    JSON.stringify({ model_cfg: { embed_dim: 16, quick_gelu: true, vision_cfg: { width: 32, head_width: 8, layers: 4, patch_size: 4, image_size: 32 } } }),
  );
  const m = openClipModelWeights(dir);
  assert.equal(m.layout, 'openclip');
  assert.deepEqual({ ...m.config.vision }, { ...openClipModelWeights(MODEL).config.vision });
  const key = { network: 'tiny-clip-vision-openclip', weightsIdentity: 'fixture', precision: 'fp32' as const, options: clipVisionGraphOptions({}) };
  const { modelPath } = getOrBuildGraph(cacheDir, key, (b) => buildClipVisionEncoder(b, m.weights.vision, m.config.vision));
  const out = await runSession(await createSession(modelPath, { device: 'cpu' }), { pixel_values: r.float('pixel_values') });
  assertClose(out.image_embeds!, r.float('image_embeds'), 1e-4, 1e-4, 'image_embeds (OpenCLIP layout)');
});
