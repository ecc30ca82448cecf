// LoRA / LyCORIS merges against the fixture references (refs/lora/*_merged): kohya SD1 with LoCon, kohya SDXL
// (SGM names, te2's fused q/k/v in the single file), diffusers and PEFT spellings, LoHa and LoKr, at m = 1 and 0.5,
// on the diffusers folder and the single file. Tolerance: the README's atol 1e-6, rtol 1e-6.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { applyLoras, parseLora, type LoraRequest } from '../../../src/engine/weights/lora/index.ts';
import { buildKeyMap } from '../../../src/engine/weights/lora/key-map.ts';
import { loadModel, type LoadedModel, type LoadOptions } from '../../../src/engine/weights/model.ts';
import { SafetensorsFile } from '../../../src/engine/weights/safetensors.ts';
import { tensorFileDictionary } from '../../../src/engine/weights/lora/tensor-dictionary.ts';
import { FIXTURES, f32, tempDir } from './helpers.ts';
import { writeSafetensors } from '../../../src/engine/weights/safetensors.ts';

const opts: LoadOptions = { hashCacheFile: null };
const fx = (p: string) => join(FIXTURES, p);

function assertClose(actual: Float32Array, expected: Float32Array, what: string, atol = 1e-6, rtol = 1e-6): void {
  assert.equal(actual.length, expected.length, `${what}: length`);
  let worst = 0;
  for (let i = 0; i < actual.length; i++) {
    const err = Math.abs(actual[i]! - expected[i]!) - rtol * Math.abs(expected[i]!);
    if (err > worst) worst = err;
  }
  assert.ok(worst <= atol, `${what}: max excess error ${worst}`);
}

function component(model: LoadedModel, applied: ReturnType<typeof applyLoras>, name: string) {
  if (name === 'unet') return applied.unet;
  const i = model.textEncoders.findIndex((t) => t.component === name);
  return applied.textEncoders[i]!;
}

async function checkMerged(modelPath: string, lora: string, ref: string, tokenizerDir?: string): Promise<number> {
  const model = await loadModel({ path: fx(modelPath), tokenizerDir: tokenizerDir && fx(tokenizerDir) }, opts);
  const refs = SafetensorsFile.open(fx(`refs/lora/${ref}.safetensors`));
  let checked = 0;
  for (const m of ['1.0', '0.5']) {
    const req: LoraRequest = { name: lora, path: fx(`loras/${lora}.safetensors`), te: Number(m), unet: Number(m) };
    const applied = applyLoras(model, [req]);
    assert.deepEqual(applied.warnings, [], `${lora}: every key maps onto ${modelPath}`);
    for (const key of refs.names().filter((k) => k.startsWith(`scale_${m}/`))) {
      const [, comp, param] = /^scale_[^/]+\/([^/]+)\/(.+)$/.exec(key)!;
      if (comp === 'single_file') continue;
      assertClose(component(model, applied, comp!).get(param!).data, refs.readFloat32(key), `${lora} m=${m} ${comp}/${param} on ${modelPath}`);
      checked++;
    }
    // The single-file te2 is OpenCLIP's fused q|k|v: its merged rows are the merged q, k and v.
    const fused = `scale_${m}/single_file/conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight`;
    if (refs.has(fused)) {
      const te2 = component(model, applied, 'text_encoder_2');
      const parts = ['q', 'k', 'v'].map((p) => te2.get(`text_model.encoder.layers.0.self_attn.${p}_proj.weight`).data);
      const joined = new Float32Array(parts.reduce((n, p) => n + p.length, 0));
      let o = 0;
      for (const p of parts) {
        joined.set(p, o);
        o += p.length;
      }
      assertClose(joined, refs.readFloat32(fused), `${lora} m=${m} fused in_proj_weight`);
      checked++;
    }
  }
  return checked;
}

test('kohya SD1 LoRA with LoCon convs merges as the reference (folder and single file)', async () => {
  assert.ok((await checkMerged('tiny-sd1', 'tiny-sd1-kohya', 'sd1_kohya_merged')) >= 20);
  assert.ok((await checkMerged('tiny-sd1.safetensors', 'tiny-sd1-kohya', 'sd1_kohya_merged', 'tiny-sd1')) >= 20);
});

test('kohya SDXL LoRA (SGM UNet names, two text encoders) merges as the reference on the single file and the folder', async () => {
  assert.ok((await checkMerged('tiny-sdxl.safetensors', 'tiny-sdxl-kohya', 'sdxl_kohya_merged', 'tiny-sdxl')) >= 20);
  assert.ok((await checkMerged('tiny-sdxl', 'tiny-sdxl-kohya', 'sdxl_kohya_merged')) >= 20);
});

test('diffusers and PEFT LoRA spellings merge as the reference', async () => {
  assert.ok((await checkMerged('tiny-sd1', 'tiny-sd1-diffusers', 'sd1_diffusers_merged')) >= 4);
  assert.ok((await checkMerged('tiny-sd1', 'tiny-sd1-peft', 'sd1_diffusers_merged')) >= 4);
  assert.ok((await checkMerged('tiny-sd1.safetensors', 'tiny-sd1-peft', 'sd1_diffusers_merged', 'tiny-sd1')) >= 4);
});

