import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildT5Encoder, relativePositionBucket, T5_IO, type T5EncoderConfig, type T5EncoderOptions } from '../../../src/engine/nets/t5.ts';
import { getOrBuildGraph } from '../../../src/engine/onnx/cache.ts';
import { createSession, runSession, type Feed } from '../../../src/engine/runtime.ts';
import { openTensorFile } from '../../../src/engine/weights/tensor-file.ts';
import { storedWeights } from '../../../src/engine/weights/sources.ts';
import { assertClose, FIXTURES, ref } from './fixture-io.ts';

// fixtures README: "T5, Flux and SD3 transformers: atol 1e-4, rtol 1e-3".
const ATOL = 1e-4,
  RTOL = 1e-3;
const dir = join(FIXTURES, 'tiny-flux', 'text_encoder_2');
const config = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')) as T5EncoderConfig;
const weights = storedWeights('t5', [openTensorFile(join(dir, 'model.safetensors'))]);
const cacheDir = mkdtempSync(join(tmpdir(), 'kiln-t5-'));
test.after(() => rmSync(cacheDir, { recursive: true, force: true }));

async function encode(opts: T5EncoderOptions, feeds: Record<string, Feed>) {
  const key = { network: 't5', weightsIdentity: 'tiny-flux', precision: 'fp32' as const, options: { ...opts } };
  const { modelPath } = getOrBuildGraph(cacheDir, key, (b) => buildT5Encoder(b, weights, config, opts));
  return runSession(await createSession(modelPath, { device: 'cpu' }), feeds);
}

for (const attention of ['contrib', 'onnx'] as const) {
  test(`tiny T5 encoder without a mask (as Flux/SD3 call it), ${attention} attention: every hidden state`, async (t) => {
    const r = ref('flux/t5_encoder');
    const out = await encode({ sequenceLength: 10, allHiddenStates: true, attention }, { [T5_IO.inputIds]: r.int64('input_ids') });
    for (let i = 0; i <= 2; i++) assertClose(out[T5_IO.hiddenState(i)]!, r.float(`hidden_states.${i}`), ATOL, RTOL, `hidden_states.${i}`);
    t.diagnostic(`max abs diff ${assertClose(out[T5_IO.hidden]!, r.float('last_hidden_state'), ATOL, RTOL, 'last_hidden_state')}`);
  });
}

test('tiny T5 encoder with an attention mask keeps padding out', async () => {
  const r = ref('flux/t5_encoder');
  const out = await encode(
    { sequenceLength: 10, attentionMask: true },
    { [T5_IO.inputIds]: r.int64('input_ids'), [T5_IO.attentionMask]: r.int64('attention_mask') },
  );
  // Rows of padding tokens differ from the masked reference only through what they attend; compare real tokens.
  const mask = r.int64('attention_mask').int64;
  const real = mask.reduce((a, m) => a + Number(m), 0);
  const d = config.d_model;
  const take = (x: Float32Array) => ({ shape: [real, d], data: x.subarray(0, real * d) });
  assertClose(take(out[T5_IO.hidden]!.data), take(r.float('last_hidden_state_masked').data), ATOL, RTOL, 'masked, real tokens');
});

test('relative position buckets follow transformers (bidirectional, 32 buckets, max distance 128)', () => {
  const bucket = (rel: number) => relativePositionBucket(rel, 32, 128);
  // Exact region: |rel| < 8 maps to itself (+16 for keys after the query); then log-spaced up to bucket 15.
  assert.deepEqual([0, -1, -7, 1, 7].map(bucket), [0, 1, 7, 17, 23]);
  assert.deepEqual([-8, -11, -12, -16, -32, -64, -127, -128, -1000].map(bucket), [8, 8, 9, 10, 12, 14, 15, 15, 15]);
  assert.equal(bucket(16), 26);
  assert.equal(bucket(1000), 31);
});
