// CLIP byte-level BPE tokenizer, reproducing transformers' *slow* CLIPTokenizer (4.26) when ftfy is not installed:
// special tokens are split out of the raw text first, the rest goes through BERT's BasicTokenizer (lower case,
// accents stripped, punctuation and CJK split into words), then CLIP's regex, bytes_to_unicode and BPE.
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ModelFileError } from '../api.ts';

/** CLIP's context: bos + 75 tokens + eos. */
export const CLIP_MAX_LENGTH = 77;
export const CLIP_CHUNK_TOKENS = CLIP_MAX_LENGTH - 2;

/** transformers keeps only the first 49152-256-2 merges of merges.txt (the size of OpenAI's CLIP vocabulary). */
const MAX_MERGES = 49152 - 256 - 2;
const END_OF_WORD = '</w>';
/** Words are BPE'd once and remembered; the cap keeps a long-running server from growing without bound. */
const BPE_CACHE_LIMIT = 50_000;

const CLIP_PATTERN = /<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|\p{L}+|\p{N}|[^\s\p{L}\p{N}]+/giu;

/** GPT-2's reversible byte -> printable unicode character table. */
function bytesToUnicode(): string[] {
  const table: string[] = new Array(256);
  const printable = (b: number) => (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
  let extra = 0;
  for (let b = 0; b < 256; b++) {
    table[b] = String.fromCodePoint(printable(b) ? b : 256 + extra++);
  }
  return table;
}
const BYTE_ENCODER = bytesToUnicode();
const UTF8 = new TextEncoder();

// ---- BERT BasicTokenizer (do_lower_case=True, tokenize_chinese_chars=True, strip_accents=None) ----

const CONTROL = /^\p{C}$/u;
const SPACE_SEPARATOR = /^\p{Zs}$/u;
const PUNCTUATION = /^\p{P}$/u;
const NONSPACING_MARK = /\p{Mn}/gu;

function isControl(ch: string): boolean {
  if (ch === '\t' || ch === '\n' || ch === '\r') return false;
  return CONTROL.test(ch);
}

function isWhitespace(ch: string): boolean {
  return ch === ' ' || ch === '\t' || ch === '\n' || ch === '\r' || SPACE_SEPARATOR.test(ch);
}

function isPunctuation(ch: string): boolean {
  const cp = ch.codePointAt(0)!;
  // BERT counts every non-alphanumeric ASCII symbol ($, ^, `, ...) as punctuation, not only category P.
  if ((cp >= 33 && cp <= 47) || (cp >= 58 && cp <= 64) || (cp >= 91 && cp <= 96) || (cp >= 123 && cp <= 126)) return true;
  return PUNCTUATION.test(ch);
}

function isCjk(cp: number): boolean {
  return (
    (cp >= 0x4e00 && cp <= 0x9fff) ||
    (cp >= 0x3400 && cp <= 0x4dbf) ||
    (cp >= 0x20000 && cp <= 0x2a6df) ||
    (cp >= 0x2a700 && cp <= 0x2b73f) ||
    (cp >= 0x2b740 && cp <= 0x2b81f) ||
    (cp >= 0x2b820 && cp <= 0x2ceaf) ||
    (cp >= 0xf900 && cp <= 0xfaff) ||
    (cp >= 0x2f800 && cp <= 0x2fa1f)
  );
}

/** BasicTokenizer.tokenize: returns the words, already lower-cased, accent-free and punctuation-split. */
export function basicTokenize(text: string): string[] {
  let cleaned = '';
  for (const ch of text) {
    const cp = ch.codePointAt(0)!;
    if (cp === 0 || cp === 0xfffd || isControl(ch)) continue;
    if (isWhitespace(ch)) cleaned += ' ';
    else if (isCjk(cp)) cleaned += ` ${ch} `;
    else cleaned += ch;
  }
  const words: string[] = [];
  for (const token of splitWhitespace(cleaned)) {
    const folded = token.toLowerCase().normalize('NFD').replace(NONSPACING_MARK, '');
    let current = '';
    for (const ch of folded) {
      if (isPunctuation(ch)) {
        if (current) words.push(current);
        words.push(ch);
        current = '';
      } else {
        current += ch;
      }
    }
    if (current) words.push(current);
  }
  return words;
}

function splitWhitespace(text: string): string[] {
  return text.split(/\s+/u).filter((w) => w.length > 0);
}

// ---- Config files ----

interface SpecialTokens {
  bos: string;
  eos: string;
  unk: string;
  pad: string;
}

/** A special token in tokenizer_config.json / special_tokens_map.json is a string or an AddedToken object. */
function tokenContent(value: unknown): string | undefined {
  if (typeof value === 'string') return value;
  if (value && typeof value === 'object' && typeof (value as { content?: unknown }).content === 'string') {
    return (value as { content: string }).content;
  }
  return undefined;
}

async function readJsonIfPresent(file: string): Promise<Record<string, unknown> | undefined> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new ModelFileError(file, `cannot read: ${(e as Error).message}`);
  }
  try {
    return JSON.parse(text) as Record<string, unknown>;
  } catch (e) {
    throw new ModelFileError(file, `invalid JSON: ${(e as Error).message}`);
  }
}

