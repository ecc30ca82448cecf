import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { ClipTokenizer, basicTokenize, encodePromptIds } from '../../../src/engine/prompt/tokenizer.ts';
import { readInt64Tensor } from './safetensors-ids.ts';

const FIXTURES = 'test/fixtures';

interface TokenizerCase {
  prompt: string;
  input_ids: number[];
  untruncated_ids: number[];
  tokens: string[];
  truncated: boolean;
}
const reference = JSON.parse(readFileSync(`${FIXTURES}/refs/sd1/tokenizer.json`, 'utf8')) as { cases: TokenizerCase[] };

test('sd1 tokenizer reproduces every transformers reference case exactly', async () => {
  const tok = await ClipTokenizer.fromDir(`${FIXTURES}/tiny-sd1/tokenizer`);
  assert.equal(reference.cases.length, 16);
  for (const c of reference.cases) {
    const ids = tok.encode(c.prompt);
    assert.deepEqual([tok.bos, ...ids, tok.eos], c.untruncated_ids, `untruncated ids of ${JSON.stringify(c.prompt)}`);
    assert.deepEqual(tok.tokenStrings(c.untruncated_ids), c.tokens, `tokens of ${JSON.stringify(c.prompt)}`);
    assert.deepEqual(encodePromptIds(tok, c.prompt), c.input_ids, `encode_prompt ids of ${JSON.stringify(c.prompt)}`);
  }
  assert.ok(
    reference.cases.some((c) => c.truncated),
    'the references include a prompt longer than 75 tokens',
  );
});

test('special ids come from the tokenizer config: sd1 pads with <|endoftext|>, sd2 and sdxl tokenizer_2 with "!"', async () => {
  const sd1 = await ClipTokenizer.fromDir(`${FIXTURES}/tiny-sd1/tokenizer`);
  assert.deepEqual([sd1.bos, sd1.eos, sd1.pad, sd1.unk], [998, 999, 999, 999]);
  for (const dir of ['tiny-sd2/tokenizer', 'tiny-sdxl/tokenizer_2']) {
    const tok = await ClipTokenizer.fromDir(`${FIXTURES}/${dir}`);
    assert.deepEqual([tok.bos, tok.eos, tok.pad], [998, 999, 0], dir);
  }
  const xl1 = await ClipTokenizer.fromDir(`${FIXTURES}/tiny-sdxl/tokenizer`);
  assert.equal(xl1.pad, 999);
});

test('encodePromptIds matches the ids stored with the sd2 and sdxl text-encoder references', async () => {
  const sd2 = await ClipTokenizer.fromDir(`${FIXTURES}/tiny-sd2/tokenizer`);
  const sd2Ids = readInt64Tensor(`${FIXTURES}/refs/sd2/text_encoder.safetensors`, 'input_ids');
  const sd2Prompts = JSON.parse(readFileSync(`${FIXTURES}/refs/sd2/text_encoder.json`, 'utf8')).prompts as string[];
  sd2Prompts.forEach((p, i) => assert.deepEqual(encodePromptIds(sd2, p), sd2Ids.slice(i * 77, (i + 1) * 77), `sd2 ${JSON.stringify(p)}`));

  const xlMeta = JSON.parse(readFileSync(`${FIXTURES}/refs/sdxl/text_encoders.json`, 'utf8')) as { prompt: string };
  const xl1 = await ClipTokenizer.fromDir(`${FIXTURES}/tiny-sdxl/tokenizer`);
  const xl2 = await ClipTokenizer.fromDir(`${FIXTURES}/tiny-sdxl/tokenizer_2`);
  assert.deepEqual(encodePromptIds(xl1, xlMeta.prompt), readInt64Tensor(`${FIXTURES}/refs/sdxl/text_encoders.safetensors`, 'te1_input_ids'));
  assert.deepEqual(encodePromptIds(xl2, xlMeta.prompt), readInt64Tensor(`${FIXTURES}/refs/sdxl/text_encoders.safetensors`, 'te2_input_ids'));
});

test('a pad token of "!" is a no-split special token, as transformers registers it', async () => {
  const sd1 = await ClipTokenizer.fromDir(`${FIXTURES}/tiny-sd1/tokenizer`);
  const sd2 = await ClipTokenizer.fromDir(`${FIXTURES}/tiny-sd2/tokenizer`);
  assert.deepEqual(sd1.tokenStrings(sd1.encode('wow!')).at(-1), '!</w>');
  assert.deepEqual(sd2.tokenStrings(sd2.encode('wow!')).at(-1), '!');
  assert.deepEqual(sd1.encode('wow'), sd2.encode('wow'));
  // diffusers issue #4153 shows transformers giving six 0 ids for this prompt with SDXL's tokenizer_2.
  assert.deepEqual(sd2.encode('! !! !!!'), [0, 0, 0, 0, 0, 0]);
});

test('BasicTokenizer normalisation: controls dropped, accents stripped, punctuation and CJK split', () => {
  assert.deepEqual(basicTokenize('  Café\u0000 x\u200by \tNAÏVE, 東京!'), ['cafe', 'xy', 'naive', ',', '東', '京', '!']);
  assert.deepEqual(basicTokenize('a$b'), ['a', '$', 'b']);
  assert.deepEqual(basicTokenize(''), []);
});

test('repeated words give the same ids whether or not the BPE cache already holds them', async () => {
  const tok = await ClipTokenizer.fromDir(`${FIXTURES}/tiny-sd1/tokenizer`);
  const first = tok.encode('castle castle castle');
  assert.equal(first.length % 3, 0);
  const third = first.length / 3;
  assert.deepEqual(first.slice(0, third), first.slice(third, 2 * third));
  assert.deepEqual(tok.encode('castle'), first.slice(0, third));
});

test('fromDir names the missing file', async () => {
  await assert.rejects(ClipTokenizer.fromDir(`${FIXTURES}/no-such-tokenizer`), /vocab\.json/);
});
