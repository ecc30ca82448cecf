// The weights layer's public surface: load a model, then ask its WeightSources for tensors by diffusers name.
export {
  loadModel,
  openComponentFiles,
  componentWeightPaths,
  modelHashFile,
  modelHashes,
  type LoadedModel,
  type LoadOptions,
  type TextEncoderPart,
  type FamilyName,
  type Prediction,
} from './model.ts';
export { SafetensorsFile, writeSafetensors, type TensorEntry, type TensorToWrite } from './safetensors.ts';
export { MappedWeights, storedWeights } from './sources.ts';
export { openTensorFile, type TensorFile, type TensorInfo } from './tensor-file.ts';
export { TorchPickleFile } from './pickle/torch-file.ts';
export { a1111ShortHash, fileSha256, filesIdentity } from './hash.ts';
export { standardTokenizerDir, hfHubCacheDir, type TokenizerRole } from './tokenizers.ts';
export type { WeightSource, WeightDType, UnetConfig, VaeConfig, ClipTextConfig, SchedulerConfig } from './types.ts';
