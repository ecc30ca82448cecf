// The LoRA weight-source decorator: a model component's weights with every requested LoRA module merged in on
// read (several LoRAs in order, each at its own text-encoder / UNet multiplier, negative ones too). Merging
// happens only when a graph is built; the graph cache key carries `graphKey`, so a combination built once is
// read back from the cache.
import type { Tensor } from '../../tensor.ts';
import { ModelFileError } from '../../api.ts';
import { filesIdentity } from '../hash.ts';
import type { LoadedModel } from '../model.ts';
import type { WeightDType, WeightSource } from '../types.ts';
import { loraFamilyHint, parseLora, type LoraModule, type ParsedLora } from './formats.ts';
import { applyModule } from './math.ts';
import { isBranchable, type BranchPatch } from './branch-factors.ts';
import { buildKeyMap, type LoraTarget } from './key-map.ts';
import { openTensorDictionary, type TensorDictionary } from './tensor-dictionary.ts';

/** One LoRA as the engine receives it: a resolved file path and its two multipliers. */
export interface LoraRequest {
  /** Its name as the client used it (warnings, infotext). */
  name: string;
  path: string;
  /** Text-encoder multiplier. */
  te: number;
  /** UNet multiplier. */
  unet: number;
}

/** A LoRA that fits nothing in the model: made for another family (`madeFor` when the file says). */
export class LoraMismatchError extends Error {
  constructor(
    readonly lora: string,
    readonly modelFamily: string,
    readonly madeFor: string | undefined,
    message: string,
  ) {
    super(message);
    this.name = 'LoraMismatchError';
  }
}

interface Patch {
  dict: TensorDictionary;
  module: LoraModule;
  multiplier: number;
}

class LoraMergedWeights implements WeightSource {
  constructor(
    private readonly base: WeightSource,
    /** Parameter name ("x.weight" / "x.bias") -> patches in request order. */
    private readonly patches: Map<string, Patch[]>,
  ) {}
  names(): string[] {
    return this.base.names();
  }
  has(name: string): boolean {
    return this.base.has(name);
  }
  shape(name: string): number[] {
    return this.base.shape(name);
  }
  dtype(name: string): WeightDType {
    return this.base.dtype(name);
  }
  get(name: string): Tensor {
    const t = this.base.get(name);
    const patches = this.patches.get(name);
    if (!patches) return t;
    const w: Tensor = { shape: t.shape, data: Float32Array.from(t.data) };
    const param = name.endsWith('.bias') ? 'bias' : 'weight';
    for (const p of patches) w.data = applyModule(p.dict, p.module, param, w, p.multiplier);
    return w;
  }
}

export interface AppliedLoras {
  unet: WeightSource;
  textEncoders: WeightSource[];
  /** Graph-key material per component; undefined where no LoRA changes it (the plain graph is used). */
  unetKey?: string;
  textEncoderKeys: (string | undefined)[];
  /** Keys no layer of this model matched, and modules of unknown form, by name. */
  warnings: string[];
  /**
   * Low-rank modules left out of the merge, to be fed as LoRA branches (only with `branchSites`): site path ->
   * patches, per component; undefined where no branch is patched (that component needs no branch graph).
   */
  unetBranches?: Map<string, BranchPatch[]>;
  textEncoderBranches: (Map<string, BranchPatch[]> | undefined)[];
}

/** Which layers of each component a LoRA-branch graph has branches at (nets/: isUnetBranchSite, isClipTextBranchSite). */
export interface BranchSites {
  unet: (path: string) => boolean;
  textEncoder: (path: string) => boolean;
}

export interface OpenedLora {
  dict: TensorDictionary;
  parsed: ParsedLora;
  identity: string;
}

const opened = new Map<string, OpenedLora>();
const MAX_OPEN = 32;

/** Reads a LoRA file's header and groups its keys (cached by path + size + mtime). */
export function openLora(path: string): OpenedLora {
  const identity = filesIdentity([path]);
  const cached = opened.get(identity);
  if (cached) return cached;
  const dict = openTensorDictionary(path);
  const parsed = parseLora(dict);
  const lora = { dict, parsed, identity };
  if (opened.size >= MAX_OPEN) opened.delete(opened.keys().next().value!);
  opened.set(identity, lora);
  return lora;
}

const keyMaps = new WeakMap<LoadedModel, Map<string, LoraTarget>>();

function keyMapOf(model: LoadedModel): Map<string, LoraTarget> {
  let map = keyMaps.get(model);
  if (!map) {
    map = buildKeyMap(model);
    keyMaps.set(model, map);
  }
  return map;
}

/** A low-rank module whose factors cannot make the target's shape does not match it (same name, other model). */
function fits(model: LoadedModel, dict: TensorDictionary, module: LoraModule, target: LoraTarget): boolean {
  if (module.algorithm !== 'lora') return true;
  const weights = target.component === 'unet' ? model.unet : model.textEncoders[target.component]!.weights;
  const shape = weights.shape(`${target.path}.weight`);
  const numel = (s: number[]) => s.reduce((a, b) => a * b, 1);
  const up = dict.shape(module.tensors.get('up')!);
  const down = dict.shape(module.tensors.get('down')!);
  const midName = module.tensors.get('mid');
  // CP/Tucker: the kernel is in lora_mid [r, r, kh, kw], down is [r, in, 1, 1].
  const kernel = midName ? numel(dict.shape(midName).slice(2)) : 1;
  return up[0] === shape[0] && (numel(down) / down[0]!) * kernel === numel(shape) / shape[0]!;
}

