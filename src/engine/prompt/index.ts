// Prompt processing: CLIP tokenizer, A1111 attention syntax, long-prompt chunks and emphasis on encoder outputs.
export { ClipTokenizer, encodePromptIds, basicTokenize, CLIP_MAX_LENGTH, CLIP_CHUNK_TOKENS } from './tokenizer.ts';
export { parsePromptAttention, isBreak, BREAK_WEIGHT, type AttentionPiece } from './syntax.ts';
export {
  promptToChunks,
  packChunks,
  alignChunkCounts,
  padChunks,
  emptyChunk,
  DEFAULT_COMMA_BACKTRACK,
  type EmphasisMode,
  type ChunkOptions,
  type PromptChunks,
  type SpecialIds,
  type TokenizedPiece,
} from './chunks.ts';
export { applyEmphasis, concatChunks, encodeWeightedChunks } from './weighting.ts';
