// The T5 tokenizer from SentencePiece's spiece.model: a hand-built model with the same vocabulary as a tokenizer.json
// tokenizes identically, malformed files are refused by name, and a Flux folder whose tokenizer_2 holds only
// spiece.model loads and generates exactly as with tokenizer.json.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ModelFileError, type GenerateRequest } from '../../../src/engine/api.ts';
import { createEngine } from '../../../src/engine/engine.ts';
import { parseSentencePieceModel } from '../../../src/engine/prompt/sentencepiece-model.ts';
import { T5Tokenizer } from '../../../src/engine/prompt/t5-tokenizer.ts';
import type { Tensor } from '../../../src/engine/tensor.ts';
import { T5_WORDS, t5TokenizerJson, writeTinyFluxFolder } from '../tiny-flow-models.ts';
import { spieceModelBytes, writeSpieceModel } from './spiece-writer.ts';

const work = mkdtempSync(join(tmpdir(), 'kiln-spiece-'));
const engine = createEngine({ cacheDir: join(work, 'cache') });
after(async () => {
  await engine.close();
  rmSync(work, { recursive: true, force: true });
});

// The t5-tokenizer.test.ts vocabulary (hand-checked segmentations) and the tiny T5's 1000-piece one.
const SMALL: [string, number][] = [
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
const TINY = (t5TokenizerJson() as { model: { vocab: [string, number][] } }).model.vocab;

function both(vocab: [string, number][], name: string) {
  const json = join(work, `${name}.json`);
  writeFileSync(json, JSON.stringify({ model: { type: 'Unigram', unk_id: 2, vocab } }));
  return { fromJson: T5Tokenizer.fromTokenizerJson(json), fromModel: T5Tokenizer.fromFile(writeSpieceModel(join(work, `${name}.model`), vocab)) };
}

test('spiece.model parses: pieces, scores, types, T5 ids (bos -1), normalizer; unknown fields skipped', () => {
  const m = parseSentencePieceModel(spieceModelBytes(SMALL));
  assert.equal(m.pieces.length, SMALL.length);
  assert.deepEqual(m.pieces[5], { piece: '\u2581cat', score: -1.5, type: 1 });
  assert.deepEqual(
    m.pieces.slice(0, 3).map((p) => p.type),
    [3, 3, 2],
  );
  assert.deepEqual([m.modelType, m.unkId, m.bosId, m.eosId, m.padId], [1, 2, -1, 1, 0]);
  assert.deepEqual([m.normalizerName, m.addDummyPrefix, m.removeExtraWhitespaces], ['nmt_nfkc', true, true]);
});

test('a spiece.model tokenizes exactly as the tokenizer.json of the same vocabulary', () => {
  const small = both(SMALL, 'small');
  const tiny = both(TINY, 'tiny');
  const prompts = ['a cat', '  red   cats ', 'cat', 'a \u72d7\u72d7', 'a cat red cat', 'tacos at a cat', '', 'A CAT'];
  prompts.push(T5_WORDS.join(' '), 'a photo of a red fox sitting on the lake, 4k', 'xyzzy quux 12.5 dogs', 'ｆｕｌｌｗｉｄｔｈ fox');
  for (const p of prompts) {
    assert.deepEqual(small.fromModel.encode(p, 12), small.fromJson.encode(p, 12), `small: ${p}`);
    assert.deepEqual(tiny.fromModel.encode(p, 24), tiny.fromJson.encode(p, 24), `tiny: ${p}`);
  }
  assert.deepEqual(small.fromModel.tokenize('  red   cats '), [12, 5, 11]);
});

test('malformed or non-Unigram spiece.model files are refused by name', () => {
  const good = spieceModelBytes(SMALL);
  const cut = join(work, 'cut.model');
  writeFileSync(cut, good.subarray(0, good.length - 7));
  assert.throws(
    () => T5Tokenizer.fromFile(cut),
    (e: unknown) => e instanceof ModelFileError && /cannot read the SentencePiece model/.test(e.message),
  );
  const bpe = join(work, 'bpe.model');
  // A trainer spec appended later overrides the model type (protobuf's last-one-wins for scalars): BPE = 2.
  writeFileSync(bpe, Uint8Array.from([...good, 0x12, 0x02, 0x18, 0x02]));
  assert.throws(() => T5Tokenizer.fromFile(bpe), /not Unigram/);
  const noPad = join(work, 'nopad.model');
  // unk_id 2 in a one-piece model.
  writeFileSync(noPad, spieceModelBytes(SMALL.slice(0, 1)));
  assert.throws(() => T5Tokenizer.fromFile(noPad), /has no unknown piece \(id 2 of 1\)/);
});

test('a Flux folder whose tokenizer_2 has only spiece.model generates exactly as with tokenizer.json', async () => {
  const withJson = writeTinyFluxFolder(join(work, 'flux-json'));
  const withModel = writeTinyFluxFolder(join(work, 'flux-spiece'));
  rmSync(join(withModel, 'tokenizer_2', 'tokenizer.json'));
  writeSpieceModel(join(withModel, 'tokenizer_2', 'spiece.model'), TINY);
  const run = async (path: string) => {
    let latents: Tensor | undefined;
    const req: GenerateRequest = {
      model: { path },
      prompts: ['a photo of a red fox, 4k'],
      width: 64,
      height: 64,
      steps: 2,
      cfgScale: 1,
      sampler: 'Euler',
      seed: 16,
    };
    await engine.generate(req, {}, { onFinalLatents: (l) => (latents = l) });
    return latents!;
  };
  const a = await run(withJson);
  const b = await run(withModel);
  assert.ok(a.data.every(Number.isFinite));
  assert.deepEqual(b.data, a.data);
  const withNone = writeTinyFluxFolder(join(work, 'flux-none'));
  rmSync(join(withNone, 'tokenizer_2', 'tokenizer.json'));
  await assert.rejects(run(withNone), /expected tokenizer\.json or spiece\.model/);
});
