// Seamless tiling at the graph level: a convolution with wrapped padding equals circular padding + convolution
// computed by hand; the nearest-2x upsamplers (2x2 phases and the literal resize) wrap the same way; the plan's
// tiling fold names exactly the convolutions the tiled graphs wrap; untiled graph keys are what they were.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SD15, SDXL } from '../../../bench/specs.ts';
import type { Tiling } from '../../../src/engine/api.ts';
import { conv, NetWeights, upsample } from '../../../src/engine/nets/blocks.ts';
import { planWrappedConvs } from '../../../src/engine/nets/plan.ts';
import { buildUnet, unetGraphOptions, unetParameterShapes, unetPlan } from '../../../src/engine/nets/unet.ts';
import {
  buildVaeDecoder,
  buildVaeEncoder,
  vaeDecoderGraphOptions,
  vaeDecoderPlan,
  vaeEncoderGraphOptions,
  vaeEncoderPlan,
  vaeParameterShapes,
  type VaeNetConfig,
} from '../../../src/engine/nets/vae.ts';
import { getOrBuildGraph, graphKeyHash } from '../../../src/engine/onnx/cache.ts';
import { GraphBuilder, type AttrValue, type Value } from '../../../src/engine/onnx/graph.ts';
import { createSession, runSession } from '../../../src/engine/runtime.ts';
import type { Tensor } from '../../../src/engine/tensor.ts';
import type { WeightSource } from '../../../src/engine/weights/types.ts';
import { fixtureModel, shapesOnly } from './fixture-io.ts';

function seededRandom(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32 - 0.5;
  };
}
const randTensor = (shape: number[], rnd: () => number): Tensor => ({ shape, data: Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, rnd) });

function weightsOf(table: Record<string, Tensor>): WeightSource {
  return {
    names: () => Object.keys(table),
    has: (n) => n in table,
    shape: (n) => table[n]!.shape,
    dtype: () => 'F32',
    get: (n) => table[n]!,
  };
}

/** Index into [H, W] with circular wrap on the wrapped axes; undefined = a zero-padding position. */
function at(y: number, x: number, H: number, W: number, tiling: Tiling | undefined): [number, number] | undefined {
  const wy = tiling === 'xy' || tiling === 'y';
  const wx = tiling === 'xy' || tiling === 'x';
  if (y < 0 || y >= H) {
    if (!wy) return undefined;
    y = (y + H) % H;
  }
  if (x < 0 || x >= W) {
    if (!wx) return undefined;
    x = (x + W) % W;
  }
  return [y, x];
}

/** Reference: a 3x3 convolution with padding 1 (circular on the wrapped axes, zeros elsewhere), by hand in float64. */
function referenceConv(x: Tensor, w: Tensor, bias: Tensor, stride: number, tiling: Tiling | undefined): { shape: number[]; data: Float64Array } {
  const [N, C, H, W] = x.shape as [number, number, number, number];
  const O = w.shape[0]!;
  const Ho = Math.floor((H + 2 - 3) / stride) + 1;
  const Wo = Math.floor((W + 2 - 3) / stride) + 1;
  const out = new Float64Array(N * O * Ho * Wo);
  for (let n = 0; n < N; n++)
    for (let o = 0; o < O; o++)
      for (let i = 0; i < Ho; i++)
        for (let j = 0; j < Wo; j++) {
          let s = bias.data[o]!;
          for (let c = 0; c < C; c++)
            for (let ky = 0; ky < 3; ky++)
              for (let kx = 0; kx < 3; kx++) {
                const p = at(i * stride + ky - 1, j * stride + kx - 1, H, W, tiling);
                if (p) s += x.data[((n * C + c) * H + p[0]) * W + p[1]]! * w.data[((o * C + c) * 3 + ky) * 3 + kx]!;
              }
          out[((n * O + o) * Ho + i) * Wo + j] = s;
        }
  return { shape: [N, O, Ho, Wo], data: out };
}

function nearest2x(x: Tensor): Tensor {
  const [N, C, H, W] = x.shape as [number, number, number, number];
  const data = new Float32Array(N * C * 4 * H * W);
  for (let nc = 0; nc < N * C; nc++)
    for (let y = 0; y < 2 * H; y++) for (let xx = 0; xx < 2 * W; xx++) data[(nc * 2 * H + y) * 2 * W + xx] = x.data[(nc * H + (y >> 1)) * W + (xx >> 1)]!;
  return { shape: [N, C, 2 * H, 2 * W], data };
}

