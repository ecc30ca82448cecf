import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { T5Tokenizer } from '../../../src/engine/prompt/t5-tokenizer.ts';

// A hand-made Unigram vocabulary in tokenizer.json's layout (T5's special tokens first, as in t5-v1_1): the best
// segmentations below can be checked by adding scores.
const VOCAB: [string, number][] = [
  ['<pad>', 0],
  ['</s>', 0],
  ['<unk>', 0],
  ['\u2581', -2],
  ['\u2581a', -1],
  ['\u2581cat', -1.5],
  ['\u2581ca', -2],
  ['c', -3],
  ['a', -3],
  ['t', -3],
  ['at', -2],
  ['s', -3],
  ['\u2581red', -1],
];
const ID = Object.fromEntries(VOCAB.map(([p], i) => [p, i]));
const dir = mkdtempSync(join(tmpdir(), 'kiln-t5-tok-'));
test.after(() => rmSync(dir, { recursive: true, force: true }));

function tokenizer(): T5Tokenizer {
  const file = join(dir, 'tokenizer.json');
  writeFileSync(file, JSON.stringify({ model: { type: 'Unigram', unk_id: 2, vocab: VOCAB } }));
  return T5Tokenizer.fromTokenizerJson(file);
}

test('Unigram Viterbi picks the highest-scoring segmentation per metaspace-prefixed word', () => {
  const t = tokenizer();
  assert.deepEqual(t.tokenize('a cat'), [ID['\u2581a'], ID['\u2581cat']]);
  // "▁cats": ▁cat + s = -4.5 beats ▁ca + t + s = -8 and ▁ca + ... ; extra whitespace collapses.
  assert.deepEqual(t.tokenize('  red   cats '), [ID['\u2581red'], ID['\u2581cat'], ID.s]);
  // "▁cat" whole (-1.5) beats ▁ca + t (-5) and ▁ + c + at (-7).
  assert.deepEqual(t.tokenize('cat'), [ID['\u2581cat']]);
});

test('unknown characters become one fused <unk>; </s>, truncation and padding to a fixed length', () => {
  const t = tokenizer();
  assert.deepEqual(t.tokenize('a \u72d7\u72d7'), [ID['\u2581a'], ID['\u2581'], 2]);
  assert.deepEqual(t.encode('a cat', 5), { ids: [ID['\u2581a'], ID['\u2581cat'], 1, 0, 0], length: 3, truncated: false });
  assert.deepEqual(t.encode('a cat red cat', 3), { ids: [ID['\u2581a'], ID['\u2581cat'], 1], length: 3, truncated: true });
});

test('a tokenizer.json that is not Unigram is refused by name', () => {
  const file = join(dir, 'bpe.json');
  writeFileSync(file, JSON.stringify({ model: { type: 'BPE', vocab: {} } }));
  assert.throws(() => T5Tokenizer.fromTokenizerJson(file), /not a Unigram/);
});
