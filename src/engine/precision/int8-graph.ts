// Graph builders for int8 UNets on onnxruntime's CPU integer kernels (measured in bench/precision-micro.ts):
//  - Linear layers: com.microsoft DynamicQuantizeMatMul (activations quantised per run, per-tensor uint8; weights
//    int8 per output channel), 1.7-3.4x fp32 MatMul at SD1.5 shapes.
//  - Convolutions: DynamicQuantizeLinear on the input, QLinearConv with int8 per-output-channel weights, and an
//    output range calibrated once per model (QLinearConv must write uint8 with a fixed scale): 3.3-3.6x fp32 Conv.
//    The bias is added in float after dequantising, since its int32 form would need the input's run-time scale.
// Only the ResNet blocks' conv1/conv2 run in int8: their inputs are GroupNorm + SiLU outputs, whose range one
// per-tensor scale covers well. Convolutions fed by the raw residual stream (shortcuts over the concatenated skip
// connections, up/downsamplers, conv_in/conv_out) carry outliers that per-tensor uint8 loses: on the tiny SD1
// fixture the shortcuts alone moved the noise prediction by 16 % (docs/int8.md), so they stay fp32, as does
// every layer without a calibrated range.
import type { Tensor } from '../tensor.ts';
import { GraphBuilder, type Value } from '../onnx/graph.ts';
import { OnnxDType } from '../onnx/proto.ts';
import { quantizeRowsInt8, uint8Range } from './quantize-int8.ts';

/** Output range of each quantised convolution, by its weight prefix ("down_blocks.0.resnets.0.conv1"). */
export type ConvRanges = Record<string, [min: number, max: number]>;

/** Which layer kinds run in int8 ('all' by default; the others measure each kind's share of the error). */
export type Int8Layers = 'all' | 'linear' | 'conv';

const MIN_CHANNELS = 8;

interface ConvOpts {
  stride?: number;
  pad?: number;
  pads?: number[];
  group?: number;
}

/** A ResNet block's first or second convolution (diffusers names; the UNet builder uses them for every layout). */
const NORMALISED_INPUT_CONV = /(^|\.)conv[12]$/;

/** Whether a convolution is run in int8 (and so is calibrated). */
export function quantizableConv(weight: Tensor, opts: ConvOpts, name: string): boolean {
  const [out, inn] = weight.shape as [number, number];
  return NORMALISED_INPUT_CONV.test(name) && (opts.group ?? 1) === 1 && out >= MIN_CHANNELS && inn >= MIN_CHANNELS;
}

function bytes(a: ArrayBufferView): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

function convAttrs(weight: Tensor, opts: ConvOpts): Record<string, number[] | number> {
  const k = weight.shape.slice(2);
  const pad = opts.pad ?? 0;
  return { kernel_shape: k, pads: opts.pads ?? [...k.map(() => pad), ...k.map(() => pad)], strides: k.map(() => opts.stride ?? 1), group: 1 };
}

/** Adds a bias [C] to an NCHW value. */
function addChannelBias(b: GraphBuilder, y: Value, bias: Tensor, name: string): Value {
  return b.add(y, b.weight(`${name}.bias`, bias, [bias.shape[0]!, 1, 1]));
}

export class Int8GraphBuilder extends GraphBuilder {
  /** Layers built in int8 / left in fp32, for the log and tests. */
  readonly counts = { linear: 0, conv: 0, fp32Conv: 0 };

  constructor(
    graphName: string,
    dir: string,
    private readonly ranges: ConvRanges,
    private readonly layers: Int8Layers = 'all',
  ) {
    super(graphName, dir, 'fp32');
  }

  override linear(x: Value, weight: Tensor, bias: Tensor | undefined, name: string): Value {
    if (this.layers === 'conv') return super.linear(x, weight, bias, name);
    const [out, inn] = weight.shape as [number, number];
    const { q, scales } = quantizeRowsInt8(weight.data, out, inn);
    // DynamicQuantizeMatMul wants B as [K, N]: transpose the per-row quantised weight.
    const qt = new Int8Array(out * inn);
    for (let o = 0; o < out; o++) for (let i = 0; i < inn; i++) qt[i * out + o] = q[o * inn + i]!;
    this.counts.linear++;
    return this.msOp('DynamicQuantizeMatMul', [
      x,
      this.rawInitializer(`${name}.weight_q`, [inn, out], OnnxDType.INT8, bytes(qt)),
      this.rawInitializer(`${name}.weight_scale`, [out], OnnxDType.FLOAT, bytes(scales)),
      this.rawInitializer(`${name}.weight_zero`, [out], OnnxDType.INT8, new Uint8Array(out)),
      bias ? this.weight(`${name}.bias`, bias) : null,
    ]);
  }

