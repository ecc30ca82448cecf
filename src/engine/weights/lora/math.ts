// The merge formulas (reference-notes §2.1; ComfyUI weight_adapter/*, A1111 network_*.py): each returns the
// patched weight for one module at one multiplier. The scale (alpha/rank) is a float64 scalar times the float32
// product, then added to W, in the references' order.
import { ModelFileError } from '../../api.ts';
import { numel, type Tensor } from '../../tensor.ts';
import type { LoraModule } from './formats.ts';
import type { TensorDictionary } from './tensor-dictionary.ts';

/** a [m, k] @ b [k, n], float32 results (float64 accumulation). */
function matmul(a: Float32Array, b: Float32Array, m: number, k: number, n: number): Float32Array {
  const out = new Float32Array(m * n);
  const row = new Float64Array(n);
  for (let i = 0; i < m; i++) {
    row.fill(0);
    for (let p = 0; p < k; p++) {
      const av = a[i * k + p]!;
      if (av === 0) continue;
      const off = p * n;
      for (let j = 0; j < n; j++) row[j]! += av * b[off + j]!;
    }
    for (let j = 0; j < n; j++) out[i * n + j] = row[j]!;
  }
  return out;
}

function scalar(dict: TensorDictionary, name: string | undefined): number | undefined {
  if (name === undefined) return undefined;
  const t = dict.get(name);
  if (t.data.length !== 1) throw new ModelFileError(dict.file, `"${name}" should hold one number, it has shape [${t.shape}]`);
  return t.data[0]!;
}

function tensorOf(dict: TensorDictionary, module: LoraModule, role: string): Tensor {
  return dict.get(module.tensors.get(role)!);
}

function rows(t: Tensor): number {
  return t.shape[0] ?? 1;
}

function checkSize(dict: TensorDictionary, module: LoraModule, got: number, want: number[]): void {
  if (got !== numel(want)) throw new ModelFileError(dict.file, `module "${module.key}" gives ${got} values for a weight of shape [${want}]`);
}

/** ΔW before the user multiplier (scale included), flattened like W. */
function lowRankDelta(dict: TensorDictionary, module: LoraModule, shape: number[]): Float32Array {
  const up = tensorOf(dict, module, 'up');
  const down = tensorOf(dict, module, 'down');
  const r = rows(down);
  const out = rows(up);
  const alpha = scalar(dict, module.tensors.get('alpha'));
  const fixed = scalar(dict, module.tensors.get('scale'));
  const scale = fixed ?? (alpha !== undefined ? alpha / r : 1);
  let product: Float32Array;
  if (module.tensors.has('mid')) {
    // CP/Tucker conv: ΔW[i,j,k,l] = Σ_n Σ_m mid[n,m,k,l]·up[i,n]·down[m,j] (A1111 rebuild_cp_decomposition).
    const mid = tensorOf(dict, module, 'mid');
    const inDim = numel(down.shape) / r;
    const kk = numel(mid.shape) / (r * r);
    product = new Float32Array(out * inDim * kk);
    const tmp = matmul(up.data, mid.data, out, r, r * kk); // [out, m*kk]
    for (let i = 0; i < out; i++)
      for (let j = 0; j < inDim; j++)
        for (let s = 0; s < kk; s++) {
          let acc = 0;
          for (let m = 0; m < r; m++) acc += tmp[i * r * kk + m * kk + s]! * down.data[m * inDim + j]!;
          product[(i * inDim + j) * kk + s] = acc;
        }
  } else {
    product = matmul(up.data, down.data, out, numel(up.shape) / out, numel(down.shape) / r);
  }
  checkSize(dict, module, product.length, shape);
  for (let i = 0; i < product.length; i++) product[i] = scale * product[i]!;
  return product;
}

/**
 * LyCORIS Tucker factors: W[p, q, s] = Σ_i Σ_j t[i, j, s] · wa[i, p] · wb[j, q] (einsum "i j k l, j r, i p ->
 * p r k l"), with t [r, r, kh, kw], wa [r, out], wb [r, in]: the full [out, in, kh, kw] weight.
 */