test('LyCORIS LoHa and LoKr (factorised and full w2) merge as the reference', async () => {
  assert.ok((await checkMerged('tiny-sd1', 'tiny-sd1-loha', 'sd1_loha_merged')) >= 20);
  assert.ok((await checkMerged('tiny-sd1', 'tiny-sd1-lokr', 'sd1_lokr_merged')) >= 20);
});

test('formats are detected from the keys', () => {
  const algos = (name: string) => {
    const parsed = parseLora(tensorFileDictionary(SafetensorsFile.open(fx(`loras/${name}.safetensors`))));
    assert.deepEqual(parsed.unknownKeys, [], name);
    return [...new Set(parsed.modules.map((m) => m.algorithm))];
  };
  assert.deepEqual(algos('tiny-sd1-kohya'), ['lora']);
  assert.deepEqual(algos('tiny-sd1-peft'), ['lora']);
  assert.deepEqual(algos('tiny-sd1-loha'), ['loha']);
  assert.deepEqual(algos('tiny-sd1-lokr'), ['lokr']);
});

test('several LoRAs add up, separate te/unet weights apply per component, and a weight of 0 leaves the layer alone', async () => {
  const model = await loadModel({ path: fx('tiny-sd1') }, opts);
  const kohya = fx('loras/tiny-sd1-kohya.safetensors');
  const param = 'down_blocks.0.resnets.0.conv1.weight';
  const te = 'text_model.encoder.layers.0.self_attn.q_proj.weight';
  const base = model.unet.get(param).data;
  const plus = applyLoras(model, [{ name: 'a', path: kohya, te: 0, unet: 0.5 }]).unet.get(param).data;
  const twice = applyLoras(model, [
    { name: 'a', path: kohya, te: 0, unet: 0.5 },
    { name: 'a', path: kohya, te: 0, unet: 0.5 },
  ]).unet.get(param).data;
  const minus = applyLoras(model, [{ name: 'a', path: kohya, te: 0, unet: -0.5 }]).unet.get(param).data;
  for (let i = 0; i < base.length; i += 97) {
    assert.ok(Math.abs(twice[i]! - base[i]! - 2 * (plus[i]! - base[i]!)) < 1e-5);
    assert.ok(Math.abs(minus[i]! - base[i]! + (plus[i]! - base[i]!)) < 1e-5);
  }
  const applied = applyLoras(model, [{ name: 'a', path: kohya, te: 0, unet: 1 }]);
  assert.deepEqual(applied.textEncoders[0]!.get(te).data, model.textEncoders[0]!.weights.get(te).data);
  assert.equal(applied.textEncoderKeys[0], undefined, 'an untouched text encoder keeps its plain graph');
  assert.ok(applied.unetKey);
});

test('unmatched keys are reported by name; a LoRA for another family is refused naming both', async () => {
  const dir = tempDir();
  const model = await loadModel({ path: fx('tiny-sd1') }, opts);
  const odd = join(dir, 'odd.safetensors');
  writeSafetensors(odd, {
    'lora_unet_down_blocks_0_resnets_0_conv1.lora_down.weight': f32([1, 32, 3, 3], new Float32Array(288).fill(0.01)),
    'lora_unet_down_blocks_0_resnets_0_conv1.lora_up.weight': f32([32, 1, 1, 1], new Float32Array(32).fill(0.01)),
    'lora_unet_no_such_layer.lora_down.weight': f32([1, 4], [1, 2, 3, 4]),
    'lora_unet_no_such_layer.lora_up.weight': f32([4, 1], [1, 2, 3, 4]),
    'something_else.gamma': f32([1], [1]),
  });
  const applied = applyLoras(model, [{ name: 'odd', path: odd, te: 1, unet: 1 }]);
  assert.equal(applied.warnings.length, 1);
  assert.match(applied.warnings[0]!, /2 key\(s\).*something_else\.gamma.*lora_unet_no_such_layer/);
  assert.throws(
    () => applyLoras(model, [{ name: 'xl', path: fx('loras/tiny-sdxl-kohya.safetensors'), te: 1, unet: 1 }]),
    /LoRA "xl" does not fit .*\(sd1\): it was made for sdxl/,
  );
});

