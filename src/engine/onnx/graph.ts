// GraphBuilder: writes an ONNX model from TypeScript, one op at a time, the way a network's forward()
// reads. Weights stream straight into an external-data file as they are added, so building a multi-GB
// UNet never holds all of it in memory, and the .onnx protobuf stays far below its 2 GB limit.
import { closeSync, openSync, renameSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import type { Tensor } from '../tensor.ts';
import { f32ToF16Bits } from '../weights/float.ts';
import { AttrType, encodeModel, OnnxDType, type AttributeMsg, type NodeMsg, type TensorMsg, type ValueInfoMsg } from './proto.ts';

/** A named value in the graph (an op output, input or initializer). */
export interface Value {
  readonly name: string;
}

/** Weights and activations are fp32 on CPU; fp16 on GPUs, with fp32 graph inputs/outputs cast at the edges. */
export type Precision = 'fp32' | 'fp16';

export type AttrValue =
  | number // INT
  | number[] // INTS
  | string // STRING
  | { float: number }
  | { floats: number[] }
  | { tensor: TensorMsg };

export type InputType = 'float' | 'int64' | 'int32';

/** How attention is expressed: onnxruntime's fused contrib op, or plain ONNX ops. */
export type AttentionKind = 'contrib' | 'onnx';

export interface AttentionOptions {
  heads: number;
  headDim: number;
  /** Score scale; defaults to 1/sqrt(headDim). */
  scale?: number;
  /** Additive score bias broadcast to [batch, heads, seq, kvSeq], e.g. a causal mask. */
  bias?: Value;
  kind?: AttentionKind;
}

export const OPSET = 17;
/** Query tokens up to which plain-ONNX attention computes the whole score matrix (SD at 512 px: 4096). */
export const CHUNK_THRESHOLD = 4096;
/** Query slices beyond the threshold. */
export const QUERY_SLICES = 32;
const MS_DOMAIN = 'com.microsoft';

/** Tensors smaller than this are stored inline in the protobuf; larger ones go to the external file. */
const INLINE_LIMIT_BYTES = 256;
/** Large tensors are page-aligned so onnxruntime can map them from the file rather than copy. */
const PAGE = 4096;

export function float(x: number): { float: number } {
  return { float: x };
}

export class GraphBuilder {
  private readonly nodes: NodeMsg[] = [];
  private readonly initializers: TensorMsg[] = [];
  private readonly inputs: ValueInfoMsg[] = [];
  private readonly outputs: ValueInfoMsg[] = [];
  private readonly usedNames = new Set<string>();
  private readonly constCache = new Map<string, Value>();
  private usesMsDomain = false;
  private weightsFd: number | undefined;
  private weightsOffset = 0;
  private readonly weightsFile = 'weights.bin';

  /**
   * @param dir folder the model is written to (model.onnx + weights.bin); created by the caller.
   */
  constructor(
    readonly graphName: string,
    readonly dir: string,
    readonly precision: Precision = 'fp32',
  ) {}

  /** The element type activations and weights use inside the graph. */
  get computeType(): number {
    return this.precision === 'fp16' ? OnnxDType.FLOAT16 : OnnxDType.FLOAT;
  }

  private fresh(base: string): string {
    const name = base.replace(/[^A-Za-z0-9_.:/-]/g, '_');
    if (!this.usedNames.has(name)) {
      this.usedNames.add(name);
      return name;
    }
    for (let i = 1; ; i++) {
      const candidate = `${name}__${i}`;
      if (!this.usedNames.has(candidate)) {
        this.usedNames.add(candidate);
        return candidate;
      }
    }
  }

  /** Declares a graph input. Float inputs are fp32 at the boundary and cast to the compute type inside. */
  input(name: string, shape: (number | string)[], type: InputType = 'float', opts: { keepFloat32?: boolean } = {}): Value {
    const elem = type === 'float' ? OnnxDType.FLOAT : type === 'int64' ? OnnxDType.INT64 : OnnxDType.INT32;
    this.usedNames.add(name);
    this.inputs.push(valueInfo(name, elem, shape));
    const v = { name };
    // keepFloat32: values that need fp32 math even in fp16 graphs (timesteps feeding sinusoids).
    if (type === 'float' && this.precision === 'fp16' && !opts.keepFloat32) return this.cast(v, OnnxDType.FLOAT16);
    return v;
  }

  /** Declares a graph output; float outputs leave the graph as fp32. */
  output(v: Value, name: string, shape: (number | string)[], type: InputType = 'float'): void {
    let src = v;
    if (type === 'float' && this.precision === 'fp16') src = this.cast(v, OnnxDType.FLOAT);
    this.usedNames.add(name);
    this.nodes.push({ input: [src.name], output: [name], name: `${name}_identity`, opType: 'Identity', attribute: [] });
    const elem = type === 'float' ? OnnxDType.FLOAT : type === 'int64' ? OnnxDType.INT64 : OnnxDType.INT32;
    this.outputs.push(valueInfo(name, elem, shape));
  }

  /** Adds a weight (stored in the compute type) and returns it as a value. */
  weight(name: string, t: Tensor, reshape?: number[]): Value {
    const dims = reshape ?? t.shape;
    const bytes = this.precision === 'fp16' ? toFloat16Bytes(t.data) : new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);
    return this.addInitializer(name, dims, this.computeType, bytes);
  }

  /** A tensor stored as given (any element type, raw little-endian bytes): quantised weights and their scales. */
  initializer(name: string, dims: number[], dataType: number, bytes: Uint8Array): Value {
    return this.addInitializer(name, dims, dataType, bytes);
  }

  /** A constant in the compute type (scalars and small vectors used by the math). */
  constFloat(values: number | number[], dims?: number[]): Value {
    const arr = typeof values === 'number' ? [values] : values;
    const shape = dims ?? (typeof values === 'number' ? [] : [arr.length]);
    const key = `f:${shape.join('x')}:${arr.join(',')}`;
    const hit = this.constCache.get(key);
    if (hit) return hit;
    const f32 = Float32Array.from(arr);
    const bytes = this.precision === 'fp16' ? toFloat16Bytes(f32) : new Uint8Array(f32.buffer);
    const v = this.addInitializer('const_f', shape, this.computeType, bytes);
    this.constCache.set(key, v);
    return v;
  }

  constInt64(values: number | number[], dims?: number[]): Value {
    const arr = typeof values === 'number' ? [values] : values;
    const shape = dims ?? (typeof values === 'number' ? [] : [arr.length]);
    const key = `i:${shape.join('x')}:${arr.join(',')}`;
    const hit = this.constCache.get(key);
    if (hit) return hit;
    const i64 = BigInt64Array.from(arr.map((x) => BigInt(x)));
    const v = this.addInitializer('const_i', shape, OnnxDType.INT64, new Uint8Array(i64.buffer));
    this.constCache.set(key, v);
    return v;
  }

  /** An initializer of any element type from its raw little-endian bytes (int8 weights and their scales). */
  rawInitializer(name: string, dims: number[], dataType: number, bytes: Uint8Array): Value {
    return this.addInitializer(name, dims, dataType, bytes);
  }

  private addInitializer(base: string, dims: number[], dataType: number, bytes: Uint8Array): Value {
    const name = this.fresh(base);
    const msg: TensorMsg = { name, dims, dataType };
    if (bytes.byteLength <= INLINE_LIMIT_BYTES) {
      msg.rawData = bytes.slice();
    } else {
      const offset = this.appendWeights(bytes);
      msg.dataLocation = 1; // EXTERNAL
      msg.externalData = [
        { key: 'location', value: this.weightsFile },
        { key: 'offset', value: String(offset) },
        { key: 'length', value: String(bytes.byteLength) },
      ];
    }
    this.initializers.push(msg);
    return { name };
  }

  /** Told the weight bytes written so far after each external initializer (build progress). */
  onWeightsWritten?: (bytes: number) => void;

  private appendWeights(bytes: Uint8Array): number {
    if (this.weightsFd === undefined) this.weightsFd = openSync(join(this.dir, this.weightsFile), 'w');
    const pad = bytes.byteLength >= PAGE ? (PAGE - (this.weightsOffset % PAGE)) % PAGE : (64 - (this.weightsOffset % 64)) % 64;
    if (pad) {
      writeSync(this.weightsFd, new Uint8Array(pad));
      this.weightsOffset += pad;
    }
    const offset = this.weightsOffset;
    let written = 0;
    while (written < bytes.byteLength) written += writeSync(this.weightsFd, bytes, written, bytes.byteLength - written);
    this.weightsOffset += bytes.byteLength;
    this.onWeightsWritten?.(this.weightsOffset);
    return offset;
  }

  /** Appends an op with one output. */
  op(opType: string, inputs: (Value | null)[], attrs: Record<string, AttrValue> = {}, domain?: string): Value {
    return this.opN(opType, inputs, 1, attrs, domain)[0]!;
  }

  /** Appends an op with several outputs. A null input is an omitted optional input. */
  opN(opType: string, inputs: (Value | null)[], outputs: number, attrs: Record<string, AttrValue> = {}, domain?: string): Value[] {
    const nodeName = this.fresh(opType);
    const outs = Array.from({ length: outputs }, (_, i) => this.fresh(`${nodeName}_out${i}`));
    if (domain === MS_DOMAIN) this.usesMsDomain = true;
    this.nodes.push({
      input: inputs.map((v) => (v ? v.name : '')),
      output: outs,
      name: nodeName,
      opType,
      domain: domain ?? '',
      attribute: Object.entries(attrs).map(([k, v]) => attribute(k, v)),
    });
    return outs.map((name) => ({ name }));
  }

  /** An op from onnxruntime's com.microsoft contrib domain (fused kernels such as MultiHeadAttention). */
  msOp(opType: string, inputs: (Value | null)[], attrs: Record<string, AttrValue> = {}): Value {
    return this.op(opType, inputs, attrs, MS_DOMAIN);
  }

  // ---- Elementwise and shape helpers ------------------------------------------------------------

  add(a: Value, b: Value): Value {
    return this.op('Add', [a, b]);
  }
  sub(a: Value, b: Value): Value {
    return this.op('Sub', [a, b]);
  }
  mul(a: Value, b: Value): Value {
    return this.op('Mul', [a, b]);
  }
  div(a: Value, b: Value): Value {
    return this.op('Div', [a, b]);
  }
  scale(a: Value, s: number): Value {
    return this.mul(a, this.constFloat(s));
  }
  matmul(a: Value, b: Value): Value {
    return this.op('MatMul', [a, b]);
  }
  sigmoid(x: Value): Value {
    return this.op('Sigmoid', [x]);
  }
  silu(x: Value): Value {
    return this.mul(x, this.sigmoid(x));
  }
  /** Exact (erf) GELU, as torch.nn.functional.gelu; onnxruntime fuses this pattern into one kernel. */
  gelu(x: Value): Value {
    const erf = this.op('Erf', [this.scale(x, Math.SQRT1_2)]);
    return this.mul(this.scale(x, 0.5), this.add(erf, this.constFloat(1)));
  }
  /** CLIP's quick_gelu: x * sigmoid(1.702 x). */
  quickGelu(x: Value): Value {
    return this.mul(x, this.sigmoid(this.scale(x, 1.702)));
  }
  softmax(x: Value, axis = -1): Value {
    return this.op('Softmax', [x], { axis });
  }
  reshape(x: Value, dims: number[] | Value): Value {
    const shape = Array.isArray(dims) ? this.constInt64(dims) : dims;
    return this.op('Reshape', [x, shape]);
  }
  transpose(x: Value, perm: number[]): Value {
    return this.op('Transpose', [x], { perm });
  }
  concat(values: Value[], axis: number): Value {
    return this.op('Concat', values, { axis });
  }
  shapeOf(x: Value): Value {
    return this.op('Shape', [x]);
  }
  /** Elements [start, end) of a 1-D int64 value such as a shape. */
  sliceDims(shape: Value, start: number, end: number): Value {
    return this.op('Slice', [shape, this.constInt64([start]), this.constInt64([end]), this.constInt64([0])]);
  }
  slice(x: Value, starts: number[], ends: number[], axes: number[], steps?: number[]): Value {
    const ins = [x, this.constInt64(starts), this.constInt64(ends), this.constInt64(axes)];
    if (steps) ins.push(this.constInt64(steps));
    return this.op('Slice', ins);
  }
  split(x: Value, axis: number, sizes: number[]): Value[] {
    return this.opN('Split', [x, this.constInt64(sizes)], sizes.length, { axis });
  }
  cast(x: Value, to: number): Value {
    return this.op('Cast', [x], { to });
  }
  /**
   * Circular padding of one axis (torch's padding_mode 'circular'): the last `before` elements are put in front
   * and the first `after` behind. Slice + Concat rather than Pad's 'wrap' mode: that needs opset 19, and the
   * graphs are opset 17 (raising it would change every untiled graph too).
   */
  wrapPad(x: Value, axis: number, before: number, after: number): Value {
    const parts: Value[] = [];
    if (before > 0) parts.push(this.slice(x, [-before], [Number.MAX_SAFE_INTEGER], [axis]));
    parts.push(x);
    if (after > 0) parts.push(this.slice(x, [0], [after], [axis]));
    return parts.length === 1 ? x : this.concat(parts, axis);
  }

  // ---- Layers -----------------------------------------------------------------------------------

  /** y = x W^T + b for torch.nn.Linear weights [out, in]; the transpose is done once, at build time. */
  linear(x: Value, weight: Tensor, bias: Tensor | undefined, name: string): Value {
    const [out, inn] = weight.shape as [number, number];
    const wt = new Float32Array(out * inn);
    for (let o = 0; o < out; o++) for (let i = 0; i < inn; i++) wt[i * out + o] = weight.data[o * inn + i]!;
    let y = this.matmul(x, this.weight(`${name}.weight`, { shape: [inn, out], data: wt }));
    if (bias) y = this.add(y, this.weight(`${name}.bias`, bias));
    return y;
  }

  /**
   * Convolution with zero padding: `pad` on every side, or `pads` per side in ONNX order (begins then ends:
   * [top, left, bottom, right] for 2-D).
   */
  conv(x: Value, weight: Tensor, bias: Tensor | undefined, name: string, opts: { stride?: number; pad?: number; pads?: number[]; group?: number } = {}): Value {
    const k = weight.shape.slice(2);
    const pad = opts.pad ?? 0;
    const stride = opts.stride ?? 1;
    const ins: Value[] = [x, this.weight(`${name}.weight`, weight)];
    if (bias) ins.push(this.weight(`${name}.bias`, bias));
    return this.op('Conv', ins, {
      kernel_shape: k,
      pads: opts.pads ?? [...k.map(() => pad), ...k.map(() => pad)],
      strides: k.map(() => stride),
      group: opts.group ?? 1,
    });
  }

  layerNorm(x: Value, weight: Tensor, bias: Tensor, eps: number, name: string): Value {
    return this.op('LayerNormalization', [x, this.weight(`${name}.weight`, weight), this.weight(`${name}.bias`, bias)], {
      axis: -1,
      epsilon: float(eps),
    });
  }

  /** torch.nn.GroupNorm on NCHW (or NC...): InstanceNormalization over groups, then the per-channel affine. */
  groupNorm(x: Value, groups: number, weight: Tensor, bias: Tensor, eps: number, name: string): Value {
    const channels = weight.shape[0]!;
    const grouped = this.reshape(x, [0, groups, -1]);
    const ones = this.constFloat(new Array<number>(groups).fill(1));
    const zeros = this.constFloat(new Array<number>(groups).fill(0));
    const normed = this.op('InstanceNormalization', [grouped, ones, zeros], { epsilon: float(eps) });
    const restored = this.reshape(normed, this.shapeOf(x));
    const affineShape = [channels, 1, 1];
    const w = this.weight(`${name}.weight`, weight, affineShape);
    const b = this.weight(`${name}.bias`, bias, affineShape);
    return this.add(this.mul(restored, w), b);
  }

  /**
   * Multi-head scaled-dot-product attention. q: [batch, seq, heads*headDim]; k, v: [batch, kvSeq, heads*headDim];
   * returns [batch, seq, heads*headDim]. `bias` is added to the scores before softmax, broadcast against
   * [batch, heads, seq, kvSeq] (a causal mask is [1, 1, seq, seq]). kind 'contrib' (default) is onnxruntime's fused
   * com.microsoft MultiHeadAttention, which has CPU and GPU kernels and never materialises all heads' scores at
   * once on CPU; 'onnx' spells it out with MatMul/Softmax, for runtimes without the contrib op.
   */
  attention(q: Value, k: Value, v: Value, opts: AttentionOptions): Value {
    const scale = opts.scale ?? 1 / Math.sqrt(opts.headDim);
    if ((opts.kind ?? 'contrib') === 'contrib') {
      return this.msOp('MultiHeadAttention', [q, k, v, null, null, opts.bias ?? null], { num_heads: opts.heads, scale: float(scale) });
    }
    const split = (x: Value, perm: number[]) => this.transpose(this.reshape(x, [0, 0, opts.heads, opts.headDim]), perm);
    const qh = split(q, [0, 2, 1, 3]); // [b, h, s, d]
    const kt = split(k, [0, 2, 3, 1]); // [b, h, d, t]
    const vh = split(v, [0, 2, 1, 3]); // [b, h, t, d]
    const rows = (qPart: Value) => {
      let scores = this.scale(this.matmul(qPart, kt), scale);
      if (opts.bias) scores = this.add(scores, opts.bias);
      return this.matmul(this.softmax(scores, -1), vh); // [b, h, s, d]
    };
    // A bias is [.., seq, kvSeq] and would need slicing too; the biased callers (text encoders) have 77 tokens.
    const out = opts.bias ? rows(qh) : this.queryChunks(qh, 2, rows);
    return this.reshape(this.transpose(out, [0, 2, 1, 3]), [0, 0, opts.heads * opts.headDim]);
  }

  /**
   * Memory-bounded attention for the plain-ONNX kind: `rows(qPart)` (softmax(qPart K^T) V for some query rows)
   * applied to query slices along `axis` and concatenated. Up to CHUNK_THRESHOLD queries the first slice is all
   * of q and the rest are empty (the whole-matrix computation, unchanged); beyond it q is cut into
   * QUERY_SLICES equal slices, so the score matrix held at once is 1/QUERY_SLICES of the whole (SD1.5 at
   * 1024 px: 8 heads x 512 x 16384 fp32 = 268 MB instead of 8.6 GB). Each output row is computed exactly as in
   * the whole product. Sizes are dynamic, so the choice is made in the graph.
   */
  queryChunks(q: Value, axis: number, rows: (qPart: Value) => Value): Value {
    const seq = this.op('Slice', [this.shapeOf(q), this.constInt64([axis]), this.constInt64([axis + 1]), this.constInt64([0])]);
    const sliced = this.op('Div', [this.add(seq, this.constInt64([QUERY_SLICES - 1])), this.constInt64([QUERY_SLICES])]);
    const chunk = this.op('Where', [this.op('Greater', [seq, this.constInt64([CHUNK_THRESHOLD])]), sliced, seq]);
    const parts: Value[] = [];
    for (let i = 0; i < QUERY_SLICES; i++) {
      const start = i === 0 ? this.constInt64([0]) : this.mul(chunk, this.constInt64([i]));
      const part = this.op('Slice', [q, start, this.add(start, chunk), this.constInt64([axis])]);
      parts.push(rows(part));
    }
    return this.concat(parts, axis);
  }

  // ---- Serialisation ----------------------------------------------------------------------------

  /** Writes model.onnx (and closes weights.bin). Returns the model path. */
  finish(): string {
    if (this.weightsFd !== undefined) {
      closeSync(this.weightsFd);
      this.weightsFd = undefined;
    }
    const opsetImport = [{ domain: '', version: OPSET }];
    if (this.usesMsDomain) opsetImport.push({ domain: MS_DOMAIN, version: 1 });
    const bytes = encodeModel({
      irVersion: 8,
      producerName: 'kiln',
      producerVersion: '0.1',
      opsetImport,
      graph: { name: this.graphName, node: this.nodes, initializer: this.initializers, input: this.inputs, output: this.outputs },
    });
    const path = join(this.dir, 'model.onnx');
    writeFileSync(`${path}.tmp`, bytes);
    renameSync(`${path}.tmp`, path);
    return path;
  }
}

function valueInfo(name: string, elemType: number, shape: (number | string)[]): ValueInfoMsg {
  return {
    name,
    type: { tensorType: { elemType, shape: { dim: shape.map((d) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d })) } } },
  };
}

function attribute(name: string, v: AttrValue): AttributeMsg {
  if (typeof v === 'number') return { name, type: AttrType.INT, i: v };
  if (typeof v === 'string') return { name, type: AttrType.STRING, s: new TextEncoder().encode(v) };
  if (Array.isArray(v)) return { name, type: AttrType.INTS, ints: v };
  if ('float' in v) return { name, type: AttrType.FLOAT, f: v.float };
  if ('floats' in v) return { name, type: AttrType.FLOATS, floats: v.floats };
  return { name, type: AttrType.TENSOR, t: v.tensor };
}

/** float32 -> IEEE half bytes, round-to-nearest-even, as numpy/torch .half() do. */
export function toFloat16Bytes(src: Float32Array): Uint8Array {
  const out = new Uint16Array(src.length);
  for (let i = 0; i < src.length; i++) out[i] = f32ToF16Bits(src[i]!);
  return new Uint8Array(out.buffer);
}
