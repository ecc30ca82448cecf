// The one capability check. A JobSpec carries every feature any surface can ask for as structured fields
// (hires, loras, mask, ...); this answers "not implemented" (501 on every surface) for the ones the engine
// cannot do yet, naming the feature and the request field that asked for it in the client's own terms
// (JobSpec.sourceFields). When a feature lands, its name goes into the engine's capabilities and the
// adapters need no change.
import type { JobSpec } from './job-spec.ts';

/** A feature a client asked for that Kiln does not have yet. Surfaces answer it with 501 in their own error shape. */
export class FeatureNotImplemented extends Error {
  constructor(
    readonly feature: string,
    readonly field: string,
  ) {
    super(`${field}: ${feature} is not implemented in Kiln yet`);
    this.name = 'FeatureNotImplemented';
  }
}

interface FeatureRule {
  /** Whether the spec asks for it. */
  requested: (spec: JobSpec) => boolean;
  /** The feature as the error names it. */
  describe: (spec: JobSpec) => string;
  /** The native /v1 field, used when the spec does not say where the request came from. */
  field: string;
}

const nonZero = (v: number | undefined) => v !== undefined && v !== 0;

/** Every optional feature of the job model, in the order requests are checked. */
const FEATURES = {
  loras: {
    requested: (s) => (s.loras?.length ?? 0) > 0,
    describe: (s) => (s.loras?.[0]?.tag ? `LoRA (prompt tag ${s.loras[0].tag})` : 'LoRA'),
    field: 'loras',
  },
  hypernetworks: { requested: (s) => (s.hypernetworks?.length ?? 0) > 0, describe: () => 'hypernetworks', field: 'hypernetworks' },
  hires: { requested: (s) => s.hires !== undefined, describe: () => 'hires fix', field: 'hires' },
  restoreFaces: { requested: (s) => s.restoreFaces !== undefined, describe: () => 'face restoration', field: 'restore_faces' },
  tiling: { requested: (s) => s.tiling !== undefined && s.tiling !== false, describe: () => 'tiling', field: 'tiling' },
  deepCache: { requested: (s) => (s.deepCache?.interval ?? 1) > 1, describe: () => 'step reuse (DeepCache)', field: 'deep_cache' },
  sMinUncond: { requested: (s) => nonZero(s.sMinUncond), describe: () => 'negative guidance minimum sigma (s_min_uncond)', field: 's_min_uncond' },
  etaNoiseSeedDelta: { requested: (s) => nonZero(s.etaNoiseSeedDelta), describe: () => 'eta noise seed delta (ENSD)', field: 'eta_noise_seed_delta' },
  vae: { requested: (s) => s.vae !== undefined, describe: () => 'choosing a separate VAE', field: 'vae' },
  transparentBackground: {
    requested: (s) => s.transparentBackground === true,
    describe: () => 'transparent backgrounds (LayerDiffuse)',
    field: 'transparent',
  },
  mask: { requested: (s) => s.mask !== undefined, describe: () => 'inpainting masks', field: 'mask' },
  inputImageCount: {
    requested: (s) => (s.inputImageCount ?? 1) > 1,
    describe: () => 'several input images in one request (img2img takes one)',
    field: 'init_image',
  },
} satisfies Record<string, FeatureRule>;

export type Feature = keyof typeof FEATURES & keyof JobSpec;

/** The optional features an engine can do. */
export type Capabilities = ReadonlySet<Feature>;

/** What the built-in engine does today. */
export const ENGINE_CAPABILITIES: Capabilities = new Set<Feature>([
  'tiling',
  'deepCache',
  'loras',
  'hires',
  'mask',
  'vae',
  'transparentBackground',
  'restoreFaces',
]);

/** Throws FeatureNotImplemented for the first feature the spec asks for that `supported` lacks. */
export function checkCapabilities(spec: JobSpec, supported: Capabilities = ENGINE_CAPABILITIES): void {
  for (const [name, rule] of Object.entries(FEATURES) as Array<[Feature, FeatureRule]>) {
    if (rule.requested(spec) && !supported.has(name)) throw new FeatureNotImplemented(rule.describe(spec), spec.sourceFields?.[name] ?? rule.field);
  }
}

/**
 * What the flow-transformer families (FLUX.1, SD3) cannot do yet, once a request's model is known to be one: their
 * pipeline has no LoRA, hires fix, inpainting, LayerDiffuse, seamless tiling or step reuse (a UNet technique). Everything else they share.
 */
const FAMILY_GAPS: Readonly<Record<string, { label: string; missing: readonly Feature[] }>> = {
  flux: { label: 'FLUX.1', missing: ['loras', 'hires', 'mask', 'transparentBackground', 'tiling', 'deepCache'] },
  sd3: { label: 'SD3', missing: ['loras', 'hires', 'mask', 'transparentBackground', 'tiling', 'deepCache'] },
};

/** Whether a model of this family can do the feature (false only for a known gap of FLUX.1 / SD3). */
export function familyCan(family: string | null | undefined, feature: Feature): boolean {
  const gaps = family ? FAMILY_GAPS[family] : undefined;
  return !gaps?.missing.includes(feature);
}

/** Throws FeatureNotImplemented for the first feature the spec asks for that its model's family cannot do yet. */
export function checkFamilyCapabilities(spec: JobSpec, family: string | null | undefined): void {
  const gaps = family ? FAMILY_GAPS[family] : undefined;
  if (!gaps) return;
  for (const name of gaps.missing) {
    const rule: FeatureRule = FEATURES[name];
    if (rule.requested(spec)) throw new FeatureNotImplemented(`${rule.describe(spec)} on ${gaps.label} models`, spec.sourceFields?.[name] ?? rule.field);
  }
}

/** Every optional feature by name, true when `supported` has it (GET /v1/capabilities shows this to clients). */
export function featureTable(supported: Capabilities = ENGINE_CAPABILITIES): Record<Feature, boolean> {
  return Object.fromEntries((Object.keys(FEATURES) as Feature[]).map((f) => [f, supported.has(f)])) as Record<Feature, boolean>;
}
