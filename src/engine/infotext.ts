// A1111's "parameters" text: the generation settings embedded in every image, in the exact format
// AUTOMATIC1111 writes (modules/processing.py create_infotext), so its PNG Info tab and other tools read it.

export interface InfotextFields {
  prompt: string;
  negativePrompt: string;
  steps: number;
  sampler: string;
  /** Omitted when the schedule is the sampler's automatic one. */
  scheduleType?: string;
  cfgScale: number;
  /** FLUX.1 dev's distilled guidance, written as Forge does ("Distilled CFG Scale", after "CFG scale"). */
  distilledCfgScale?: number;
  seed: number;
  /** A1111 "Face restoration": the restorer's name when faces were restored. */
  faceRestoration?: string;
  width: number;
  height: number;
  modelHash?: string;
  modelName?: string;
  denoisingStrength?: number;
  clipSkip?: number;
  subseed?: number;
  subseedStrength?: number;
  seedResizeFromW?: number;
  seedResizeFromH?: number;
  eta?: number;
  rng?: string;
  refiner?: string;
  refinerSwitchAt?: number;
  /** Seamless tiling: 'xy' is A1111's "Tiling: True"; one axis is written as "Tile X"/"Tile Y" (asymmetric tiling). */
  tiling?: 'xy' | 'x' | 'y';
  /** Step reuse (DeepCache), written only when on. */
  deepCache?: { interval: number; branch: number };
  /** A1111 "Lora hashes": `name: shorthash, ...` (written quoted). */
  loraHashes?: string;
  /** A1111 "Noise multiplier" (img2img initial_noise_multiplier, written only when not 1). */
  noiseMultiplier?: number;
  /** Hires fix (A1111 extra_generation_params). */
  hiresSampler?: string;
  hiresScheduleType?: string;
  hiresPrompt?: string;
  hiresNegativePrompt?: string;
  hiresCfg?: number;
  hiresUpscale?: number;
  hiresResize?: string;
  hiresSteps?: number;
  hiresUpscaler?: string;
  /** Stage-specific parameters (inpainting's Mask blur, Masked content, ...), written before Version in this order. */
  extra?: [string, string | number][];
  version?: string;
}

/** A1111's quote(): values holding ',', ':' or a newline are written as JSON strings. */
export function quoteInfotextValue(value: string): string {
  if (!value.includes(',') && !value.includes('\n') && !value.includes(':')) return value;
  return JSON.stringify(value);
}

/** Numbers as A1111 prints them: integers without a decimal point ("CFG scale: 7"), others as given ("7.5"). */
function num(x: number): string {
  return Number.isInteger(x) ? String(x) : String(Number(x.toPrecision(12)));
}

export function buildInfotext(f: InfotextFields): string {
  const params: [string, string | number | undefined][] = [
    ['Steps', f.steps],
    ['Sampler', f.sampler],
    ['Schedule type', f.scheduleType],
    ['CFG scale', num(f.cfgScale)],
    ['Distilled CFG Scale', f.distilledCfgScale !== undefined ? num(f.distilledCfgScale) : undefined],
    ['Seed', f.seed],
    ['Face restoration', f.faceRestoration],
    ['Size', `${f.width}x${f.height}`],
    ['Model hash', f.modelHash],
    ['Model', f.modelName],
    ['Variation seed', f.subseedStrength ? f.subseed : undefined],
    ['Variation seed strength', f.subseedStrength ? num(f.subseedStrength) : undefined],
    [
      'Seed resize from',
      f.seedResizeFromW && f.seedResizeFromH && f.seedResizeFromW > 0 && f.seedResizeFromH > 0 ? `${f.seedResizeFromW}x${f.seedResizeFromH}` : undefined,
    ],
    ['Denoising strength', f.denoisingStrength !== undefined ? num(f.denoisingStrength) : undefined],
    ['Clip skip', f.clipSkip && f.clipSkip > 1 ? f.clipSkip : undefined],
    ['Eta', f.eta !== undefined ? num(f.eta) : undefined],
    ['RNG', f.rng && f.rng !== 'cpu' ? (f.rng === 'philox' ? 'NV' : f.rng) : undefined],
    ['Tiling', f.tiling === 'xy' ? 'True' : undefined],
    ['Tile X', f.tiling === 'x' || f.tiling === 'y' ? (f.tiling === 'x' ? 'True' : 'False') : undefined],
    ['Tile Y', f.tiling === 'x' || f.tiling === 'y' ? (f.tiling === 'y' ? 'True' : 'False') : undefined],
    ['DeepCache interval', f.deepCache?.interval],
    ['DeepCache branch', f.deepCache?.branch],
    ['Refiner', f.refiner],
    ['Refiner switch at', f.refinerSwitchAt !== undefined && f.refiner ? num(f.refinerSwitchAt) : undefined],
    ['Hires sampler', f.hiresSampler],
    ['Hires schedule type', f.hiresScheduleType],
    ['Hires prompt', f.hiresPrompt],
    ['Hires negative prompt', f.hiresNegativePrompt],
    ['Hires CFG Scale', f.hiresCfg !== undefined ? num(f.hiresCfg) : undefined],
    ['Hires upscale', f.hiresUpscale !== undefined ? num(f.hiresUpscale) : undefined],
    ['Hires resize', f.hiresResize],
    ['Hires steps', f.hiresSteps],
    ['Hires upscaler', f.hiresUpscaler],
    ...(f.extra ?? []),
    ['Lora hashes', f.loraHashes],
    ['Noise multiplier', f.noiseMultiplier !== undefined && f.noiseMultiplier !== 1 ? num(f.noiseMultiplier) : undefined],
    ['Version', f.version],
  ];
  const line = params
    .filter(([, v]) => v !== undefined && v !== '')
    .map(([k, v]) => `${k}: ${quoteInfotextValue(String(v))}`)
    .join(', ');
  const negative = f.negativePrompt ? `\nNegative prompt: ${f.negativePrompt}` : '';
  return `${f.prompt}${negative}\n${line}`;
}

/** Parses A1111 parameters text back into prompt, negative prompt and a key/value map (for png-info). */
export function parseInfotext(text: string): { prompt: string; negativePrompt: string; params: Record<string, string> } {
  const lines = text.trim().split('\n');
  let last = lines[lines.length - 1] ?? '';
  const params: Record<string, string> = {};
  const re = /\s*([\w ]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)/g;
  const found = [...last.matchAll(re)];
  if (found.length >= 3) {
    lines.pop();
    for (const m of found) {
      const v = m[2]!.trim();
      params[m[1]!.trim()] = v.startsWith('"') ? (JSON.parse(v) as string) : v;
    }
  } else last = '';
  const prompt: string[] = [];
  const negative: string[] = [];
  let inNegative = false;
  for (const line of lines) {
    if (line.startsWith('Negative prompt:')) {
      inNegative = true;
      negative.push(line.slice('Negative prompt:'.length).trim());
    } else if (inNegative) negative.push(line);
    else prompt.push(line);
  }
  return { prompt: prompt.join('\n'), negativePrompt: negative.join('\n'), params };
}