function rebuildTucker(t: Tensor, wa: Tensor, wb: Tensor): { data: Float32Array; rows: number } {
  const r = rows(t);
  const kk = numel(t.shape) / (r * r);
  const out = numel(wa.shape) / rows(wa);
  const inDim = numel(wb.shape) / rows(wb);
  // tmp[i, q, s] = Σ_j t[i, j, s] · wb[j, q]
  const tmp = new Float64Array(r * inDim * kk);
  for (let i = 0; i < r; i++)
    for (let j = 0; j < r; j++)
      for (let s = 0; s < kk; s++) {
        const v = t.data[(i * r + j) * kk + s]!;
        if (v === 0) continue;
        for (let q = 0; q < inDim; q++) tmp[(i * inDim + q) * kk + s]! += v * wb.data[j * inDim + q]!;
      }
  const w = new Float32Array(out * inDim * kk);
  const row = new Float64Array(inDim * kk);
  for (let p = 0; p < out; p++) {
    row.fill(0);
    for (let i = 0; i < r; i++) {
      const a = wa.data[i * out + p]!;
      if (a === 0) continue;
      const off = i * inDim * kk;
      for (let x = 0; x < row.length; x++) row[x]! += a * tmp[off + x]!;
    }
    w.set(row, p * inDim * kk);
  }
  return { data: w, rows: out };
}

function lohaDelta(dict: TensorDictionary, module: LoraModule, shape: number[]): Float32Array {
  const [w1a, w1b, w2a, w2b] = ['hada_w1_a', 'hada_w1_b', 'hada_w2_a', 'hada_w2_b'].map((r) => tensorOf(dict, module, r)) as [Tensor, Tensor, Tensor, Tensor];
  const r = rows(w1b);
  const alpha = scalar(dict, module.tensors.get('alpha'));
  const scale = alpha !== undefined ? alpha / r : 1;
  const out = rows(w1a);
  const tucker = module.tensors.has('hada_t1') && module.tensors.has('hada_t2');
  if (!tucker && (module.tensors.has('hada_t1') || module.tensors.has('hada_t2')))
    throw new ModelFileError(dict.file, `module "${module.key}": LoHa Tucker factors need both hada_t1 and hada_t2`);
  const w1 = tucker ? rebuildTucker(tensorOf(dict, module, 'hada_t1'), w1a, w1b).data : matmul(w1a.data, w1b.data, out, r, numel(w1b.shape) / r);
  const w2 = tucker
    ? rebuildTucker(tensorOf(dict, module, 'hada_t2'), w2a, w2b).data
    : matmul(w2a.data, w2b.data, rows(w2a), rows(w2b), numel(w2b.shape) / rows(w2b));
  checkSize(dict, module, w1.length, shape);
  for (let i = 0; i < w1.length; i++) w1[i] = scale * Math.fround(w1[i]! * w2[i]!);
  return w1;
}

function lokrFactor(dict: TensorDictionary, module: LoraModule, n: 1 | 2): { data: Float32Array; rows: number; rank?: number } {
  const full = module.tensors.get(`lokr_w${n}`);
  if (full) {
    const t = dict.get(full);
    return { data: t.data, rows: rows(t) };
  }
  const a = tensorOf(dict, module, `lokr_w${n}_a`);
  const b = tensorOf(dict, module, `lokr_w${n}_b`);
  const r = rows(b);
  // Tucker w2 (conv): lokr_t2 [r, r, kh, kw] with w2_a [r, out_k], w2_b [r, in_k].
  if (module.tensors.has(`lokr_t${n}`)) return { ...rebuildTucker(tensorOf(dict, module, `lokr_t${n}`), a, b), rank: r };
  return { data: matmul(a.data, b.data, rows(a), r, numel(b.shape) / r), rows: rows(a), rank: r };
}

/** ΔW = kron(w1 [a,c], w2 [b, d·k]) laid out as W [a·b, c·d, k] (w1 unsqueezed over the kernel for convs). */
function lokrDelta(dict: TensorDictionary, module: LoraModule, shape: number[]): Float32Array {
  const w1 = lokrFactor(dict, module, 1);
  const w2 = lokrFactor(dict, module, 2);
  const rank = w2.rank ?? w1.rank;
  const alpha = scalar(dict, module.tensors.get('alpha'));
  const scale = rank !== undefined && alpha !== undefined ? alpha / rank : 1;
  const [outDim, inDim] = [shape[0]!, shape[1] ?? 1];
  const k = numel(shape) / (outDim * inDim);
  const a = w1.rows;
  const c = w1.data.length / a;
  const b = w2.rows;
  const d = w2.data.length / (b * k);
  if (a * b !== outDim || c * d !== inDim) throw new ModelFileError(dict.file, `module "${module.key}": LoKr factors do not fit a weight of shape [${shape}]`);
  const outData = new Float32Array(numel(shape));
  for (let i = 0; i < a; i++)
    for (let j = 0; j < c; j++) {
      const v = w1.data[i * c + j]!;
      for (let p = 0; p < b; p++)
        for (let q = 0; q < d; q++)
          for (let s = 0; s < k; s++) outData[((i * b + p) * inDim + (j * d + q)) * k + s] = scale * Math.fround(v * w2.data[(p * d + q) * k + s]!);
    }
  return outData;
}

