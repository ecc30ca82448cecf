// A tiny SD3.5-shaped MMDiT for the tests (there is no SD3.5 fixture): the tiny SD3 fixture's original-layout
// weights plus, from seeded random numbers, what SD3.5 adds: per-head QK RMS-norm scales (`attn.ln_q` / `ln_k`) in
// both streams of every block (SD3.5 Large and Medium), and in block 0 MMDiT-X's image-only `attn2` (qkv, proj and
// its own ln_q / ln_k) with the x_block's adaLN widened from 6 to 9 chunks (SD3.5 Medium's dual_attention_layers).
// The diffusers layout is written by an independent forward conversion (the mapping of diffusers'
// convert_sd3_to_diffusers.py), so loading it checks weights/sd3-keys.ts' inverse.
import { join } from 'node:path';
import { createRng } from '../../src/engine/rng.ts';
import { SafetensorsFile, type TensorToWrite, writeSafetensors } from '../../src/engine/weights/safetensors.ts';
import { FIXTURES } from './nets/fixture-io.ts';

export interface HostTensor {
  shape: number[];
  data: Float32Array;
}

export const TINY_SD35 = { hidden: 128, heads: 2, headDim: 64, depth: 2, dualAttentionLayers: [0] } as const;

/** The tiny SD3.5 weights under the original (Stability) names. */
export function tinySd35Original(seed = 3501): Map<string, HostTensor> {
  const f = SafetensorsFile.open(join(FIXTURES, 'tiny-sd3', 'sd3-original.safetensors'));
  const out = new Map<string, HostTensor>();
  for (const n of f.names()) {
    const bytes = f.readBytes(n);
    out.set(n, { shape: [...f.entry(n).shape], data: new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength)) });
  }
  const rng = createRng('cpu', seed);
  const { hidden, headDim } = TINY_SD35;
  const random = (shape: number[], scale: number, offset = 0): HostTensor => {
    const count = shape.reduce((a, b) => a * b, 1);
    return { shape, data: Float32Array.from(rng.randn(count), (v) => offset + scale * v) };
  };
  for (let i = 0; i < TINY_SD35.depth; i++) {
    for (const stream of ['x_block', 'context_block']) {
      out.set(`joint_blocks.${i}.${stream}.attn.ln_q.weight`, random([headDim], 0.2, 1));
      out.set(`joint_blocks.${i}.${stream}.attn.ln_k.weight`, random([headDim], 0.2, 1));
    }
  }
  for (const i of TINY_SD35.dualAttentionLayers) {
    const p = `joint_blocks.${i}.x_block`;
    out.set(`${p}.attn2.qkv.weight`, random([3 * hidden, hidden], 0.08));
    out.set(`${p}.attn2.qkv.bias`, random([3 * hidden], 0.02));
    out.set(`${p}.attn2.proj.weight`, random([hidden, hidden], 0.08));
    out.set(`${p}.attn2.proj.bias`, random([hidden], 0.02));
    out.set(`${p}.attn2.ln_q.weight`, random([headDim], 0.2, 1));
    out.set(`${p}.attn2.ln_k.weight`, random([headDim], 0.2, 1));
    // adaLN: the SD3 block's 6 chunks, then shift_msa2, scale_msa2, gate_msa2 (gate biased away from 0 so attn2 shows).
    const w6 = out.get(`${p}.adaLN_modulation.1.weight`)!;
    const b6 = out.get(`${p}.adaLN_modulation.1.bias`)!;
    const w3 = random([3 * hidden, hidden], 0.05);
    const b3 = random([3 * hidden], 0.1);
    for (let j = 2 * hidden; j < 3 * hidden; j++) b3.data[j] = b3.data[j]! + 0.5;
    out.set(`${p}.adaLN_modulation.1.weight`, { shape: [9 * hidden, hidden], data: concat(w6.data, w3.data) });
    out.set(`${p}.adaLN_modulation.1.bias`, { shape: [9 * hidden], data: concat(b6.data, b3.data) });
  }
  return out;
}