  override conv(x: Value, weight: Tensor, bias: Tensor | undefined, name: string, opts: ConvOpts = {}): Value {
    const range = this.ranges[name];
    if (!range || !quantizableConv(weight, opts, name) || this.layers === 'linear') {
      this.counts.fp32Conv++;
      return super.conv(x, weight, bias, name, opts);
    }
    const out = weight.shape[0]!;
    const per = weight.data.length / out;
    const { q, scales } = quantizeRowsInt8(weight.data, out, per);
    const y = uint8Range(range[0], range[1]);
    const yScale = this.rawInitializer(`${name}.out_scale`, [], OnnxDType.FLOAT, bytes(Float32Array.of(y.scale)));
    const yZero = this.rawInitializer(`${name}.out_zero`, [], OnnxDType.UINT8, Uint8Array.of(y.zeroPoint));
    const [xq, xScale, xZero] = this.opN('DynamicQuantizeLinear', [x], 3);
    const yq = this.op(
      'QLinearConv',
      [
        xq!,
        xScale!,
        xZero!,
        this.rawInitializer(`${name}.weight_q`, weight.shape, OnnxDType.INT8, bytes(q)),
        this.rawInitializer(`${name}.weight_scale`, [out], OnnxDType.FLOAT, bytes(scales)),
        this.rawInitializer(`${name}.weight_zero`, [out], OnnxDType.INT8, new Uint8Array(out)),
        yScale,
        yZero,
      ],
      convAttrs(weight, opts),
    );
    this.counts.conv++;
    const yf = this.op('DequantizeLinear', [yq, yScale, yZero]);
    return bias ? addChannelBias(this, yf, bias, name) : yf;
  }
}

/** Graph-output names of a calibration graph's range outputs. */
const RANGE_PREFIX = 'range:';

/**
 * The fp32 graph with, for every quantisable convolution, its output's min and max (before the bias, as the int8
 * graph quantises it) as extra scalar outputs `range:<name>:min|max`.
 */
export class CalibratingGraphBuilder extends GraphBuilder {
  private readonly probes: { name: string; min: Value; max: Value }[] = [];

  constructor(graphName: string, dir: string) {
    super(graphName, dir, 'fp32');
  }

  override conv(x: Value, weight: Tensor, bias: Tensor | undefined, name: string, opts: ConvOpts = {}): Value {
    if (!quantizableConv(weight, opts, name)) return super.conv(x, weight, bias, name, opts);
    const y = super.conv(x, weight, undefined, name, opts);
    this.probes.push({ name, min: this.op('ReduceMin', [y], { keepdims: 0 }), max: this.op('ReduceMax', [y], { keepdims: 0 }) });
    return bias ? addChannelBias(this, y, bias, name) : y;
  }

  override finish(): string {
    this.probes.forEach((p, i) => {
      this.output(p.min, `${RANGE_PREFIX}${i}:${p.name}:min`, []);
      this.output(p.max, `${RANGE_PREFIX}${i}:${p.name}:max`, []);
    });
    return super.finish();
  }
}

/** Whether a session output is a calibration range (not one of the network's own outputs). */
export function isRangeOutput(name: string): boolean {
  return name.startsWith(RANGE_PREFIX);
}

/** Widens `ranges` by one calibration run's range outputs. */
export function recordRanges(ranges: ConvRanges, outputs: Record<string, { data: ArrayLike<number> }>): void {
  for (const [key, t] of Object.entries(outputs)) {
    if (!isRangeOutput(key)) continue;
    const m = /^range:\d+:(.*):(min|max)$/.exec(key);
    const value = t.data[0];
    if (!m || value === undefined || !Number.isFinite(value)) continue;
    const name = m[1]!;
    const r = ranges[name] ?? [0, 0];
    ranges[name] = r;
    if (m[2] === 'min') r[0] = Math.min(r[0], value);
    else r[1] = Math.max(r[1], value);
  }
}