async function readRequired(file: string): Promise<string> {
  try {
    return await readFile(file, 'utf8');
  } catch (e) {
    throw new ModelFileError(file, `cannot read tokenizer file: ${(e as Error).message}`);
  }
}

export class ClipTokenizer {
  readonly bos: number;
  readonly eos: number;
  readonly pad: number;
  readonly unk: number;
  /** Id of ",</w>" (A1111's comma backtracking), or undefined if the vocabulary lacks it. */
  readonly comma: number | undefined;
  private readonly idToToken: Map<number, string>;
  /** Special tokens matched verbatim in the raw text before any normalisation, longest first. */
  private readonly noSplitTokens: string[];
  private readonly bpeCache = new Map<string, string[]>();
  /** Token-id runs replaced after tokenizing (textual-inversion names -> their vectors' ids). */
  private substitutions: TokenSubstitution[] = [];

  constructor(
    private readonly vocab: Map<string, number>,
    private readonly bpeRanks: Map<string, number>,
    special: SpecialTokens,
    addedTokens: string[] = [],
    source = 'tokenizer',
  ) {
    const idOf = (role: string, token: string) => {
      const id = vocab.get(token);
      if (id === undefined) throw new ModelFileError(source, `${role} token ${JSON.stringify(token)} is not in vocab.json`);
      return id;
    };
    this.bos = idOf('bos', special.bos);
    this.eos = idOf('eos', special.eos);
    this.unk = idOf('unk', special.unk);
    this.pad = idOf('pad', special.pad);
    this.comma = vocab.get(`,${END_OF_WORD}`);
    this.idToToken = new Map();
    for (const [token, id] of vocab) if (!this.idToToken.has(id)) this.idToToken.set(id, token);
    // transformers registers every special token as "no split", even a pad token of "!" (SD2/SDXL-G): such a
    // token typed in the prompt becomes its bare id ("!" = 0), not the "!</w>" a word-final "!" would get.
    const noSplit = new Set([special.bos, special.eos, special.unk, special.pad, ...addedTokens]);
    this.noSplitTokens = [...noSplit].filter((t) => t.length > 0).sort((a, b) => b.length - a.length);
  }

