// The tiny Flux transformer from quantised and low-precision weights: GGUF files (Q8_0, Q4_0, Q4_K, F16, BF16)
// written from the fp32 fixture weights, bf16 and fp8 safetensors, and build-time --quantize q8/q4. Two checks
// each: (1) the quantised graph computes exactly what the fp32 graph computes on the dequantised weights (the
// fixture tolerance: the mapping onto MatMulNBits loses nothing), and (2) the cost of the quantisation against the
// fp32 reference output, bounded per type as derived in docs/quantization.md.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildFluxTransformer, FLUX_IO, fluxConfigFromWeights } from '../../../src/engine/nets/flux.ts';
import { getOrBuildGraph } from '../../../src/engine/onnx/cache.ts';
import { dequantizeNBits } from '../../../src/engine/onnx/matmul-nbits.ts';
import { createSession, runSession } from '../../../src/engine/runtime.ts';
import type { Tensor } from '../../../src/engine/tensor.ts';
import { f32ToBf16Bits } from '../../../src/engine/weights/float.ts';
import { F8_E4M3_VALUES } from '../../../src/engine/weights/fp8.ts';
import { fluxWeightsAsBfl, transformerTensors } from '../../../src/engine/weights/flux-keys.ts';
import { type QuantizeMode, withQuantize } from '../../../src/engine/weights/quantize.ts';
import { type TensorToWrite, writeSafetensors } from '../../../src/engine/weights/safetensors.ts';
import { openTensorFile } from '../../../src/engine/weights/tensor-file.ts';
import type { WeightSource } from '../../../src/engine/weights/types.ts';
import { type GgufWriteType, writeGguf } from '../weights/gguf-writer.ts';
import { assertClose, FIXTURES, ref } from './fixture-io.ts';

const ATOL = 1e-4,
  RTOL = 1e-3;
const AXES = [4, 6, 6];
const dir = mkdtempSync(join(tmpdir(), 'kiln-flux-quant-'));
test.after(() => rmSync(dir, { recursive: true, force: true }));

const fp32File = openTensorFile(join(FIXTURES, 'tiny-flux', 'flux-bfl.safetensors'));
const fp32 = fluxWeightsAsBfl(transformerTensors('fp32', [fp32File]));

let graphs = 0;
async function forward(w: WeightSource): Promise<Tensor> {
  const r = ref('flux/transformer');
  const config = fluxConfigFromWeights(w, AXES);
  const key = { network: 'flux-quantized', weightsIdentity: `case-${graphs++}`, precision: 'fp32' as const };
  const { modelPath } = getOrBuildGraph(dir, key, (b) => buildFluxTransformer(b, w, config, { textTokens: 10 }));
  const session = await createSession(modelPath, { device: 'cpu', intraOpThreads: 1 });
  const out = await runSession(session, {
    [FLUX_IO.img]: r.float('img'),
    [FLUX_IO.imgIds]: r.float('img_ids'),
    [FLUX_IO.txt]: r.float('txt'),
    [FLUX_IO.txtIds]: r.float('txt_ids'),
    [FLUX_IO.timesteps]: r.float('timestep'),
    [FLUX_IO.y]: r.float('y'),
    [FLUX_IO.guidance]: r.float('guidance'),
  });
  return out[FLUX_IO.output]!;
}

/** The same weights with every quantised Linear replaced by its dequantised float values. */
function dequantised(w: WeightSource): WeightSource {
  return {
    names: () => w.names(),
    has: (n) => w.has(n),
    shape: (n) => w.shape(n),
    dtype: (n) => w.dtype(n),
    get: (n) => {
      const q = w.nbits?.(n);
      return q ? { shape: [q.n, q.k], data: dequantizeNBits(q) } : w.get(n);
    },
  };
}

/** RMS(a - b) / RMS(b). */
function relRms(a: Tensor, b: Tensor): number {
  let num = 0,
    den = 0;
  for (let i = 0; i < b.data.length; i++) {
    num += (a.data[i]! - b.data[i]!) ** 2;
    den += b.data[i]! ** 2;
  }
  return Math.sqrt(num / den);
}

/** Relative RMS error of the weights, over every tensor the source changes (the per-type input to the bound). */
function weightError(w: WeightSource): { rel: number; quantised: number } {
  let num = 0,
    den = 0,
    quantised = 0;
  for (const n of fp32.names()) {
    const a = w.get(n).data;
    const q = w.nbits?.(n);
    const got = q ? dequantizeNBits(q) : a;
    const want = fp32.get(n).data;
    if (q) quantised++;
    for (let i = 0; i < want.length; i++) {
      num += (got[i]! - want[i]!) ** 2;
      den += want[i]! ** 2;
    }
  }
  return { rel: Math.sqrt(num / den), quantised };
}

