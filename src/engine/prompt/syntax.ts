// A1111's prompt attention syntax (modules/prompt_parser.py `parse_prompt_attention`), reproduced rule for rule:
// (text) x1.1, [text] /1.1, (text:w) xw, backslash escapes, unbalanced brackets closed at the end, BREAK markers,
// and adjacent pieces of exactly equal weight merged.
import { KilnInputError } from '../api.ts';

export interface AttentionPiece {
  text: string;
  /** Multiplier of the text's token outputs; BREAK markers carry -1 (possibly scaled, see isBreak). */
  weight: number;
}

/** The weight A1111 gives a BREAK marker. */
export const BREAK_WEIGHT = -1;

/**
 * A1111 recognises a BREAK only as `['BREAK', -1]`. A BREAK inside brackets has its -1 scaled (e.g. -1.1) and then
 * counts as the plain word "BREAK"; we keep that quirk so prompts behave as they do in A1111.
 */
export function isBreak(piece: AttentionPiece): boolean {
  return piece.text === 'BREAK' && piece.weight === BREAK_WEIGHT;
}

const ROUND_MULTIPLIER = 1.1;
const SQUARE_MULTIPLIER = 1 / 1.1;

// Alternatives in A1111's order: escapes, lone backslash, openers, "(…:weight)" closer, closers, plain text, ":".
// Python's \d matches any Unicode decimal digit, hence \p{Nd}.
const ATTENTION_TOKEN = /\\\(|\\\)|\\\[|\\\]|\\\\|\\|\(|\[|:\s*([+-]?[.\p{Nd}]+)\s*\)|\)|\]|[^\\()[\]:]+|:/gu;
// Python's \b is Unicode-aware (word chars = letters, numbers, underscore); JS's \b is ASCII-only.
const BREAK_SEPARATOR = /\s*(?<![\p{L}\p{N}_])BREAK(?![\p{L}\p{N}_])\s*/u;
const DECIMAL_DIGIT = /^\p{Nd}$/u;

/** Python float() of a string matching [+-]?[.\d]+, or NaN where Python raises ValueError. */
function pythonFloat(text: string): number {
  let ascii = '';
  for (const ch of text) ascii += DECIMAL_DIGIT.test(ch) ? String(decimalDigitValue(ch)) : ch;
  return Number(ascii);
}

/** Unicode encodes every decimal digit set as a contiguous run 0..9, so a digit's value is its offset in the run. */
function decimalDigitValue(ch: string): number {
  const cp = ch.codePointAt(0)!;
  if (cp >= 0x30 && cp <= 0x39) return cp - 0x30;
  let before = 0;
  while (DECIMAL_DIGIT.test(String.fromCodePoint(cp - before - 1))) before++;
  return before % 10;
}

/**
 * Splits a prompt into pieces of text with their attention weights, exactly as A1111's parse_prompt_attention.
 * Throws KilnInputError for a weight A1111 cannot parse either (e.g. "(a:1.2.3)"); `field` names the request field.
 */
export function parsePromptAttention(prompt: string, field = 'prompt'): AttentionPiece[] {
  const res: AttentionPiece[] = [];
  const roundBrackets: number[] = [];
  const squareBrackets: number[] = [];
  const multiplyRange = (start: number, multiplier: number) => {
    for (let p = start; p < res.length; p++) res[p]!.weight *= multiplier;
  };

  for (const m of prompt.matchAll(ATTENTION_TOKEN)) {
    const text = m[0];
    const weightText = m[1];
    if (text.startsWith('\\')) {
      res.push({ text: text.slice(1), weight: 1.0 });
    } else if (text === '(') {
      roundBrackets.push(res.length);
    } else if (text === '[') {
      squareBrackets.push(res.length);
    } else if (weightText !== undefined && roundBrackets.length > 0) {
      const weight = pythonFloat(weightText);
      if (Number.isNaN(weight)) throw new KilnInputError(`${field}: cannot read attention weight "${weightText}" in "${text}"`, field);
      multiplyRange(roundBrackets.pop()!, weight);
    } else if (text === ')' && roundBrackets.length > 0) {
      multiplyRange(roundBrackets.pop()!, ROUND_MULTIPLIER);
    } else if (text === ']' && squareBrackets.length > 0) {
      multiplyRange(squareBrackets.pop()!, SQUARE_MULTIPLIER);
    } else {
      text.split(BREAK_SEPARATOR).forEach((part, i) => {
        if (i > 0) res.push({ text: 'BREAK', weight: BREAK_WEIGHT });
        res.push({ text: part, weight: 1.0 });
      });
    }
  }

  // Unclosed brackets apply to everything after them, in the order they were opened.
  for (const pos of roundBrackets) multiplyRange(pos, ROUND_MULTIPLIER);
  for (const pos of squareBrackets) multiplyRange(pos, SQUARE_MULTIPLIER);

  if (res.length === 0) res.push({ text: '', weight: 1.0 });

  for (let i = 0; i + 1 < res.length; ) {
    if (res[i]!.weight === res[i + 1]!.weight) {
      res[i]!.text += res[i + 1]!.text;
      res.splice(i + 1, 1);
    } else {
      i++;
    }
  }
  return res;
}
