// Single-file (LDM/SGM layout) checkpoints, mapped to diffusers names, must equal the diffusers folders made
// from the same weights: same names, shapes, dtypes and bit-identical values.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { loadModel } from '../../../src/engine/weights/model.ts';
import { SafetensorsFile } from '../../../src/engine/weights/safetensors.ts';
import { mapLdmVae } from '../../../src/engine/weights/ldm-keys.ts';
import { MappedWeights } from '../../../src/engine/weights/sources.ts';
import { assertSameWeights, FIXTURES } from './helpers.ts';

const opts = { hashCacheFile: null, allowDownload: false } as const;

test('tiny-sd1.safetensors equals tiny-sd1/ tensor for tensor (unet, vae, text_encoder)', async () => {
  const single = await loadModel({ path: join(FIXTURES, 'tiny-sd1.safetensors'), tokenizerDir: join(FIXTURES, 'tiny-sd1') }, opts);
  const folder = await loadModel({ path: join(FIXTURES, 'tiny-sd1') }, opts);
  assertSameWeights(single.unet, folder.unet, 'unet');
  assertSameWeights(single.vae, folder.vae, 'vae');
  assert.equal(single.textEncoders.length, 1);
  assertSameWeights(single.textEncoders[0]!.weights, folder.textEncoders[0]!.weights, 'text_encoder');
});

test('tiny-sdxl.safetensors equals tiny-sdxl/ (incl. split q/k/v, transposed projection, add_embedding)', async () => {
  const single = await loadModel({ path: join(FIXTURES, 'tiny-sdxl.safetensors'), tokenizerDir: join(FIXTURES, 'tiny-sdxl') }, opts);
  const folder = await loadModel({ path: join(FIXTURES, 'tiny-sdxl') }, opts);
  assertSameWeights(single.unet, folder.unet, 'unet');
  assertSameWeights(single.vae, folder.vae, 'vae');
  assert.deepEqual(
    single.textEncoders.map((t) => t.component),
    ['text_encoder', 'text_encoder_2'],
  );
  assertSameWeights(single.textEncoders[0]!.weights, folder.textEncoders[0]!.weights, 'text_encoder');
  assertSameWeights(single.textEncoders[1]!.weights, folder.textEncoders[1]!.weights, 'text_encoder_2');
  // the names a network builder asks for
  assert.deepEqual(single.unet.shape('add_embedding.linear_1.weight'), [32, 80]);
  assert.deepEqual(single.unet.shape('down_blocks.1.attentions.0.transformer_blocks.1.attn2.to_k.weight'), [16, 64]);
  assert.ok(single.unet.has('up_blocks.0.upsamplers.0.conv.weight'));
  assert.ok(!single.unet.has('up_blocks.1.upsamplers.0.conv.weight'));
});

test('VAE mid-attention 1x1 convs become linear weights', () => {
  const file = SafetensorsFile.open(join(FIXTURES, 'tiny-sd1.safetensors'));
  const vae = new MappedWeights('vae', mapLdmVae(file, 'first_stage_model.'));
  assert.deepEqual(file.entry('first_stage_model.decoder.mid.attn_1.q.weight').shape, [64, 64, 1, 1]);
  assert.deepEqual(vae.shape('decoder.mid_block.attentions.0.to_q.weight'), [64, 64]);
  assert.deepEqual(vae.get('decoder.mid_block.attentions.0.to_out.0.weight').shape, [64, 64]);
  assert.deepEqual(
    vae.get('decoder.mid_block.attentions.0.to_out.0.weight').data,
    file.readFloat32('first_stage_model.decoder.mid.attn_1.proj_out.weight'),
  );
});

test('a missing weight name throws ModelFileError naming the source', async () => {
  const m = await loadModel({ path: join(FIXTURES, 'tiny-sd1.safetensors'), tokenizerDir: join(FIXTURES, 'tiny-sd1') }, opts);
  assert.throws(() => m.unet.get('down_blocks.9.resnets.0.conv1.weight'), /tiny-sd1\.safetensors \(unet\): has no weight "down_blocks\.9/);
});
