// A1111's long-prompt handling (modules/sd_hijack_clip.py `tokenize_line` + `process_tokens`): the weighted pieces of
// a prompt are tokenized one by one and packed into chunks of 75 tokens, each sent to the text encoder as
// bos + 75 + eos (77 ids). BREAK closes a chunk early; a chunk that would overflow moves the words after a recent comma
// into the next chunk.
//
// Padding: A1111 fills a short chunk with eos, then (process_tokens) replaces every id after the chunk's first eos with
// the model's pad id. Using the tokenizer's pad id gives A1111's ids for every standard model (SD1 and SDXL's CLIP-L pad
// with eos; SD2 and SDXL's OpenCLIP-G pad with id 0 = "!") and, for prompts of at most 75 tokens, exactly the ids of
// diffusers' encode_prompt. A1111 looks for the first eos *anywhere* in the chunk, so a typed "<|endoftext|>" also
// pads the rest of its chunk; we keep that.
import type { ClipTokenizer } from './tokenizer.ts';
import { CLIP_CHUNK_TOKENS } from './tokenizer.ts';
import { parsePromptAttention, isBreak, type AttentionPiece } from './syntax.ts';

/**
 * A1111's emphasis options: `original` (weights applied, then the mean restored), `no-norm` (weights applied only),
 * `ignore` (syntax parsed and removed, weights not applied) and `none` (no parsing: brackets are literal text and
 * BREAK is an ordinary word).
 */
export type EmphasisMode = 'original' | 'no-norm' | 'ignore' | 'none';

/** A1111's default `comma_padding_backtrack`. */
export const DEFAULT_COMMA_BACKTRACK = 20;

export interface ChunkOptions {
  emphasis?: EmphasisMode;
  /** How far back (in tokens) a comma may be to move the words after it into the next chunk; 0 disables. */
  commaPaddingBacktrack?: number;
  /** Request field the prompt came from, named in errors. */
  field?: string;
}

export interface SpecialIds {
  bos: number;
  eos: number;
  pad: number;
}

export interface PromptChunks {
  /** One row of 77 ids per chunk: bos, 75 prompt or padding ids, eos. */
  ids: number[][];
  /** Per-token multipliers parallel to `ids`; 1.0 for bos, eos and padding. */
  weights: number[][];
  /** A1111's token count for the prompt (shown as "n/75" in its UI). */
  tokenCount: number;
  /** The tokenizer's ids, so empty chunks can be appended later (alignChunkCounts). */
  special: SpecialIds;
}

interface OpenChunk {
  tokens: number[];
  multipliers: number[];
}

/** A prompt piece after tokenization: its ids and weight, or a BREAK. */
export interface TokenizedPiece {
  tokens: number[];
  weight: number;
  isBreak: boolean;
}

/** Splits a prompt into chunks of token ids with per-token weights, as A1111's tokenize_line. */
export function promptToChunks(tokenizer: ClipTokenizer, prompt: string, options: ChunkOptions = {}): PromptChunks {
  const emphasis = options.emphasis ?? 'original';
  const parsed: AttentionPiece[] = emphasis === 'none' ? [{ text: prompt, weight: 1.0 }] : parsePromptAttention(prompt, options.field);
  const pieces = parsed.map((p) => ({ tokens: tokenizer.encode(p.text), weight: p.weight, isBreak: isBreak(p) }));
  const special: SpecialIds = { bos: tokenizer.bos, eos: tokenizer.eos, pad: tokenizer.pad };
  return packChunks(pieces, special, tokenizer.comma, options.commaPaddingBacktrack ?? DEFAULT_COMMA_BACKTRACK);
}