function ggufOf(type: GgufWriteType): WeightSource {
  const file = join(dir, `flux-${type}.gguf`);
  const block = type === 'Q4_K' ? 256 : 32;
  const quantisable = (shape: number[]) => shape.length === 2 && shape[1]! % block === 0;
  writeGguf(
    file,
    fp32File.names().map((name) => {
      const shape = fp32File.entry(name).shape;
      const t: GgufWriteType = type.startsWith('Q') ? (quantisable(shape) ? type : 'F32') : type;
      return { name, shape, type: t, data: fp32File.readFloat32(name) };
    }),
    { 'general.architecture': 'flux' },
  );
  return fluxWeightsAsBfl(transformerTensors(file, [openTensorFile(file)]));
}

function safetensorsOf(dtype: 'BF16' | 'F8_E4M3'): WeightSource {
  const file = join(dir, `flux-${dtype}.safetensors`);
  const nearestE4m3 = (v: number) => {
    let best = 0;
    for (let c = 0; c < 256; c++) if (!Number.isNaN(F8_E4M3_VALUES[c]!) && Math.abs(F8_E4M3_VALUES[c]! - v) < Math.abs(F8_E4M3_VALUES[best]! - v)) best = c;
    return best;
  };
  const tensors: Record<string, TensorToWrite> = {};
  for (const name of fp32File.names()) {
    const x = fp32File.readFloat32(name);
    const bytes = dtype === 'BF16' ? new Uint8Array(Uint16Array.from(x, (v) => f32ToBf16Bits(v)).buffer) : Uint8Array.from(x, nearestE4m3);
    tensors[name] = { dtype, shape: fp32File.entry(name).shape, bytes };
  }
  writeSafetensors(file, tensors);
  return fluxWeightsAsBfl(transformerTensors(file, [openTensorFile(file)]));
}

const reference = () => ref('flux/transformer').float('output_bfl');

// Output bounds, relative RMS against the fp32 reference: K * (relative RMS weight error), K = 4 (docs/quantization.md).
const GAIN = 4;
/** Relative error of one int8 activation block (round to nearest of absmax/127 steps): at most 1/254 < 2^-7. */
const ACTIVATION_ERROR = 2 ** -7;

const cases: [string, () => WeightSource, number][] = [
  ['GGUF Q8_0', () => ggufOf('Q8_0'), 2],
  ['GGUF Q4_0', () => ggufOf('Q4_0'), 2],
  ['GGUF Q4_K', () => ggufOf('Q4_K'), 2],
  ['--quantize q8', () => withQuantize(fp32, { mode: 'q8' satisfies QuantizeMode }), 16],
  ['--quantize q4', () => withQuantize(fp32, { mode: 'q4' }), 16],
];
for (const [what, make, minQuantised] of cases) {
  test(`tiny Flux from ${what}: MatMulNBits equals fp32 on the dequantised weights, and the quantisation cost is bounded`, async (t) => {
    const w = make();
    const { rel, quantised } = weightError(w);
    assert.ok(quantised >= minQuantised, `${quantised} Linear weights quantised`);
    // accuracy_level 0 (fp32 activations): exactly the float graph on the dequantised weights.
    const exact = await forward(withQuantize(w, { accuracyLevel: 0 }));
    assertClose(exact, await forward(dequantised(w)), ATOL, RTOL, `${what} vs dequantised fp32`);
    const costExact = relRms(exact, reference());
    // The default (accuracy_level 4) adds int8 activations per block of 32: a relative error of up to 2^-8 each.
    const cost = relRms(await forward(w), reference());
    t.diagnostic(
      `${quantised} weights quantised; weight rel RMS error ${rel.toExponential(2)}; output rel RMS error ${costExact.toExponential(2)} (fp32 activations), ${cost.toExponential(2)} (int8 activations)`,
    );
    assert.ok(costExact <= GAIN * rel, `output error ${costExact} > ${GAIN} x weight error ${rel}`);
    assert.ok(cost <= GAIN * (rel + ACTIVATION_ERROR), `output error ${cost} > ${GAIN} x (weight error ${rel} + ${ACTIVATION_ERROR})`);
  });
}

for (const [what, make] of [
  ['GGUF F16', () => ggufOf('F16')],
  ['GGUF BF16', () => ggufOf('BF16')],
  ['bf16 safetensors', () => safetensorsOf('BF16')],
  ['fp8 e4m3fn safetensors', () => safetensorsOf('F8_E4M3')],
] as const) {
  test(`tiny Flux from ${what} (widened to fp32 on load) stays within its rounding bound of the reference`, async (t) => {
    const w = make();
    const { rel } = weightError(w);
    const cost = relRms(await forward(w), reference());
    t.diagnostic(`weight rel RMS error ${rel.toExponential(2)}; output rel RMS error ${cost.toExponential(2)}`);
    assert.ok(cost <= GAIN * rel + 1e-5, `output error ${cost} > ${GAIN} x weight error ${rel}`);
  });
}
