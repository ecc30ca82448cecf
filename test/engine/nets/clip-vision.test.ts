// The CLIP vision tower and CLIPImageProcessor against transformers 4.26 (refs/clip_vision, tiny-clip-vision):
// pixel_values, every hidden state, last_hidden_state, pooler_output and image_embeds; and the seed-003 flow
// (a 64x64 Pillow BICUBIC resize first) giving diffusers' UniDiffuser encode_image_clip_latents.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { getOrBuildGraph } from '../../../src/engine/onnx/cache.ts';
import { buildClipVisionEncoder, clipVisionGraphOptions, type ClipVisionOptions } from '../../../src/engine/nets/clip-vision.ts';
import { clipPreprocess, clipProcessingFromConfig } from '../../../src/engine/pipelines/clip-preprocess.ts';
import { pilResize } from '../../../src/engine/pipelines/pil-resize.ts';
import { createSession, runSession } from '../../../src/engine/runtime.ts';
import type { Tensor } from '../../../src/engine/tensor.ts';
import { openClipModelWeights } from '../../../src/engine/weights/clip-keys.ts';
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
