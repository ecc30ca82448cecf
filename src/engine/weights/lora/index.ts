// LoRA / LyCORIS: formats (formats.ts), merge formulas (math.ts), the key map (key-map.ts), the merging weight
// source (merged-weights.ts) and the file reader interface a pickle reader plugs into (tensor-dictionary.ts).
export {
  applyLoras,
  inspectLora,
  LoraMismatchError,
  type LoraSummary,
  matchLora,
  openLora,
  type AppliedLoras,
  type BranchSites,
  type LoraRequest,
  type OpenedLora,
} from './merged-weights.ts';
export { loraFamilyHint, parseLora, type Algorithm, type LoraModule, type ParsedLora } from './formats.ts';
export { openTensorDictionary, tensorFileDictionary, type TensorDictionary } from './tensor-dictionary.ts';
export { loraHashesText, loraShortHash } from './hash.ts';
export { branchFeeds, type BranchInputInfo, type BranchPatch } from './branch-factors.ts';