/** How a LoRA's modules land on a model: the matched targets and the keys that matched nothing. */
export function matchLora(model: LoadedModel, lora: OpenedLora): { matched: Array<[LoraModule, LoraTarget]>; unmatched: string[] } {
  const map = keyMapOf(model);
  const matched: Array<[LoraModule, LoraTarget]> = [];
  const unmatched = [...lora.parsed.unknownKeys];
  for (const module of lora.parsed.modules) {
    const target = map.get(module.key);
    if (target && fits(model, lora.dict, module, target)) matched.push([module, target]);
    else unmatched.push(module.key);
  }
  return { matched, unmatched };
}

/**
 * The model's components with the LoRAs merged in. With `branchSites`, plain low-rank modules at those sites are
 * not merged but returned as branch patches (switching them needs no new graph). A LoRA that matches no layer of
 * this model is an error.
 */
export function applyLoras(model: LoadedModel, loras: LoraRequest[], opts: { branchSites?: BranchSites } = {}): AppliedLoras {
  const perComponent = new Map<'unet' | number, Map<string, Patch[]>>();
  const branches = new Map<'unet' | number, Map<string, BranchPatch[]>>();
  const isSite = (c: 'unet' | number, path: string) =>
    opts.branchSites ? (c === 'unet' ? opts.branchSites.unet(path) : opts.branchSites.textEncoder(path)) : false;
  const keyParts = new Map<'unet' | number, string[]>();
  const warnings: string[] = [];
  for (const req of loras) {
    const lora = openLora(req.path);
    const { matched, unmatched } = matchLora(model, lora);
    const made = loraFamilyHint(lora.dict.metadata(), lora.dict.names());
    // A LoRA that says it is for another family is refused even when some layer names coincide (SD1 and SDXL share
    // LDM block names): partial matches would be a silently different model.
    if (matched.length === 0 || (made && made !== model.family)) {
      throw new LoraMismatchError(
        req.name,
        model.family,
        made,
        made && made !== model.family
          ? `LoRA "${req.name}" does not fit ${model.name} (${model.family}): it was made for ${made}`
          : `LoRA "${req.name}" matches none of the layers of ${model.name} (${model.family}): it was probably made for another model family`,
      );
    }
    if (unmatched.length) {
      const shown = unmatched.slice(0, 20).join(', ');
      warnings.push(
        `LoRA "${req.name}": ${unmatched.length} key(s) matched no layer of ${model.name} and were not applied: ${shown}${unmatched.length > 20 ? ', ...' : ''}`,
      );
    }
    const touched = new Set<'unet' | number>();
    for (const [module, target] of matched) {
      const multiplier = target.component === 'unet' ? req.unet : req.te;
      if (multiplier === 0) continue;
      if (isBranchable(module) && isSite(target.component, target.path)) {
        if (!branches.has(target.component)) branches.set(target.component, new Map());
        const sites = branches.get(target.component)!;
        if (!sites.has(target.path)) sites.set(target.path, []);
        sites.get(target.path)!.push({ dict: lora.dict, module, multiplier });
        continue;
      }
      touched.add(target.component);
      if (!perComponent.has(target.component)) perComponent.set(target.component, new Map());
      const patches = perComponent.get(target.component)!;
      const params = module.tensors.has('diff_b') ? ['weight', 'bias'] : ['weight'];
      for (const param of params) {
        const name = `${target.path}.${param}`;
        if (!patches.has(name)) patches.set(name, []);
        patches.get(name)!.push({ dict: lora.dict, module, multiplier });
      }
    }
    for (const c of touched) {
      if (!keyParts.has(c)) keyParts.set(c, []);
      keyParts.get(c)!.push(`${lora.identity}:${c === 'unet' ? req.unet : req.te}`);
    }
  }
  const wrap = (c: 'unet' | number, base: WeightSource) => {
    const patches = perComponent.get(c);
    return patches ? new LoraMergedWeights(base, patches) : base;
  };
  return {
    unet: wrap('unet', model.unet),
    textEncoders: model.textEncoders.map((te, i) => wrap(i, te.weights)),
    unetKey: keyParts.get('unet')?.join(','),
    textEncoderKeys: model.textEncoders.map((_, i) => keyParts.get(i)?.join(',')),
    warnings,
    unetBranches: branches.get('unet'),
    textEncoderBranches: model.textEncoders.map((_, i) => branches.get(i)),
  };
}

/** What a LoRA file holds, read from its header only: for listings and for checks before a job is queued. */
export interface LoraSummary {
  /** The family its metadata or key names point at; undefined when they do not say. */
  family?: string;
  modules: number;
  algorithms: string[];
  unknownKeys: string[];
  metadata: Record<string, string>;
}

/** Throws ModelFileError naming the file when it cannot be read or holds no LoRA module. */
export function inspectLora(path: string): LoraSummary {
  const lora = openLora(path);
  if (lora.parsed.modules.length === 0) {
    const shown = lora.parsed.unknownKeys.slice(0, 5).join(', ');
    throw new ModelFileError(path, `holds no LoRA/LyCORIS module this server knows${shown ? ` (keys such as ${shown})` : ' (no tensors)'}`);
  }
  const metadata = lora.dict.metadata();
  return {
    family: loraFamilyHint(metadata, lora.dict.names()),
    modules: lora.parsed.modules.length,
    algorithms: [...new Set(lora.parsed.modules.map((m) => m.algorithm))],
    unknownKeys: lora.parsed.unknownKeys,
    metadata,
  };
}