/** The packing half of tokenize_line: fills 75-token chunks from tokenized pieces. `comma` is the ",</w>" id. */
export function packChunks(pieces: readonly TokenizedPiece[], special: SpecialIds, comma: number | undefined, backtrack: number): PromptChunks {
  const ids: number[][] = [];
  const weights: number[][] = [];
  let chunk: OpenChunk = { tokens: [], multipliers: [] };
  let tokenCount = 0;
  let lastComma = -1;

  const nextChunk = (isLast = false) => {
    tokenCount += isLast ? chunk.tokens.length : CLIP_CHUNK_TOKENS;
    const row = [special.bos, ...chunk.tokens];
    const rowWeights = [1.0, ...chunk.multipliers];
    while (row.length < CLIP_CHUNK_TOKENS + 1) {
      row.push(special.eos);
      rowWeights.push(1.0);
    }
    row.push(special.eos);
    rowWeights.push(1.0);
    ids.push(padAfterFirstEos(row, special));
    weights.push(rowWeights);
    lastComma = -1;
    chunk = { tokens: [], multipliers: [] };
  };

  for (const piece of pieces) {
    if (piece.isBreak) {
      nextChunk();
      continue;
    }
    for (const token of piece.tokens) {
      if (token === comma) {
        lastComma = chunk.tokens.length;
      } else if (backtrack !== 0 && chunk.tokens.length === CLIP_CHUNK_TOKENS && lastComma !== -1 && chunk.tokens.length - lastComma <= backtrack) {
        // The chunk is full and a comma is near its end: close the chunk after the comma, carry the rest over.
        const breakAt = lastComma + 1;
        const carried: OpenChunk = { tokens: chunk.tokens.slice(breakAt), multipliers: chunk.multipliers.slice(breakAt) };
        chunk.tokens.length = breakAt;
        chunk.multipliers.length = breakAt;
        nextChunk();
        chunk = carried;
      }
      if (chunk.tokens.length === CLIP_CHUNK_TOKENS) nextChunk();
      chunk.tokens.push(token);
      chunk.multipliers.push(piece.weight);
    }
  }
  if (chunk.tokens.length > 0 || ids.length === 0) nextChunk(true);

  return { ids, weights, tokenCount, special };
}

/** A1111 process_tokens: when pad differs from eos, every id after the first eos becomes pad. */
function padAfterFirstEos(row: number[], special: SpecialIds): number[] {
  if (special.pad === special.eos) return row;
  const firstEos = row.indexOf(special.eos);
  for (let i = firstEos + 1; i < row.length; i++) row[i] = special.pad;
  return row;
}

/** The chunk of the empty prompt: bos, eos, then padding; all weights 1. */
export function emptyChunk(special: SpecialIds): { ids: number[]; weights: number[] } {
  const ids = [special.bos, special.eos];
  while (ids.length < CLIP_CHUNK_TOKENS + 2) ids.push(special.pad);
  return { ids, weights: ids.map(() => 1.0) };
}

/**
 * Pads the prompt with fewer chunks with empty-prompt chunks so both have the same count, as A1111's
 * pad_cond_uncond does (with the encoded empty prompt) so cond and uncond can share one UNet batch.
 */
export function alignChunkCounts(a: PromptChunks, b: PromptChunks): [PromptChunks, PromptChunks] {
  if (a.special.bos !== b.special.bos || a.special.eos !== b.special.eos || a.special.pad !== b.special.pad) {
    throw new Error('alignChunkCounts: the two prompts were tokenized with different tokenizers');
  }
  const count = Math.max(a.ids.length, b.ids.length);
  return [padChunks(a, count), padChunks(b, count)];
}

/** Extends a prompt's chunks with empty-prompt chunks up to `count` (returns the input when already there). */
export function padChunks(c: PromptChunks, count: number): PromptChunks {
  if (c.ids.length >= count) return c;
  const ids = [...c.ids];
  const weights = [...c.weights];
  while (ids.length < count) {
    const empty = emptyChunk(c.special);
    ids.push(empty.ids);
    weights.push(empty.weights);
  }
  return { ...c, ids, weights };
}
