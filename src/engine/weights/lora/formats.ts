// LoRA / LyCORIS file formats, detected from the tensor names: every key is split into a module key (the
// layer it patches, in the file's own naming) and a role (lora_down, hada_w1_a, ...), and each module's set of
// roles says its algorithm. Supported: kohya/LoCon, diffusers and PEFT spellings (incl. the old attn-processor
// format), LoHa, LoKr, (IA)3, full/diff, DoRA, and the frozen-patcher `<key>::lora::i` / `::diff::0` format.
import { detectLoraFamily } from '../../families/index.ts';
import type { TensorDictionary } from './tensor-dictionary.ts';

export type Algorithm = 'lora' | 'loha' | 'lokr' | 'ia3' | 'full';

export interface LoraModule {
  /** The module key as the file names it, e.g. "lora_unet_down_blocks_0_resnets_0_conv1" or "unet.x.to_q". */
  key: string;
  algorithm: Algorithm;
  /** role -> tensor name in the file. */
  tensors: Map<string, string>;
}

export interface ParsedLora {
  modules: LoraModule[];
  /** Keys whose role or module algorithm is not understood, by name. */
  unknownKeys: string[];
}

// Suffix -> role. Matched longest first, so ".lokr_w1_a" wins over ".lokr_w1".
const SUFFIX_ROLES: [string, string][] = (
  [
    ['.lora_down.weight', 'down'],
    ['.lora_up.weight', 'up'],
    ['.lora_mid.weight', 'mid'],
    ['.lora_A.weight', 'down'],
    ['.lora_B.weight', 'up'],
    ['.lora_A.default.weight', 'down'],
    ['.lora_B.default.weight', 'up'],
    ['.lora.down.weight', 'down'],
    ['.lora.up.weight', 'up'],
    ['.lora_linear_layer.down.weight', 'down'],
    ['.lora_linear_layer.up.weight', 'up'],
    ['.hada_w1_a', 'hada_w1_a'],
    ['.hada_w1_b', 'hada_w1_b'],
    ['.hada_w2_a', 'hada_w2_a'],
    ['.hada_w2_b', 'hada_w2_b'],
    ['.hada_t1', 'hada_t1'],
    ['.hada_t2', 'hada_t2'],
    ['.lokr_w1', 'lokr_w1'],
    ['.lokr_w1_a', 'lokr_w1_a'],
    ['.lokr_w1_b', 'lokr_w1_b'],
    ['.lokr_w2', 'lokr_w2'],
    ['.lokr_w2_a', 'lokr_w2_a'],
    ['.lokr_w2_b', 'lokr_w2_b'],
    ['.lokr_t2', 'lokr_t2'],
    ['.diff', 'diff'],
    ['.diff_b', 'diff_b'],
    ['.on_input', 'on_input'],
    ['.weight', 'weight'],
    ['.alpha', 'alpha'],
    ['.scale', 'scale'],
    ['.dora_scale', 'dora_scale'],
  ] as [string, string][]
).sort((a, b) => b[0].length - a[0].length);

/** The old diffusers attention-processor spelling: "x.processor.to_q_lora.down.weight" -> "x.to_q.lora.down.weight". */
function normaliseKey(key: string): string {
  return key.replace(/\.processor\.to_(q|k|v)_lora\./, '.to_$1.lora.').replace(/\.processor\.to_out_lora\./, '.to_out.0.lora.');
}

/** `<model key>::lora::0|1` / `::diff::0` (LayerDiffuse's frozen patcher): slot 0 = up, 1 = down. */
function frozenPatcherRole(key: string): { module: string; role: string } | undefined {
  const m = /^(.+)\.(weight|bias)::(lora|diff)::(\d+)$/.exec(key);
  if (!m) return undefined;
  const [, path, param, kind, slot] = m;
  if (kind === 'diff' && slot === '0') return { module: path!, role: param === 'bias' ? 'diff_b' : 'diff' };
  if (kind === 'lora' && param === 'weight' && (slot === '0' || slot === '1')) return { module: path!, role: slot === '0' ? 'up' : 'down' };
  return undefined;
}

function algorithmOf(roles: Set<string>): Algorithm | undefined {
  if (roles.has('up') && roles.has('down')) return 'lora';
  if (['hada_w1_a', 'hada_w1_b', 'hada_w2_a', 'hada_w2_b'].every((r) => roles.has(r))) return 'loha';
  if (
    (roles.has('lokr_w1') || (roles.has('lokr_w1_a') && roles.has('lokr_w1_b'))) &&
    (roles.has('lokr_w2') || (roles.has('lokr_w2_a') && roles.has('lokr_w2_b')))
  )
    return 'lokr';
  if (roles.has('weight') && roles.has('on_input')) return 'ia3';
  if (roles.has('diff') || roles.has('diff_b')) return 'full';
  return undefined;
}

export function parseLora(dict: TensorDictionary): ParsedLora {
  const byModule = new Map<string, Map<string, string>>();
  const unknownKeys: string[] = [];
  for (const key of dict.names()) {
    let found = frozenPatcherRole(key);
    if (!found) {
      const norm = normaliseKey(key);
      const hit = SUFFIX_ROLES.find(([suffix]) => norm.endsWith(suffix));
      if (hit) found = { module: norm.slice(0, -hit[0].length), role: hit[1] };
    }
    if (!found) {
      unknownKeys.push(key);
      continue;
    }
    if (!byModule.has(found.module)) byModule.set(found.module, new Map());
    byModule.get(found.module)!.set(found.role, key);
  }
  const modules: LoraModule[] = [];
  for (const [key, tensors] of byModule) {
    const algorithm = algorithmOf(new Set(tensors.keys()));
    if (algorithm) modules.push({ key, algorithm, tensors });
    else unknownKeys.push(...tensors.values());
  }
  return { modules, unknownKeys };
}

/** The model family a LoRA was made for (the families say how to tell); undefined when it cannot tell. */
export function loraFamilyHint(metadata: Record<string, string>, keys: string[]): string | undefined {
  return detectLoraFamily(metadata, keys);
}