function concat(...parts: Float32Array[]): Float32Array {
  const out = new Float32Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** Rows [from, to) of a row-major tensor. */
function rows(t: HostTensor, from: number, to: number): HostTensor {
  const width = t.shape.slice(1).reduce((a, b) => a * b, 1);
  return { shape: [to - from, ...t.shape.slice(1)], data: t.data.slice(from * width, to * width) };
}

/** The same weights as a diffusers SD3Transformer2DModel (convert_sd3_to_diffusers.py's mapping, written forward). */
export function toDiffusersLayout(original: Map<string, HostTensor>): Map<string, HostTensor> {
  const { hidden, depth } = TINY_SD35;
  const out = new Map<string, HostTensor>();
  const get = (n: string) => {
    const t = original.get(n);
    if (!t) throw new Error(`missing ${n}`);
    return t;
  };
  const put = (to: string, from: string) => {
    for (const s of ['weight', 'bias']) if (original.has(`${from}.${s}`)) out.set(`${to}.${s}`, get(`${from}.${s}`));
  };
  // (shift, scale) -> (scale, shift)
  const swapped = (to: string, from: string) => {
    for (const s of ['weight', 'bias']) {
      const t = get(`${from}.${s}`);
      const shift = rows(t, 0, hidden);
      const scale = rows(t, hidden, 2 * hidden);
      out.set(`${to}.${s}`, { shape: t.shape, data: concat(scale.data, shift.data) });
    }
  };
  const split = (to: string[], from: string) => {
    for (const s of ['weight', 'bias']) {
      const t = get(`${from}.${s}`);
      to.forEach((name, k) => out.set(`${name}.${s}`, rows(t, k * hidden, (k + 1) * hidden)));
    }
  };
  out.set('pos_embed.pos_embed', get('pos_embed'));
  put('pos_embed.proj', 'x_embedder.proj');
  put('time_text_embed.timestep_embedder.linear_1', 't_embedder.mlp.0');
  put('time_text_embed.timestep_embedder.linear_2', 't_embedder.mlp.2');
  put('time_text_embed.text_embedder.linear_1', 'y_embedder.mlp.0');
  put('time_text_embed.text_embedder.linear_2', 'y_embedder.mlp.2');
  put('context_embedder', 'context_embedder');
  for (let i = 0; i < depth; i++) {
    const d = `transformer_blocks.${i}`;
    const j = `joint_blocks.${i}`;
    const last = i === depth - 1;
    split([`${d}.attn.to_q`, `${d}.attn.to_k`, `${d}.attn.to_v`], `${j}.x_block.attn.qkv`);
    split([`${d}.attn.add_q_proj`, `${d}.attn.add_k_proj`, `${d}.attn.add_v_proj`], `${j}.context_block.attn.qkv`);
    put(`${d}.attn.norm_q`, `${j}.x_block.attn.ln_q`);
    put(`${d}.attn.norm_k`, `${j}.x_block.attn.ln_k`);
    put(`${d}.attn.norm_added_q`, `${j}.context_block.attn.ln_q`);
    put(`${d}.attn.norm_added_k`, `${j}.context_block.attn.ln_k`);
    put(`${d}.attn.to_out.0`, `${j}.x_block.attn.proj`);
    if (!last) put(`${d}.attn.to_add_out`, `${j}.context_block.attn.proj`);
    if (original.has(`${j}.x_block.attn2.qkv.weight`)) {
      split([`${d}.attn2.to_q`, `${d}.attn2.to_k`, `${d}.attn2.to_v`], `${j}.x_block.attn2.qkv`);
      put(`${d}.attn2.norm_q`, `${j}.x_block.attn2.ln_q`);
      put(`${d}.attn2.norm_k`, `${j}.x_block.attn2.ln_k`);
      put(`${d}.attn2.to_out.0`, `${j}.x_block.attn2.proj`);
    }
    put(`${d}.norm1.linear`, `${j}.x_block.adaLN_modulation.1`);
    (last ? swapped : put)(`${d}.norm1_context.linear`, `${j}.context_block.adaLN_modulation.1`);
    put(`${d}.ff.net.0.proj`, `${j}.x_block.mlp.fc1`);
    put(`${d}.ff.net.2`, `${j}.x_block.mlp.fc2`);
    if (!last) {
      put(`${d}.ff_context.net.0.proj`, `${j}.context_block.mlp.fc1`);
      put(`${d}.ff_context.net.2`, `${j}.context_block.mlp.fc2`);
    }
  }
  put('proj_out', 'final_layer.linear');
  swapped('norm_out.linear', 'final_layer.adaLN_modulation.1');
  return out;
}

export function writeHostTensors(file: string, tensors: Map<string, HostTensor>, prefix = ''): string {
  const out: Record<string, TensorToWrite> = {};
  for (const [n, t] of tensors) out[prefix + n] = { dtype: 'F32', shape: t.shape, bytes: new Uint8Array(Float32Array.from(t.data).buffer) };
  writeSafetensors(file, out);
  return file;
}

/** diffusers' transformer/config.json for the tiny SD3.5 (as SD3.5 Medium's: qk_norm rms_norm, dual attention). */
export const TINY_SD35_DIFFUSERS_CONFIG = {
  _class_name: 'SD3Transformer2DModel',
  attention_head_dim: 64,
  caption_projection_dim: 128,
  in_channels: 16,
  joint_attention_dim: 32,
  num_attention_heads: 2,
  num_layers: 2,
  out_channels: 16,
  patch_size: 2,
  pooled_projection_dim: 32,
  pos_embed_max_size: 8,
  sample_size: 8,
  qk_norm: 'rms_norm',
  dual_attention_layers: TINY_SD35.dualAttentionLayers,
};
