// The feeds of a LoRA-branch graph (nets/lora-branch.ts): for every branch site, the low-rank factors of the
// LoRAs that patch it, concatenated along the rank axis, each with its multiplier and alpha/rank scale folded into
// `up`; rank-0 (empty) factors at the sites no LoRA patches, which leave the base output as it is. Only plain
// low-rank modules (kohya/LoCon, diffusers, PEFT, frozen-patcher ::lora::, CP/Tucker `lora_mid` composed into a
// down convolution) can be branches; the others are merged into the weights (merged-weights.ts).
import { ModelFileError } from '../../api.ts';
import { numel, type Tensor } from '../../tensor.ts';
import type { LoraModule } from './formats.ts';
import type { TensorDictionary } from './tensor-dictionary.ts';

export interface BranchPatch {
  dict: TensorDictionary;
  module: LoraModule;
  multiplier: number;
}

/** A branch input as the session declares it (name and shape; symbolic dims are strings). */
export interface BranchInputInfo {
  name: string;
  shape: ReadonlyArray<number | string>;
}

/** Whether a module can be computed as a branch: a plain low-rank pair, without DoRA's renormalisation. */
export function isBranchable(module: LoraModule): boolean {
  return module.algorithm === 'lora' && !module.tensors.has('dora_scale');
}

interface Factors {
  /** [r, inner] where inner = in * kh * kw. */
  down: Float32Array;
  /** [out, r], already multiplied by multiplier * scale. */
  up: Float32Array;
  rank: number;
}

function scalarOf(dict: TensorDictionary, name: string | undefined): number | undefined {
  if (name === undefined) return undefined;
  const t = dict.get(name);
  if (t.data.length !== 1) throw new ModelFileError(dict.file, `"${name}" should hold one number, it has shape [${t.shape}]`);
  return t.data[0]!;
}

/** One module's factors for a site of `out` outputs and `inner` = in·kh·kw inputs (math as merge's lowRankDelta). */
function factorsOf(p: BranchPatch, out: number, inner: number): Factors {
  const { dict, module } = p;
  const up = dict.get(module.tensors.get('up')!);
  let down = dict.get(module.tensors.get('down')!);
  const r = down.shape[0] ?? 1;
  const alpha = scalarOf(dict, module.tensors.get('alpha'));
  const fixed = scalarOf(dict, module.tensors.get('scale'));
  const scale = p.multiplier * (fixed ?? (alpha !== undefined ? alpha / r : 1));
  const midName = module.tensors.get('mid');
  if (midName) down = composeMid(dict.get(midName), down, r);
  if (numel(up.shape) !== out * r || numel(down.shape) !== r * inner) {
    throw new ModelFileError(dict.file, `module "${module.key}": factors [${up.shape}] x [${down.shape}] do not fit a layer of ${out} x ${inner}`);
  }
  const upScaled = up.data; // a fresh array (TensorDictionary.get): scaled in place
  for (let i = 0; i < upScaled.length; i++) upScaled[i] = upScaled[i]! * scale;
  return { down: down.data, up: upScaled, rank: r };
}

/** CP/Tucker: down'[n, j, s] = Σ_m mid[n, m, s] · down[m, j], so up @ down' is the module's ΔW exactly. */
function composeMid(mid: Tensor, down: Tensor, r: number): Tensor {
  const inDim = numel(down.shape) / r;
  const kk = numel(mid.shape) / (r * r);
  const out = new Float32Array(r * inDim * kk);
  for (let n = 0; n < r; n++)
    for (let m = 0; m < r; m++)
      for (let s = 0; s < kk; s++) {
        const v = mid.data[(n * r + m) * kk + s]!;
        if (v === 0) continue;
        for (let j = 0; j < inDim; j++) out[(n * inDim + j) * kk + s]! += v * down.data[m * inDim + j]!;
      }
  return { shape: [r, inDim, ...mid.shape.slice(2)], data: out };
}

/**
 * Feeds for every branch input among `inputs` (other inputs are ignored). `patches` maps a site path to its
 * modules, in request order. A patched path without a branch is a layer the graph does not compute (SDXL's text
 * encoders stop at the penultimate layer), which a merge would not change either.
 */
export function branchFeeds(inputs: readonly BranchInputInfo[], patches: Map<string, BranchPatch[]>): Record<string, Tensor> {
  const sites = new Map<string, { down?: BranchInputInfo; up?: BranchInputInfo }>();
  for (const info of inputs) {
    const m = /^lora_(down|up):(.+)$/.exec(info.name);
    if (!m) continue;
    const site = sites.get(m[2]!) ?? {};
    site[m[1] as 'down' | 'up'] = info;
    sites.set(m[2]!, site);
  }
  const feeds: Record<string, Tensor> = {};
  for (const [path, { down, up }] of sites) {
    if (!down || !up) throw new Error(`internal error: branch site "${path}" lacks an input`);
    const conv = down.shape.length === 4;
    const dim = (v: number | string) => (typeof v === 'number' ? v : -1);
    const inDim = dim(down.shape[1]!);
    const out = dim(up.shape[0]!);
    const kernel = conv ? down.shape.slice(2).map(dim) : [];
    if (inDim < 0 || out < 0 || kernel.some((k) => k < 0)) throw new Error(`internal error: branch site "${path}" has symbolic channel dims`);
    const inner = inDim * kernel.reduce((a, b) => a * b, 1);
    const factors = (patches.get(path) ?? []).map((p) => factorsOf(p, out, inner));
    const rank = factors.reduce((a, f) => a + f.rank, 0);
    if (factors.length === 1) {
      // One LoRA: its factors as they are (no concatenation).
      feeds[down.name] = { shape: [rank, inDim, ...kernel], data: factors[0]!.down };
      feeds[up.name] = { shape: [out, rank, ...kernel.map(() => 1)], data: factors[0]!.up };
      continue;
    }
    const downData = new Float32Array(rank * inner);
    const upData = new Float32Array(out * rank);
    // down [R, in(, kh, kw)]: each LoRA's rows appended; up [out, R(, 1, 1)]: each LoRA's columns side by side.
    let offset = 0;
    for (const f of factors) {
      downData.set(f.down, offset * inner);
      for (let i = 0; i < out; i++) upData.set(f.up.subarray(i * f.rank, (i + 1) * f.rank), i * rank + offset);
      offset += f.rank;
    }
    feeds[down.name] = { shape: [rank, inDim, ...kernel], data: downData };
    feeds[up.name] = { shape: [out, rank, ...kernel.map(() => 1)], data: upData };
  }
  return feeds;
}
