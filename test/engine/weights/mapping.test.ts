// Single-file (LDM/SGM layout) checkpoints, mapped to diffusers names, must equal the diffusers folders made
// from the same weights: same names, shapes, dtypes and bit-identical values.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { loadModel } from '../../../src/engine/weights/model.ts';
import { SafetensorsFile, writeSafetensors } from '../../../src/engine/weights/safetensors.ts';
import { mapLdmUnet, mapLdmVae } from '../../../src/engine/weights/ldm-keys.ts';
import { MappedWeights } from '../../../src/engine/weights/sources.ts';
import { assertSameWeights, f32, FIXTURES, tempDir } from './helpers.ts';

const opts = { hashCacheFile: null } as const;

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
  assert.deepEqual(vae.get('decoder.mid_block.attentions.0.to_out.0.weight').data, file.readFloat32('first_stage_model.decoder.mid.attn_1.proj_out.weight'));
});

test('a missing weight name throws ModelFileError naming the source', async () => {
  const m = await loadModel({ path: join(FIXTURES, 'tiny-sd1.safetensors'), tokenizerDir: join(FIXTURES, 'tiny-sd1') }, opts);
  assert.throws(() => m.unet.get('down_blocks.9.resnets.0.conv1.weight'), /tiny-sd1\.safetensors \(unet\): has no weight "down_blocks\.9/);
});

test("4-level SD1.5 UNet layout maps as diffusers' conversion table says", () => {
  // One 1-element tensor per sub-module, with the real SD1.5 block structure (3 attention levels + 1 plain).
  const P = 'model.diffusion_model.';
  const keys: string[] = [`${P}input_blocks.0.0.weight`, `${P}time_embed.0.weight`, `${P}out.2.weight`];
  const res = (b: string) => keys.push(`${P}${b}.in_layers.0.weight`);
  const attn = (b: string) => keys.push(`${P}${b}.norm.weight`);
  for (let i = 0; i < 4; i++) {
    for (let j = 0; j < 2; j++) {
      res(`input_blocks.${3 * i + j + 1}.0`);
      if (i < 3) attn(`input_blocks.${3 * i + j + 1}.1`);
    }
    if (i < 3) keys.push(`${P}input_blocks.${3 * (i + 1)}.0.op.weight`);
    for (let j = 0; j < 3; j++) {
      res(`output_blocks.${3 * i + j}.0`);
      if (i > 0) attn(`output_blocks.${3 * i + j}.1`);
    }
    if (i < 3) keys.push(`${P}output_blocks.${3 * i + 2}.${i === 0 ? 1 : 2}.conv.weight`);
  }
  res('middle_block.0');
  attn('middle_block.1');
  res('middle_block.2');
  const file = join(tempDir(), 'sd15-layout.safetensors');
  writeSafetensors(file, Object.fromEntries(keys.map((k) => [k, f32([1], [0])])));
  const map = mapLdmUnet(SafetensorsFile.open(file), P);
  const keyOf = (name: string) => {
    const r = map.get(name);
    assert.ok(r && r.kind === 'tensor', `no ${name}`);
    return r.key.slice(P.length);
  };
  // Expectations written from diffusers' unet_conversion_map_layer (convert_diffusers_to_original_stable_diffusion.py)
  for (let i = 0; i < 4; i++) {
    for (let j = 0; j < 2; j++) {
      assert.equal(keyOf(`down_blocks.${i}.resnets.${j}.norm1.weight`), `input_blocks.${3 * i + j + 1}.0.in_layers.0.weight`);
      if (i < 3) assert.equal(keyOf(`down_blocks.${i}.attentions.${j}.norm.weight`), `input_blocks.${3 * i + j + 1}.1.norm.weight`);
    }
    for (let j = 0; j < 3; j++) {
      assert.equal(keyOf(`up_blocks.${i}.resnets.${j}.norm1.weight`), `output_blocks.${3 * i + j}.0.in_layers.0.weight`);
      if (i > 0) assert.equal(keyOf(`up_blocks.${i}.attentions.${j}.norm.weight`), `output_blocks.${3 * i + j}.1.norm.weight`);
    }
    if (i < 3) {
      assert.equal(keyOf(`down_blocks.${i}.downsamplers.0.conv.weight`), `input_blocks.${3 * (i + 1)}.0.op.weight`);
      assert.equal(keyOf(`up_blocks.${i}.upsamplers.0.conv.weight`), `output_blocks.${3 * i + 2}.${i === 0 ? 1 : 2}.conv.weight`);
    }
  }
  assert.equal(keyOf('mid_block.resnets.1.norm1.weight'), 'middle_block.2.in_layers.0.weight');
  assert.equal(keyOf('mid_block.attentions.0.norm.weight'), 'middle_block.1.norm.weight');
  assert.equal(keyOf('conv_in.weight'), 'input_blocks.0.0.weight');
  assert.equal(map.size, keys.length);
});