async function runGraph(build: (b: GraphBuilder, x: Value) => Value, x: Tensor): Promise<Tensor> {
  const cache = mkdtempSync(join(tmpdir(), 'kiln-tiling-'));
  try {
    const { modelPath } = getOrBuildGraph(cache, { network: 'toy', weightsIdentity: 'toy', precision: 'fp32' }, (b) => {
      b.output(build(b, b.input('x', ['batch', x.shape[1]!, 'h', 'w'])), 'y', ['batch', 'c', 'oh', 'ow']);
    });
    const session = await createSession(modelPath, { device: 'cpu' });
    const { y } = await runSession(session, { x });
    await session.release();
    return y!;
  } finally {
    rmSync(cache, { recursive: true, force: true });
  }
}

function assertClose(actual: Tensor, expected: { shape: number[]; data: ArrayLike<number> }, what: string): void {
  assert.deepEqual(actual.shape, expected.shape, `${what}: shape`);
  let worst = 0;
  for (let i = 0; i < expected.data.length; i++) worst = Math.max(worst, Math.abs(actual.data[i]! - expected.data[i]!));
  assert.ok(worst < 1e-4, `${what}: max difference ${worst}`);
}

const TILINGS = [undefined, 'xy', 'x', 'y'] as const;

test('a 3x3 convolution with wrapped padding equals circular padding + convolution by hand (both axes, x only, y only; stride 1 and 2)', async () => {
  const rnd = seededRandom(7);
  const x = randTensor([2, 3, 5, 6], rnd);
  const w = new NetWeights(weightsOf({ 'c.weight': randTensor([4, 3, 3, 3], rnd), 'c.bias': randTensor([4], rnd) }), 'test');
  for (const tiling of TILINGS) {
    for (const stride of [1, 2]) {
      const y = await runGraph((b, v) => conv(b, w, 'c', v, { pad: 1, stride, tiling }), x);
      assertClose(y, referenceConv(x, w.param('c.weight'), w.param('c.bias'), stride, tiling), `tiling ${tiling ?? 'none'}, stride ${stride}`);
    }
  }
  // The wrap really wraps: the tiled result differs from the zero-padded one at the borders.
  const plain = await runGraph((b, v) => conv(b, w, 'c', v, { pad: 1 }), x);
  const tiled = await runGraph((b, v) => conv(b, w, 'c', v, { pad: 1, tiling: 'xy' }), x);
  assert.notDeepEqual(plain.data, tiled.data);
});

test('nearest-2x upsample + 3x3 conv wraps the same way as 2x2 phases and as the literal resize', async () => {
  const rnd = seededRandom(11);
  const x = randTensor([1, 3, 4, 5], rnd);
  const weight = randTensor([3, 3, 3, 3], rnd);
  const bias = randTensor([3], rnd);
  const w = new NetWeights(weightsOf({ 'up.conv.weight': weight, 'up.conv.bias': bias }), 'test');
  for (const tiling of TILINGS) {
    const expected = referenceConv(nearest2x(x), weight, bias, 1, tiling);
    for (const kind of ['phases', 'resize'] as const) {
      const y = await runGraph((b, v) => upsample(b, w, 'up', v, kind, null, tiling), x);
      assertClose(y, expected, `${kind}, tiling ${tiling ?? 'none'}`);
    }
  }
});

/** A builder that writes no weights and records, per Conv node, whether its input comes from a wrap. */
class WrapCountingBuilder extends GraphBuilder {
  private readonly producer = new Map<string, string>();
  readonly wrapped = new Set<string>();
  readonly convs = new Set<string>();
  override weight(name: string): Value {
    return { name };
  }
  override linear(x: Value, _weight: Tensor, bias: Tensor | undefined, name: string): Value {
    const y = this.matmul(x, this.weight(`${name}.weight`));
    return bias ? this.add(y, this.weight(`${name}.bias`)) : y;
  }
  override opN(opType: string, inputs: (Value | null)[], outputs: number, attrs: Record<string, AttrValue> = {}, domain?: string): Value[] {
    const outs = super.opN(opType, inputs, outputs, attrs, domain);
    // A wrap is a Concat of Slices of its input (a skip connection's Concat is not).
    const wrap = opType === 'Concat' && inputs.some((v) => v && this.producer.get(v.name) === 'Slice');
    for (const o of outs) this.producer.set(o.name, wrap ? 'wrap' : opType);
    if (opType === 'Conv') {
      // One weight per convolution; an upsampler's four phase kernels are one convolution of the network.
      const name = inputs[1]!.name.replace(/(\.phase\d\d)?\.weight$/, '');
      this.convs.add(name);
      if (this.producer.get(inputs[0]!.name) === 'wrap') this.wrapped.add(name);
    }
    return outs;
  }
}

