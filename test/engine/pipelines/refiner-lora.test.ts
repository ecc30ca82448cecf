// LoRA on the SDXL refiner: a kohya LoRA named in the refiner's own SGM layout (hand-written names next to the
// diffusers parameters they patch: level i item j -> input_blocks.{1+3i+j}, up level i item j -> output_blocks.{3i+j})
// and its single bigG text encoder as lora_te_ matches every key on the derived tiny refiner, changes the image, and
// its branches give the merged weights' UNet and text-encoder outputs. Refiner LoRAs without metadata are told from
// SDXL base ones by their key names.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createEngine } from '../../../src/engine/engine.ts';
import type { GenerateRequest } from '../../../src/engine/api.ts';
import { detectLoraFamily } from '../../../src/engine/families/index.ts';
import { ModelSessions } from '../../../src/engine/pipelines/model-sessions.ts';
import { runSession, type Feed } from '../../../src/engine/runtime.ts';
import { SafetensorsFile, writeSafetensors, type TensorToWrite } from '../../../src/engine/weights/safetensors.ts';
import { makeTinyRefiner } from './tiny-refiner.ts';

const work = mkdtempSync(join(tmpdir(), 'kiln-refiner-lora-'));
const engine = createEngine({ cacheDir: join(work, 'cache') });
const refiner = makeTinyRefiner(join(work, 'tiny-refiner'));
after(async () => {
  await engine.close();
  rmSync(work, { recursive: true, force: true });
});

/** kohya key -> the refiner parameter it patches (component folder, diffusers path). */
const TARGETS: Array<[string, 'unet' | 'text_encoder_2', string]> = [
  ['lora_unet_input_blocks_4_1_transformer_blocks_1_attn2_to_k', 'unet', 'down_blocks.1.attentions.0.transformer_blocks.1.attn2.to_k'],
  ['lora_unet_middle_block_1_proj_in', 'unet', 'mid_block.attentions.0.proj_in'],
  ['lora_unet_output_blocks_1_1_transformer_blocks_0_ff_net_0_proj', 'unet', 'up_blocks.0.attentions.1.transformer_blocks.0.ff.net.0.proj'],
  ['lora_unet_output_blocks_2_2_conv', 'unet', 'up_blocks.0.upsamplers.0.conv'],
  ['lora_unet_input_blocks_1_0_in_layers_2', 'unet', 'down_blocks.0.resnets.0.conv1'],
  ['lora_te_text_model_encoder_layers_0_self_attn_q_proj', 'text_encoder_2', 'text_model.encoder.layers.0.self_attn.q_proj'],
  ['lora_te_text_model_encoder_layers_0_mlp_fc1', 'text_encoder_2', 'text_model.encoder.layers.0.mlp.fc1'],
];

function writeRefinerLora(file: string): void {
  const files = {
    unet: SafetensorsFile.open(join(refiner, 'unet/diffusion_pytorch_model.safetensors')),
    text_encoder_2: SafetensorsFile.open(join(refiner, 'text_encoder_2/model.safetensors')),
  };
  const tensors: Record<string, TensorToWrite> = {};
  let seed = 1;
  const random = (shape: number[], amplitude: number): TensorToWrite => {
    const data = Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => amplitude * Math.sin(seed++ * 12.9898));
    return { dtype: 'F32', shape, bytes: new Uint8Array(data.buffer) };
  };
  const rank = 4;
  for (const [key, component, path] of TARGETS) {
    const shape = files[component].entry(`${path}.weight`).shape;
    const kernel = shape.slice(2);
    tensors[`${key}.lora_down.weight`] = random([rank, shape[1]!, ...kernel], 0.5);
    tensors[`${key}.lora_up.weight`] = random([shape[0]!, rank, ...kernel.map(() => 1)], 0.5);
    tensors[`${key}.alpha`] = { dtype: 'F32', shape: [], bytes: new Uint8Array(Float32Array.from([2]).buffer) };
  }
  writeSafetensors(file, tensors, { ss_base_model_version: 'sdxl_refiner_v1' });
}

const loraFile = join(work, 'tiny-refiner-lora.safetensors');
writeRefinerLora(loraFile);