  /** Loads vocab.json + merges.txt and the special tokens (tokenizer_config.json, then special_tokens_map.json). */
  static async fromDir(dir: string): Promise<ClipTokenizer> {
    const vocabFile = join(dir, 'vocab.json');
    const mergesFile = join(dir, 'merges.txt');
    let vocabJson: unknown;
    try {
      vocabJson = JSON.parse(await readRequired(vocabFile));
    } catch (e) {
      if (e instanceof ModelFileError) throw e;
      throw new ModelFileError(vocabFile, `invalid JSON: ${(e as Error).message}`);
    }
    if (!vocabJson || typeof vocabJson !== 'object' || Array.isArray(vocabJson)) {
      throw new ModelFileError(vocabFile, 'expected an object mapping token -> id');
    }
    const vocab = new Map<string, number>();
    for (const [token, id] of Object.entries(vocabJson as Record<string, unknown>)) {
      if (typeof id !== 'number' || !Number.isInteger(id)) throw new ModelFileError(vocabFile, `id of ${JSON.stringify(token)} is not an integer`);
      vocab.set(token, id);
    }

    const mergeLines = (await readRequired(mergesFile))
      .trim()
      .split('\n')
      .slice(1, MAX_MERGES + 1);
    const bpeRanks = new Map<string, number>();
    mergeLines.forEach((line, rank) => {
      const parts = line.trim().split(/\s+/);
      if (parts.length !== 2) throw new ModelFileError(mergesFile, `line ${rank + 2} is not a pair of symbols: ${JSON.stringify(line)}`);
      bpeRanks.set(`${parts[0]} ${parts[1]}`, rank);
    });

    // CLIPTokenizer's defaults, overridden by tokenizer_config.json, then by special_tokens_map.json (as from_pretrained does).
    const special: SpecialTokens = { bos: '<|startoftext|>', eos: '<|endoftext|>', unk: '<|endoftext|>', pad: '<|endoftext|>' };
    const config = await readJsonIfPresent(join(dir, 'tokenizer_config.json'));
    const map = await readJsonIfPresent(join(dir, 'special_tokens_map.json'));
    for (const source of [config, map]) {
      if (!source) continue;
      for (const role of ['bos', 'eos', 'unk', 'pad'] as const) {
        const value = tokenContent(source[`${role}_token`]);
        if (value !== undefined) special[role] = value;
      }
    }

    // Tokens added after training (added_tokens.json: token -> id) are matched verbatim like special tokens.
    const addedFile = join(dir, 'added_tokens.json');
    const added = await readJsonIfPresent(addedFile);
    const addedTokens: string[] = [];
    for (const [token, id] of Object.entries(added ?? {})) {
      if (typeof id !== 'number' || !Number.isInteger(id)) throw new ModelFileError(addedFile, `id of ${JSON.stringify(token)} is not an integer`);
      vocab.set(token, id);
      addedTokens.push(token);
    }
    return new ClipTokenizer(vocab, bpeRanks, special, addedTokens, dir);
  }

  /** Token ids of `text`, without bos/eos, untruncated. */
  encode(text: string): number[] {
    const ids: number[] = [];
    for (const piece of this.splitOnSpecialTokens(text)) {
      if (piece.special) {
        ids.push(this.vocab.get(piece.text)!);
        continue;
      }
      for (const token of this.tokenizeOrdinary(piece.text)) ids.push(this.vocab.get(token) ?? this.unk);
    }
    return this.substitutions.length ? substitute(ids, this.substitutions) : ids;
  }

  /**
   * This tokenizer, with every run of `from` ids replaced by `to` (A1111 matches textual-inversion names on
   * token ids, longest name first, and puts the embedding's vectors there).
   */
  withSubstitutions(subs: TokenSubstitution[]): ClipTokenizer {
    const copy = Object.assign(Object.create(ClipTokenizer.prototype) as ClipTokenizer, this);
    copy.substitutions = [...subs].sort((a, b) => b.from.length - a.from.length);
    return copy;
  }

  /** The vocabulary strings of `ids` (for debugging and tests). */
  tokenStrings(ids: readonly number[]): string[] {
    return ids.map((id) => {
      const token = this.idToToken.get(id);
      if (token === undefined) throw new RangeError(`token id ${id} is not in the vocabulary`);
      return token;
    });
  }