function wrappedIn(build: (b: WrapCountingBuilder) => void): { wrapped: string[]; convs: number } {
  const dir = mkdtempSync(join(tmpdir(), 'kiln-tiling-count-'));
  try {
    const b = new WrapCountingBuilder('g', dir);
    build(b);
    return { wrapped: [...b.wrapped].sort(), convs: b.convs.size };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Switched convolutions per network: [UNet, VAE encoder, VAE decoder], and all convolutions of each. */
const COUNTS = {
  'tiny-sd1': { wrapped: [28, 10, 15], convs: [35, 13, 17] },
  sd15: { wrapped: [52, 22, 33], convs: [66, 28, 36] },
  sdxl: { wrapped: [40, 22, 33], convs: [51, 28, 36] },
};

for (const [name, load] of [
  [
    'tiny-sd1',
    async () => fixtureModel('tiny-sd1').then((m) => ({ unet: m.unetConfig as unknown as Record<string, unknown>, vae: m.vaeConfig as VaeNetConfig })),
  ],
  ['sd15', async () => SD15],
  ['sdxl', async () => SDXL],
] as const) {
  test(`${name}: the tiled graphs wrap exactly the convolutions the plan's tiling fold names, and no others`, async () => {
    const { unet, vae } = await load();
    const counts: number[][] = [[], []];
    for (const tiling of ['xy', 'x', 'y'] as const) {
      const u = wrappedIn((b) => buildUnet(b, shapesOnly(unetParameterShapes(unet)), unet, { tiling }));
      const planned = unetPlan(unet);
      assert.deepEqual(u.wrapped, planWrappedConvs(planned.body).sort(), `UNet (${tiling})`);
      const enc = wrappedIn((b) => buildVaeEncoder(b, shapesOnly(vaeParameterShapes(vae)), vae, { tiling }));
      assert.deepEqual(enc.wrapped, planWrappedConvs(vaeEncoderPlan(vae)).sort(), `VAE encoder (${tiling})`);
      const dec = wrappedIn((b) => buildVaeDecoder(b, shapesOnly(vaeParameterShapes(vae)), vae, { tiling }));
      assert.deepEqual(dec.wrapped, planWrappedConvs(vaeDecoderPlan(vae)).sort(), `VAE decoder (${tiling})`);
      counts[0] = [u.wrapped.length, enc.wrapped.length, dec.wrapped.length];
      counts[1] = [u.convs, enc.convs, dec.convs];
      assert.ok(!enc.wrapped.some((n) => n.includes('downsamplers')), 'the encoder downsamplers keep their zero right/bottom pad');
      assert.ok(
        ![...u.wrapped, ...enc.wrapped, ...dec.wrapped].some((n) => /conv_shortcut|quant_conv|proj_in|proj_out/.test(n)),
        '1x1 convolutions are unchanged',
      );
    }
    assert.deepEqual({ wrapped: counts[0], convs: counts[1] }, COUNTS[name]);
    const untiled = wrappedIn((b) => buildUnet(b, shapesOnly(unetParameterShapes(unet)), unet));
    assert.equal(untiled.wrapped.length, 0, 'no wrap without a tiling');
  });
}

test('graph cache keys: untiled options are what they were before tiling; each tiling is a variant of its own', () => {
  assert.deepEqual(unetGraphOptions({}), { attention: 'contrib', timeIds: 6 });
  assert.deepEqual(unetGraphOptions({ timeIds: 5, tiling: undefined }), { attention: 'contrib', timeIds: 5 });
  assert.deepEqual(vaeDecoderGraphOptions({ scalingFactor: 0.18215 }), { attention: 'contrib', scalingFactor: 0.18215, upsample: 'phases' });
  assert.deepEqual(vaeEncoderGraphOptions({}), { attention: 'contrib' });
  assert.deepEqual(unetGraphOptions({ tiling: 'x' }), { attention: 'contrib', timeIds: 6, tiling: 'x' });
  assert.deepEqual(vaeEncoderGraphOptions({ tiling: 'xy' }), { attention: 'contrib', tiling: 'xy' });
  const hashes = new Set(
    TILINGS.flatMap((tiling) => [
      graphKeyHash({ network: 'unet', weightsIdentity: 'w', precision: 'fp32', options: unetGraphOptions({ tiling }) }),
      graphKeyHash({ network: 'vae-decoder', weightsIdentity: 'w', precision: 'fp32', options: vaeDecoderGraphOptions({ tiling }) }),
      graphKeyHash({ network: 'vae-encoder', weightsIdentity: 'w', precision: 'fp32', options: vaeEncoderGraphOptions({ tiling }) }),
    ]),
  );
  assert.equal(hashes.size, 12);
});