test('frozen-patcher (::lora:: / ::diff::), (IA)3, old diffusers processor names and DoRA apply as their formulas say', async () => {
  const dir = tempDir();
  const model = await loadModel({ path: fx('tiny-sd1.safetensors'), tokenizerDir: fx('tiny-sd1') }, opts);
  const lin = 'down_blocks.0.resnets.0.time_emb_proj';
  const [out, inp] = model.unet.shape(`${lin}.weight`) as [number, number];
  const W = model.unet.get(`${lin}.weight`).data;
  const B = model.unet.get(`${lin}.bias`).data;
  const up = Float32Array.from({ length: out }, (_, i) => 0.01 * (i + 1));
  const down = Float32Array.from({ length: inp }, (_, j) => 0.02 * ((j % 5) - 2));
  const biasDiff = Float32Array.from({ length: out }, (_, i) => 0.1 * i);
  const file = (name: string, tensors: Parameters<typeof writeSafetensors>[1]) => {
    const path = join(dir, `${name}.safetensors`);
    writeSafetensors(path, tensors);
    return { name, path, te: 1, unet: 0.5 };
  };
  const frozen = file('frozen', {
    'diffusion_model.input_blocks.1.0.emb_layers.1.weight::lora::0': f32([out, 1], up),
    'diffusion_model.input_blocks.1.0.emb_layers.1.weight::lora::1': f32([1, inp], down),
    'diffusion_model.input_blocks.1.0.emb_layers.1.bias::diff::0': f32([out], biasDiff),
  });
  const applied = applyLoras(model, [frozen]);
  assert.deepEqual(applied.warnings, []);
  const w1 = applied.unet.get(`${lin}.weight`).data;
  const b1 = applied.unet.get(`${lin}.bias`).data;
  for (let i = 0; i < out; i++) {
    assert.ok(Math.abs(b1[i]! - (B[i]! + 0.5 * biasDiff[i]!)) < 1e-6);
    for (let j = 0; j < inp; j += 7) assert.ok(Math.abs(w1[i * inp + j]! - (W[i * inp + j]! + 0.5 * up[i]! * down[j]!)) < 1e-6);
  }

  const scaleVec = Float32Array.from({ length: out }, (_, i) => 0.05 * (i % 3));
  const ia3 = file('ia3', {
    'lora_unet_down_blocks_0_resnets_0_time_emb_proj.weight': f32([out], scaleVec),
    'lora_unet_down_blocks_0_resnets_0_time_emb_proj.on_input': f32([], [0]),
  });
  const w2 = applyLoras(model, [ia3]).unet.get(`${lin}.weight`).data;
  for (let i = 0; i < out; i++) for (let j = 0; j < inp; j += 7) assert.ok(Math.abs(w2[i * inp + j]! - W[i * inp + j]! * (1 + 0.5 * scaleVec[i]!)) < 1e-6);

  const q = 'down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q';
  const [qo, qi] = model.unet.shape(`${q}.weight`) as [number, number];
  const Q = model.unet.get(`${q}.weight`).data;
  const qUp = Float32Array.from({ length: qo }, (_, i) => 0.03 * ((i % 4) - 1.5));
  const qDown = Float32Array.from({ length: qi }, (_, j) => 0.01 * (j % 3));
  const proc = file('processor', {
    [`unet.${q.replace('.to_q', '.processor.to_q_lora')}.up.weight`]: f32([qo, 1], qUp),
    [`unet.${q.replace('.to_q', '.processor.to_q_lora')}.down.weight`]: f32([1, qi], qDown),
  });
  const w3 = applyLoras(model, [proc]).unet.get(`${q}.weight`).data;
  for (let i = 0; i < qo; i++) for (let j = 0; j < qi; j += 5) assert.ok(Math.abs(w3[i * qi + j]! - (Q[i * qi + j]! + 0.5 * qUp[i]! * qDown[j]!)) < 1e-6);

  // DoRA at multiplier 1: every output row of W + ΔW is rescaled to the norm dora_scale gives.
  const magnitude = Float32Array.from({ length: qo }, (_, i) => 1 + i / qo);
  const dora = file('dora', {
    [`lora_unet_${q.replaceAll('.', '_')}.lora_up.weight`]: f32([qo, 1], qUp),
    [`lora_unet_${q.replaceAll('.', '_')}.lora_down.weight`]: f32([1, qi], qDown),
    [`lora_unet_${q.replaceAll('.', '_')}.dora_scale`]: f32([qo, 1], magnitude),
  });
  const w4 = applyLoras(model, [{ ...dora, unet: 1 }]).unet.get(`${q}.weight`).data;
  for (let i = 0; i < qo; i++) {
    let norm = 0;
    for (let j = 0; j < qi; j++) norm += w4[i * qi + j]! ** 2;
    assert.ok(Math.abs(Math.sqrt(norm) - magnitude[i]!) < 1e-4, `row ${i} norm ${Math.sqrt(norm)}`);
  }
});

test('a diffusers folder gets the same LDM/SGM LoRA names as its single file (tiny-sd1 and tiny-sdxl)', async () => {
  for (const name of ['tiny-sd1', 'tiny-sdxl']) {
    const folder = buildKeyMap(await loadModel({ path: fx(name) }, opts));
    const single = buildKeyMap(await loadModel({ path: fx(`${name}.safetensors`), tokenizerDir: fx(name) }, opts));
    const ldmKeys = [...single.keys()].filter((k) => /^(lora_unet_(input|output|middle)_block|diffusion_model\.)/.test(k));
    assert.ok(ldmKeys.length > 50, name);
    for (const k of ldmKeys) assert.deepEqual(folder.get(k), single.get(k), `${name}: ${k}`);
  }
});
