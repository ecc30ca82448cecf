// The T5 tokenizer (SentencePiece Unigram), read from a Hugging Face tokenizer.json or from SentencePiece's own
// spiece.model (weights-free ModelProto, prompt/sentencepiece-model.ts): whitespace split, each word
// prefixed with the metaspace "▁", segmented by Viterbi over the piece scores (unknown characters become <unk>
// at the lowest score minus 10, consecutive ones fused), then </s>, truncation and <pad> padding to a fixed length
// as the Flux and SD3 pipelines call it (padding="max_length", truncation=True).
// Not verified against the real T5 tokenizer: the fixtures hold none. Its normalizer (a precompiled NFKC-like
// charsmap) is approximated by String.normalize('NFKC').
import { readFileSync } from 'node:fs';
import { basename } from 'node:path';
import { ModelFileError } from '../api.ts';
import { PieceType, readSentencePieceModel, SpModelType } from './sentencepiece-model.ts';

const METASPACE = '\u2581';
const UNK_PENALTY = 10;

export interface T5Tokenization {
  ids: number[];
  /** Tokens before padding, including </s>. */
  length: number;
  /** The prompt did not fit and was cut. */
  truncated: boolean;
}

interface TrieNode {
  next: Map<string, TrieNode>;
  id: number;
}

export class T5Tokenizer {
  private readonly root: TrieNode = { next: new Map(), id: -1 };
  private readonly unkScore: number;

  constructor(
    private readonly scores: readonly number[],
    pieces: readonly string[],
    readonly unkId: number,
    readonly eosId: number,
    readonly padId: number,
    /** Pieces text may be segmented into (default all); SentencePiece never emits control or unknown pieces. */
    matchable: (id: number) => boolean = () => true,
  ) {
    pieces.forEach((piece, id) => {
      if (!matchable(id)) return;
      let node = this.root;
      for (const ch of piece) {
        let child = node.next.get(ch);
        if (!child) {
          child = { next: new Map(), id: -1 };
          node.next.set(ch, child);
        }
        node = child;
      }
      if (node.id < 0) node.id = id;
    });
    this.unkScore = Math.min(...scores) - UNK_PENALTY;
  }

  /** From a tokenizer.json with a Unigram model (T5, FLAN-T5, the Flux/SD3 tokenizer_2/tokenizer_3 folders). */
  static fromTokenizerJson(file: string): T5Tokenizer {
    let json: { model?: { type?: string; vocab?: [string, number][]; unk_id?: number } };
    try {
      json = JSON.parse(readFileSync(file, 'utf8'));
    } catch (e) {
      throw new ModelFileError(file, `cannot read tokenizer.json: ${(e as Error).message}`);
    }
    const model = json.model;
    if (model?.type !== 'Unigram' || !Array.isArray(model.vocab)) throw new ModelFileError(file, 'is not a Unigram (SentencePiece) tokenizer.json');
    const pieces = model.vocab.map(([p]) => p);
    const find = (piece: string) => {
      const id = pieces.indexOf(piece);
      if (id < 0) throw new ModelFileError(file, `has no "${piece}" token`);
      return id;
    };
    return new T5Tokenizer(
      model.vocab.map(([, s]) => s),
      pieces,
      model.unk_id ?? find('<unk>'),
      find('</s>'),
      find('<pad>'),
    );
  }

  /** From a SentencePiece spiece.model (the T5 tokenizer as google/t5-v1_1 and older Flux/SD3 folders ship it). */
  static fromSentencePieceModel(file: string): T5Tokenizer {
    const model = readSentencePieceModel(file);
    if (model.modelType !== SpModelType.UNIGRAM) throw new ModelFileError(file, `is a SentencePiece model of type ${model.modelType}, not Unigram (1)`);
    const count = model.pieces.length;
    const id = (value: number, what: string) => {
      if (value < 0 || value >= count) throw new ModelFileError(file, `has no ${what} piece (id ${value} of ${count})`);
      return value;
    };
    const matchable = (i: number) => {
      const type = model.pieces[i]!.type;
      return type === PieceType.NORMAL || type === PieceType.USER_DEFINED;
    };
    return new T5Tokenizer(
      model.pieces.map((p) => p.score),
      model.pieces.map((p) => p.piece),
      id(model.unkId, 'unknown'),
      id(model.eosId, 'end-of-sequence'),
      id(model.padId, 'padding'),
      matchable,
    );
  }

  /** From tokenizer.json or a SentencePiece `.model` file, by its name. */
  static fromFile(file: string): T5Tokenizer {
    return basename(file).endsWith('.model') ? T5Tokenizer.fromSentencePieceModel(file) : T5Tokenizer.fromTokenizerJson(file);
  }

  /** Token ids of one prompt, without </s> or padding. */
  tokenize(text: string): number[] {
    const ids: number[] = [];
    for (const word of text.normalize('NFKC').split(/\s+/u)) {
      if (word) ids.push(...this.viterbi(METASPACE + word));
    }
    return ids;
  }

  /** `maxLength` ids: the prompt's tokens (cut to maxLength - 1), </s>, then <pad>. */
  encode(text: string, maxLength: number): T5Tokenization {
    const tokens = this.tokenize(text);
    const truncated = tokens.length > maxLength - 1;
    const ids = [...tokens.slice(0, maxLength - 1), this.eosId];
    const length = ids.length;
    while (ids.length < maxLength) ids.push(this.padId);
    return { ids, length, truncated };
  }

  private viterbi(word: string): number[] {
    const chars = [...word];
    const n = chars.length;
    const best = new Array<number>(n + 1).fill(-Infinity);
    const from = new Array<number>(n + 1).fill(-1);
    const piece = new Array<number>(n + 1).fill(-1);
    best[0] = 0;
    for (let i = 0; i < n; i++) {
      if (best[i] === -Infinity) continue;
      let node: TrieNode | undefined = this.root;
      let matchedSingle = false;
      for (let j = i; j < n && node; j++) {
        node = node.next.get(chars[j]!);
        if (node && node.id >= 0) {
          if (j === i) matchedSingle = true;
          const score = best[i]! + this.scores[node.id]!;
          if (score > best[j + 1]!) [best[j + 1], from[j + 1], piece[j + 1]] = [score, i, node.id];
        }
      }
      if (!matchedSingle) {
        const score = best[i]! + this.unkScore;
        if (score > best[i + 1]!) [best[i + 1], from[i + 1], piece[i + 1]] = [score, i, this.unkId];
      }
    }
    const out: number[] = [];
    for (let end = n; end > 0; end = from[end]!) out.push(piece[end]!);
    out.reverse();
    // Consecutive unknowns are one <unk> (fuse_unk).
    return out.filter((id, k) => !(id === this.unkId && out[k - 1] === this.unkId));
  }
}
