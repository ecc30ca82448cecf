import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { ClipTokenizer, encodePromptIds } from '../../../src/engine/prompt/tokenizer.ts';
import { promptToChunks, alignChunkCounts, emptyChunk } from '../../../src/engine/prompt/chunks.ts';

const sd1 = await ClipTokenizer.fromDir('test/fixtures/tiny-sd1/tokenizer');
const sd2 = await ClipTokenizer.fromDir('test/fixtures/tiny-sd2/tokenizer');
const BOS = 998;
const EOS = 999;
const longPrompt = (JSON.parse(readFileSync('test/fixtures/refs/sd1/tokenizer.json', 'utf8')).cases as { prompt: string }[]).find(
  (c) => c.prompt.length > 300,
)!.prompt;

/** bos + body + eos, then `fill` up to 77. */
function row(body: number[], fill = EOS): number[] {
  const r = [BOS, ...body, EOS];
  while (r.length < 77) r.push(fill);
  return r;
}

test('a short prompt is one chunk with the ids of diffusers encode_prompt and weights 1', () => {
  for (const tok of [sd1, sd2]) {
    const prompt = 'a photo of an astronaut riding a horse on mars';
    const c = promptToChunks(tok, prompt);
    assert.deepEqual(c.ids, [encodePromptIds(tok, prompt)]);
    assert.deepEqual(c.weights, [new Array(77).fill(1)]);
    assert.equal(c.tokenCount, tok.encode(prompt).length);
  }
});

test('the empty prompt gives one chunk: bos, eos, then the pad id', () => {
  assert.deepEqual(promptToChunks(sd1, '').ids, [row([])]);
  const c2 = promptToChunks(sd2, '');
  assert.deepEqual(c2.ids, [row([], 0)]);
  assert.deepEqual(c2.ids[0], emptyChunk(c2.special).ids);
  assert.equal(c2.tokenCount, 0);
});

test('a 127-token prompt splits into 2 chunks of 77, backtracking to the last comma within 20 tokens', () => {
  const tokens = sd1.encode(longPrompt);
  assert.equal(tokens.length, 127);
  const comma = sd1.comma!;
  // The prompt repeats a 15-token phrase followed by a comma; the last comma inside the first 75 tokens is at 63.
  const lastComma = tokens.slice(0, 75).lastIndexOf(comma);
  assert.equal(lastComma, 63);
  const c = promptToChunks(sd1, longPrompt);
  assert.equal(c.ids.length, 2);
  for (const r of [...c.ids, ...c.weights]) assert.equal(r.length, 77);
  assert.deepEqual(c.ids[0], row(tokens.slice(0, lastComma + 1)));
  assert.deepEqual(c.ids[1], row(tokens.slice(lastComma + 1)));
  assert.equal(c.tokenCount, 75 + (127 - 64));

  const noBacktrack = promptToChunks(sd1, longPrompt, { commaPaddingBacktrack: 0 });
  assert.deepEqual(noBacktrack.ids, [row(tokens.slice(0, 75)), row(tokens.slice(75))]);
  // With a window of 10 the comma 12 tokens back is too far, so the chunk is cut at exactly 75 tokens.
  assert.deepEqual(promptToChunks(sd1, longPrompt, { commaPaddingBacktrack: 10 }).ids, noBacktrack.ids);
});

test('BREAK closes the current chunk and pads it', () => {
  const c = promptToChunks(sd1, 'a castle BREAK a horse');
  assert.deepEqual(c.ids, [row(sd1.encode('a castle')), row(sd1.encode('a horse'))]);
  assert.equal(c.tokenCount, 75 + sd1.encode('a horse').length);
  // SD2-style tokenizers pad with 0 after the eos, in every chunk.
  const c2 = promptToChunks(sd2, 'a castle BREAK a horse');
  assert.deepEqual(c2.ids, [row(sd2.encode('a castle'), 0), row(sd2.encode('a horse'), 0)]);
  // A trailing BREAK leaves no extra empty chunk, a leading one leaves an empty first chunk.
  assert.equal(promptToChunks(sd1, 'a castle BREAK').ids.length, 1);
  assert.deepEqual(promptToChunks(sd1, 'BREAK a castle').ids, [row([]), row(sd1.encode('a castle'))]);
});

test('weights line up with the tokens of each weighted piece', () => {
  const c = promptToChunks(sd1, 'a (castle:1.5) [on] hill');
  const pieces: [string, number][] = [
    ['a ', 1],
    ['castle', 1.5],
    [' ', 1],
    ['on', 1 / 1.1],
    [' hill', 1],
  ];
  const ids: number[] = [];
  const weights: number[] = [];
  for (const [text, w] of pieces)
    for (const id of sd1.encode(text)) {
      ids.push(id);
      weights.push(w);
    }
  assert.deepEqual(c.ids, [row(ids)]);
  const expectedWeights = [1, ...weights];
  while (expectedWeights.length < 77) expectedWeights.push(1);
  assert.deepEqual(c.weights, [expectedWeights]);
});

test('emphasis "none" keeps brackets and BREAK as literal text', () => {
  const prompt = '(castle:1.5) BREAK hill';
  const c = promptToChunks(sd1, prompt, { emphasis: 'none' });
  assert.deepEqual(c.ids, [row(sd1.encode(prompt))]);
  assert.ok(c.weights[0]!.every((w) => w === 1));
  assert.equal(promptToChunks(sd1, prompt, { emphasis: 'ignore' }).ids.length, 2);
});

test('a typed <|endoftext|> makes A1111 pad the rest of its chunk when pad differs from eos', () => {
  const c = promptToChunks(sd2, 'a <|endoftext|> castle');
  const [a] = sd2.encode('a');
  assert.deepEqual(c.ids, [[BOS, a, EOS, ...new Array(74).fill(0)]]);
  // With pad == eos (SD1) the typed token and the words after it stay.
  assert.deepEqual(promptToChunks(sd1, 'a <|endoftext|> castle').ids, [row(sd1.encode('a <|endoftext|> castle'))]);
});

test('alignChunkCounts pads the shorter prompt with empty chunks', () => {
  const long = promptToChunks(sd2, 'a castle BREAK a horse BREAK a hill');
  const short = promptToChunks(sd2, 'lowres');
  const [a, b] = alignChunkCounts(long, short);
  assert.equal(a, long);
  assert.equal(b.ids.length, 3);
  assert.deepEqual(b.ids[0], short.ids[0]);
  assert.deepEqual(b.ids.slice(1), [row([], 0), row([], 0)]);
  assert.deepEqual(b.weights.slice(1), [new Array(77).fill(1), new Array(77).fill(1)]);
  const [c, d] = alignChunkCounts(short, long);
  assert.equal(c.ids.length, 3);
  assert.equal(d, long);
  assert.equal(short.ids.length, 1, 'inputs are not modified');
  assert.throws(() => alignChunkCounts(promptToChunks(sd1, 'a'), short), /different tokenizers/);
});