  /** The id of a vocabulary string, or undefined. */
  tokenId(token: string): number | undefined {
    return this.vocab.get(token);
  }

  /** Leftmost-longest split of the raw text on special tokens, as transformers' added-tokens trie does. */
  private splitOnSpecialTokens(text: string): Array<{ text: string; special: boolean }> {
    const out: Array<{ text: string; special: boolean }> = [];
    let start = 0;
    let i = 0;
    outer: while (i < text.length) {
      for (const token of this.noSplitTokens) {
        if (text.startsWith(token, i)) {
          if (i > start) out.push({ text: text.slice(start, i), special: false });
          out.push({ text: token, special: true });
          i += token.length;
          start = i;
          continue outer;
        }
      }
      i++;
    }
    if (start < text.length) out.push({ text: text.slice(start), special: false });
    return out;
  }

  /** CLIPTokenizer._tokenize without ftfy: BPE token strings of text that holds no special tokens. */
  private tokenizeOrdinary(text: string): string[] {
    const normalized = basicTokenize(text).join(' ');
    const tokens: string[] = [];
    for (const match of normalized.matchAll(CLIP_PATTERN)) {
      let word = '';
      for (const byte of UTF8.encode(match[0])) word += BYTE_ENCODER[byte];
      tokens.push(...this.bpe(word));
    }
    return tokens;
  }

  /** Byte-pair merges of one byte-encoded word, lowest rank first; the last symbol carries `</w>`. */
  private bpe(word: string): string[] {
    const cached = this.bpeCache.get(word);
    if (cached) return cached;
    const chars = Array.from(word);
    let symbols = chars.slice(0, -1);
    symbols.push(chars[chars.length - 1] + END_OF_WORD);
    while (symbols.length > 1) {
      let bestRank = Infinity;
      let best = '';
      for (let k = 0; k + 1 < symbols.length; k++) {
        const rank = this.bpeRanks.get(`${symbols[k]} ${symbols[k + 1]}`);
        if (rank !== undefined && rank < bestRank) {
          bestRank = rank;
          best = `${symbols[k]} ${symbols[k + 1]}`;
        }
      }
      if (bestRank === Infinity) break;
      const [first, second] = best.split(' ') as [string, string];
      const merged: string[] = [];
      for (let k = 0; k < symbols.length; ) {
        if (k + 1 < symbols.length && symbols[k] === first && symbols[k + 1] === second) {
          merged.push(first + second);
          k += 2;
        } else {
          merged.push(symbols[k]!);
          k += 1;
        }
      }
      symbols = merged;
    }
    if (this.bpeCache.size >= BPE_CACHE_LIMIT) this.bpeCache.clear();
    this.bpeCache.set(word, symbols);
    return symbols;
  }
}

/**
 * The ids diffusers' `encode_prompt` feeds the text encoder: bos + the first 75 tokens + eos, then the
 * tokenizer's pad id up to 77 (`padding="max_length", max_length=77, truncation=True`).
 */
export function encodePromptIds(tokenizer: ClipTokenizer, text: string, maxLength = CLIP_MAX_LENGTH): number[] {
  const body = tokenizer.encode(text).slice(0, maxLength - 2);
  const ids = [tokenizer.bos, ...body, tokenizer.eos];
  while (ids.length < maxLength) ids.push(tokenizer.pad);
  return ids;
}

export interface TokenSubstitution {
  from: number[];
  to: number[];
}

function substitute(ids: number[], subs: TokenSubstitution[]): number[] {
  const out: number[] = [];
  for (let i = 0; i < ids.length; ) {
    const hit = subs.find((s) => s.from.length > 0 && s.from.every((id, k) => ids[i + k] === id));
    if (hit) {
      out.push(...hit.to);
      i += hit.from.length;
    } else out.push(ids[i++]!);
  }
  return out;
}