/**
 * W after applying `module` at multiplier `m`. `param` is which tensor of the layer: "weight" or "bias"
 * (only full/diff patches biases). Returns the input array, modified.
 */
export function applyModule(dict: TensorDictionary, module: LoraModule, param: 'weight' | 'bias', w: Tensor, m: number): Float32Array {
  const data = w.data;
  if (param === 'bias') {
    const diffB = module.tensors.get('diff_b');
    if (!diffB) return data;
    const d = dict.get(diffB).data;
    checkSize(dict, module, d.length, w.shape);
    for (let i = 0; i < data.length; i++) data[i] = data[i]! + Math.fround(m * d[i]!);
    return data;
  }
  if (module.algorithm === 'ia3') {
    // W ⊙ (1 + m·w): w per output row, or per input column when on_input is set.
    const vec = tensorOf(dict, module, 'weight').data;
    const onInput = (scalar(dict, module.tensors.get('on_input')) ?? 0) !== 0;
    const outDim = w.shape[0]!;
    const inner = data.length / outDim;
    const inDim = w.shape[1] ?? 1;
    const k = inner / inDim;
    for (let i = 0; i < data.length; i++) {
      const idx = onInput ? Math.floor((i % inner) / k) : Math.floor(i / inner);
      data[i] = data[i]! * (1 + m * vec[idx]!);
    }
    return data;
  }
  let delta: Float32Array;
  if (module.algorithm === 'lora') delta = lowRankDelta(dict, module, w.shape);
  else if (module.algorithm === 'loha') delta = lohaDelta(dict, module, w.shape);
  else if (module.algorithm === 'lokr') delta = lokrDelta(dict, module, w.shape);
  else {
    const diff = module.tensors.get('diff');
    if (!diff) return data;
    delta = dict.get(diff).data;
    checkSize(dict, module, delta.length, w.shape);
  }
  const doraName = module.tensors.get('dora_scale');
  if (doraName) return applyDora(dict.get(doraName), w, delta, m);
  for (let i = 0; i < data.length; i++) data[i] = data[i]! + Math.fround(m * delta[i]!);
  return data;
}

/**
 * DoRA: Wc = W + ΔW, rescaled so each output row (or input column when dora_scale is per input) has the norm
 * dora_scale gives; a multiplier m ≠ 1 interpolates W + m·(Wc − W) (ComfyUI weight_decompose, PEFT's norm of Wc).
 */
function applyDora(scaleT: Tensor, w: Tensor, delta: Float32Array, m: number): Float32Array {
  const data = w.data;
  const outDim = w.shape[0]!;
  const inner = data.length / outDim;
  const inDim = w.shape[1] ?? 1;
  const k = inner / inDim;
  const perOutput = scaleT.data.length === outDim;
  const wc = new Float32Array(data.length);
  for (let i = 0; i < data.length; i++) wc[i] = data[i]! + delta[i]!;
  const groups = perOutput ? outDim : inDim;
  const norms = new Float64Array(groups);
  const group = (i: number) => (perOutput ? Math.floor(i / inner) : Math.floor((i % inner) / k));
  for (let i = 0; i < wc.length; i++) norms[group(i)]! += wc[i]! * wc[i]!;
  for (let g = 0; g < groups; g++) norms[g] = Math.sqrt(norms[g]!) + 1.1920929e-7;
  for (let i = 0; i < wc.length; i++) {
    const g = group(i);
    const v = wc[i]! * (scaleT.data[g]! / norms[g]!);
    data[i] = data[i]! + m * (v - data[i]!);
  }
  return data;
}
