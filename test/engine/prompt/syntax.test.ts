import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parsePromptAttention, isBreak, BREAK_WEIGHT } from '../../../src/engine/prompt/syntax.ts';
import { KilnInputError } from '../../../src/engine/api.ts';

const parse = (text: string) => parsePromptAttention(text).map((p) => [p.text, p.weight]);

test('A1111 parse_prompt_attention docstring examples', () => {
  assert.deepEqual(parse('normal text'), [['normal text', 1.0]]);
  assert.deepEqual(parse('an (important) word'), [
    ['an ', 1.0],
    ['important', 1.1],
    [' word', 1.0],
  ]);
  assert.deepEqual(parse('(unbalanced'), [['unbalanced', 1.1]]);
  assert.deepEqual(parse('\\(literal\\]'), [['(literal]', 1.0]]);
  assert.deepEqual(parse('(unnecessary)(parens)'), [['unnecessaryparens', 1.1]]);
  assert.deepEqual(parse('a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).'), [
    ['a ', 1.0],
    ['house', 1.5730000000000004],
    [' ', 1.1],
    ['on', 1.0],
    [' a ', 1.1],
    ['hill', 0.55],
    [', sun, ', 1.1],
    ['sky', 1.4641000000000006],
    ['.', 1.1],
  ]);
});

test('nesting multiplies: ((word)) is 1.1*1.1, [word] divides by 1.1, explicit weights may have spaces', () => {
  assert.deepEqual(parse('((word))'), [['word', 1.1 * 1.1]]);
  assert.deepEqual(parse('[word]'), [['word', 1 / 1.1]]);
  assert.deepEqual(parse('[[word]]'), [['word', 1 / 1.1 / 1.1]]);
  assert.deepEqual(parse('(word:1.3)'), [['word', 1.3]]);
  assert.deepEqual(parse('(word : 0.5 )'), [['word ', 0.5]]);
  assert.deepEqual(parse('(word:-1)'), [['word', -1]]);
  assert.deepEqual(parse('(word:.5)'), [['word', 0.5]]);
});

test('escapes and stray brackets: \\\\ is a backslash, unmatched closers and colons stay as text', () => {
  assert.deepEqual(parse('a \\\\ b'), [['a \\ b', 1.0]]);
  assert.deepEqual(parse('a) b] c:d'), [['a) b] c:d', 1.0]]);
  assert.deepEqual(parse('x:1.2)'), [['x:1.2)', 1.0]]);
  // A backslash before an ordinary character is dropped, as in A1111.
  assert.deepEqual(parse('\\a'), [['a', 1.0]]);
  // Unclosed [ and ( apply to the rest of the prompt.
  assert.deepEqual(parse('a [b (c'), [
    ['a ', 1.0],
    ['b ', 1 / 1.1],
    ['c', (1 * 1.1) / 1.1],
  ]);
});

test('empty prompt gives one empty piece of weight 1', () => {
  assert.deepEqual(parse(''), [['', 1.0]]);
});

test('BREAK as a separate upper-case word becomes a marker, eating the spaces around it', () => {
  const pieces = parsePromptAttention('a cat BREAK a dog');
  assert.deepEqual(
    pieces.map((p) => [p.text, p.weight]),
    [
      ['a cat', 1.0],
      ['BREAK', BREAK_WEIGHT],
      ['a dog', 1.0],
    ],
  );
  assert.deepEqual(pieces.map(isBreak), [false, true, false]);
  assert.deepEqual(parse('BREAKING news, break'), [['BREAKING news, break', 1.0]]);
  assert.deepEqual(parse('(a) BREAK b'), [
    ['a', 1.1],
    ['', 1.0],
    ['BREAK', -1],
    ['b', 1.0],
  ]);
  // Inside brackets the marker's weight is scaled too, so A1111 (and we) treat it as the plain word.
  const inside = parsePromptAttention('(a BREAK b)');
  assert.equal(inside.some(isBreak), false);
  assert.deepEqual(
    inside.map((p) => p.text),
    ['a', 'BREAK', 'b'],
  );
});

test('an unreadable weight is a KilnInputError naming the field', () => {
  assert.throws(
    () => parsePromptAttention('(a:1.2.3)', 'negativePrompt'),
    (e: unknown) => e instanceof KilnInputError && e.field === 'negativePrompt',
  );
});