test('a kohya LoRA in the refiner’s own names matches every key and changes the refiner’s image', async () => {
  const init = { image: { width: 64, height: 64, channels: 3 as const, data: new Uint8Array(64 * 64 * 3).map((_, i) => (i * 37) % 256) }, strength: 0.6 };
  const req: GenerateRequest = {
    model: { path: refiner },
    prompts: ['a lighthouse'],
    width: 64,
    height: 64,
    steps: 4,
    cfgScale: 5,
    sampler: 'Euler',
    seed: 5,
    init,
  };
  const plain = await engine.generate(req);
  const withLora = await engine.generate({ ...req, loras: [{ name: 'tiny-refiner-lora', path: loraFile, te: 0.8, unet: 0.8 }] });
  assert.equal(withLora.warnings, undefined, 'every key matched a refiner layer');
  assert.notDeepEqual(Buffer.from(withLora.images[0]!.image.data), Buffer.from(plain.images[0]!.image.data));
});

test('refiner LoRA branches give the merged weights’ UNet and text-encoder outputs', async () => {
  const ms = await ModelSessions.load({ path: refiner }, { device: 'cpu', cacheDir: join(work, 'sessions'), cacheOptimized: false });
  try {
    const loras = [{ name: 'r', path: loraFile, te: 0.8, unet: -0.6 }];
    const branched = ms.withAdapters(loras);
    const merged = ms.withAdapters(loras, [], { merge: true });
    assert.equal(branched.loras?.unetBranches?.size, 5);
    assert.equal(branched.loras?.textEncoderBranches[0]?.size, 2);
    const cfg = ms.model.unetConfig as unknown as Record<string, number>;
    const fill = (shape: number[], k: number) => ({ shape, data: Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, (_, i) => Math.sin(i * k)) });
    const feeds: Record<string, Feed> = {
      sample: fill([2, 4, 8, 8], 0.3),
      timestep: { shape: [2], data: Float32Array.from([300, 300]) },
      encoder_hidden_states: fill([2, 77, cfg.cross_attention_dim!], 0.7),
      text_embeds: fill([2, cfg.projection_class_embeddings_input_dim! - 5 * cfg.addition_time_embed_dim!], 0.11),
      time_ids: { shape: [2, 5], data: Float32Array.from([64, 64, 0, 0, 6, 64, 64, 0, 0, 2.5]) },
    };
    const close = (a: Float32Array, b: Float32Array, what: string) => {
      let worst = 0;
      for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i]! - b[i]!) / Math.max(1, Math.abs(b[i]!)));
      assert.ok(worst <= 1e-5, `${what}: ${worst}`);
    };
    const unet = async (view: ModelSessions) => (await runSession(await view.unet(), feeds)).out!.data;
    close(await unet(branched), await unet(merged), 'UNet');
    const tok = ms.tokenizer(0);
    const ids = { input_ids: { int64: BigInt64Array.from({ length: 77 }, (_, i) => BigInt(i === 0 ? tok.bos : i < 4 ? 10 + i : tok.eos)), shape: [1, 77] } };
    const te = async (view: ModelSessions) =>
      (await runSession(await view.textEncoder(0, { penultimateWithoutNorm: true, textEmbeds: true }), ids)).hidden!.data;
    close(await te(branched), await te(merged), 'text encoder');
  } finally {
    await ms.release();
  }
});

test('refiner LoRAs without metadata are told from SDXL base and SD1 ones by their key names', () => {
  const refinerKeys = [
    'lora_unet_output_blocks_7_1_transformer_blocks_3_attn1_to_q.lora_down.weight',
    'lora_te_text_model_encoder_layers_0_mlp_fc1.lora_up.weight',
  ];
  const baseKeys = [
    'lora_unet_output_blocks_1_1_transformer_blocks_9_attn1_to_q.lora_down.weight',
    'lora_te2_text_model_encoder_layers_0_mlp_fc1.lora_up.weight',
  ];
  const sd1LdmKeys = ['lora_unet_output_blocks_7_1_transformer_blocks_0_attn1_to_q.lora_down.weight'];
  // The refiner's input block 4 also has transformer_blocks_1+, which SDXL's pattern matches: the refiner's wins.
  assert.equal(detectLoraFamily({}, ['lora_unet_input_blocks_4_1_transformer_blocks_2_attn1_to_q.lora_down.weight', ...refinerKeys]), 'sdxl-refiner');
  assert.equal(detectLoraFamily({}, baseKeys), 'sdxl');
  assert.notEqual(detectLoraFamily({}, sd1LdmKeys), 'sdxl-refiner');
});
