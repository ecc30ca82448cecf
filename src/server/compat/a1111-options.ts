// Which A1111 settings (/sdapi/v1/options) Kiln stores: only the ones it acts on, each checked for type and range,
// so a client can neither grow the server's memory nor store a value that breaks GET for others; other keys are
// ignored (and named in a response header). Where they are kept, per key, is src/server/key-settings.ts.

/** What a stored setting may hold, checked on every write. Returns the value to store or a message. */
type Check = (v: unknown) => { value: unknown } | { error: string };

const intIn =
  (min: number, max: number): Check =>
  (v) =>
    typeof v === 'number' && Number.isInteger(v) && v >= min && v <= max ? { value: v } : { error: `must be an integer from ${min} to ${max}` };

const shortString =
  (max: number): Check =>
  (v) =>
    typeof v === 'string' && v.length <= max ? { value: v } : { error: `must be a string of at most ${max} characters` };

export const SAMPLE_FORMATS = ['png', 'jpg', 'jpeg', 'webp'] as const;

/** The settings Kiln reads (see specFromA1111), with their A1111 ranges. sd_model_checkpoint is handled apart. */
export const SETTABLE_OPTIONS: Readonly<Record<string, Check>> = {
  samples_format: (v) =>
    typeof v === 'string' && (SAMPLE_FORMATS as readonly string[]).includes(v.toLowerCase()) ? { value: v } : { error: 'must be png, jpg or webp' },
  jpeg_quality: intIn(1, 100),
  CLIP_stop_at_last_layers: intIn(1, 12),
  eta_noise_seed_delta: intIn(0, 4_294_967_295),
  sd_vae: shortString(256),
  face_restoration_model: (v) => (v === 'CodeFormer' || v === 'GFPGAN' ? { value: v } : { error: 'must be "CodeFormer" or "GFPGAN"' }),
  code_former_weight: (v) => (typeof v === 'number' && v >= 0 && v <= 1 ? { value: v } : { error: 'must be a number from 0 to 1' }),
};

/** Longest checkpoint name accepted (titles are "file.safetensors [hash]"). */
export const MAX_CHECKPOINT_CHARS = 512;

export interface ParsedOptions {
  /** Checked values of known keys. */
  values: Record<string, unknown>;
  checkpoint?: string;
  /** Keys that are not stored (unknown to Kiln, or reported by the server only). */
  ignored: string[];
}

export class OptionsError extends Error {
  constructor(
    readonly field: string,
    message: string,
  ) {
    super(`${field}: ${message}`);
    this.name = 'OptionsError';
  }
}

/**
 * Splits a POSTed settings object into checked known values, the checkpoint name and ignored keys. Throws
 * OptionsError naming the first bad value (strict), or drops bad values (lenient: settings a finished job
 * already ran with).
 */
export function parseOptions(body: Record<string, unknown>, strict = true): ParsedOptions {
  const out: ParsedOptions = { values: {}, ignored: [] };
  for (const [key, value] of Object.entries(body)) {
    if (key === 'sd_model_checkpoint') {
      if (typeof value === 'string' && value.length > 0 && value.length <= MAX_CHECKPOINT_CHARS) out.checkpoint = value;
      else if (strict) throw new OptionsError(key, `must be a checkpoint title or name (a string of 1 to ${MAX_CHECKPOINT_CHARS} characters)`);
      continue;
    }
    const check = Object.hasOwn(SETTABLE_OPTIONS, key) ? SETTABLE_OPTIONS[key] : undefined;
    if (!check) {
      out.ignored.push(key);
      continue;
    }
    const r = check(value);
    if ('value' in r) out.values[key] = r.value;
    else if (strict) throw new OptionsError(key, r.error);
  }
  return out;
}
