// SDXL's pooled text embedding is taken at the end-of-text token found by position (transformers pools at
// (input_ids == eos_token_id).argmax()), also when a textual-inversion token, whose id is above EOS's, is in the
// prompt: pooling at argmax(input_ids) would take the embedding's token instead.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ModelSessions } from '../../../src/engine/pipelines/model-sessions.ts';
import { runSession } from '../../../src/engine/runtime.ts';
import { writeSafetensors } from '../../../src/engine/weights/safetensors.ts';

const work = mkdtempSync(join(tmpdir(), 'kiln-pooled-eos-'));
const sdxl = await ModelSessions.load({ path: 'test/fixtures/tiny-sdxl' }, { device: 'cpu', cacheDir: join(work, 'cache'), cacheOptimized: false });
after(async () => {
  await sdxl.release();
  rmSync(work, { recursive: true, force: true });
});

test('SDXL pooled output is taken at the EOS position when a textual-inversion token (id above EOS) is in the prompt', async () => {
  const widths = sdxl.model.textEncoders.map((te) => te.config.hidden_size);
  const vector = (n: number, seed: number) => new Uint8Array(Float32Array.from({ length: n }, (_, i) => Math.sin(seed + i)).buffer);
  const file = join(work, 'tiny-x.safetensors');
  writeSafetensors(file, {
    clip_l: { dtype: 'F32', shape: [1, widths[0]!], bytes: vector(widths[0]!, 1) },
    clip_g: { dtype: 'F32', shape: [1, widths[1]!], bytes: vector(widths[1]!, 2) },
  });
  const view = sdxl.withAdapters([], [{ name: 'tiny-x', path: file }]);
  const tokenizer = view.tokenizer(1);
  const vocab = sdxl.model.textEncoders[1]!.weights.shape('text_model.embeddings.token_embedding.weight')[0]!;
  const tiId = vocab; // the embedding's row, appended after the vocabulary
  assert.ok(tiId > tokenizer.eos, 'the embedding token has an id above EOS');
  const row = [tokenizer.bos, 5, tiId, 7, tokenizer.eos, ...new Array<number>(72).fill(tokenizer.pad)];
  const session = await view.textEncoder(1, { hidden: true, pooled: true });
  const { hidden, pooled } = await runSession(session, { input_ids: { int64: BigInt64Array.from(row.map(BigInt)), shape: [1, 77] } });
  const width = widths[1]!;
  const at = (pos: number) => hidden!.data.subarray(pos * width, (pos + 1) * width);
  assert.deepEqual(pooled!.data, at(4), 'pooled = final-normed hidden state at the EOS position');
  assert.notDeepEqual(pooled!.data, at(2));
});
