// CLIP models in models/clip_vision/ (folders such as openai/clip-vit-base-patch32 or single .safetensors files,
// as ComfyUI keeps them) and the interrogator's phrase lists in models/interrogate/*.txt (as A1111's interrogate/
// folder). Files the engine cannot read are left out of every listing, and naming one is a 400 that says why.
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { categoryFromFile, inspectClipModel, INTERROGATE_LIMITS, type ClipModelSummary, type PhraseCategory } from '../../engine/index.ts';
import { SpecError } from '../../queue/job-spec.ts';
import type { ModelRegistry } from './registry.ts';
import { InspectedFiles } from './inspected-files.ts';

export interface ClipVisionFile extends ClipModelSummary {
  name: string;
  /** Absolute path (never shown to clients). */
  path: string;
  relativePath: string;
}

/** What to do when there is no CLIP model: the message of every "missing" 400. */
export const CLIP_VISION_HINT =
  "put a CLIP model in the models folder's clip_vision/ subfolder: a transformers folder (config.json + model.safetensors, e.g. openai/clip-vit-base-patch32 as seed 003 used, or openai/clip-vit-large-patch14 as A1111's interrogator uses) or a single .safetensors (ComfyUI clip_vision files)";

export class ClipVisionCatalog {
  private readonly inspected: InspectedFiles<ClipVisionFile>;

  constructor(
    models: ModelRegistry,
    private readonly modelsDir: string,
  ) {
    this.inspected = new InspectedFiles(models, modelsDir, 'clip_vision', (e, relativePath) => ({
      name: e.name,
      path: e.path,
      relativePath,
      ...inspectClipModel(e.path),
    }));
  }

  /** CLIP models the engine can read. */
  files(): ClipVisionFile[] {
    return this.inspected.readable();
  }

  /**
   * The model a request names, or the server's choice: for interrogation the first (by name) with its own text
   * tower, else the first. Throws SpecError(field) naming what is available, or what to put where.
   */
  resolve(name: string | undefined, kind: 'embed-image' | 'interrogate', field = 'clip_model'): ClipVisionFile {
    const all = this.inspected.all();
    if (name !== undefined) {
      const found = all.find((i) => (i.ok ? i.file.name : i.name) === name);
      if (found?.ok) return found.file;
      if (found) throw new SpecError(field, `the CLIP model "${name}" cannot be used: ${found.reason}`);
      const names = this.files().map((f) => f.name);
      throw new SpecError(field, `unknown CLIP model "${name}"; ${names.length ? `available: ${names.join(', ')}` : `none is installed: ${CLIP_VISION_HINT}`}`);
    }
    const files = this.files();
    const pick = kind === 'interrogate' ? (files.find((f) => f.textProjectionDim !== undefined) ?? files[0]) : files[0];
    if (!pick) {
      const broken = all.flatMap((i) => (i.ok ? [] : [`${i.name} (${i.reason})`]));
      throw new SpecError(field, `no usable CLIP model is installed${broken.length ? ` (unreadable: ${broken.join('; ')})` : ''}; ${CLIP_VISION_HINT}`);
    }
    return pick;
  }

  /** The operator's phrase lists (models/interrogate/*.txt, bounded as the engine checks), or undefined. */
  categories(): PhraseCategory[] | undefined {
    const dir = join(this.modelsDir, 'interrogate');
    if (!existsSync(dir)) return undefined;
    const files = readdirSync(dir)
      .filter((f) => f.toLowerCase().endsWith('.txt'))
      .sort()
      .slice(0, INTERROGATE_LIMITS.categories);
    const out: PhraseCategory[] = [];
    for (const f of files) {
      const path = join(dir, f);
      // A list past the limits would be refused by the engine anyway; a huge file is not even read.
      if (statSync(path).size > INTERROGATE_LIMITS.phrasesPerCategory * (INTERROGATE_LIMITS.phraseChars + 2)) continue;
      const c = categoryFromFile(f, readFileSync(path, 'utf8'));
      c.items = c.items.filter((p) => p.length <= INTERROGATE_LIMITS.phraseChars).slice(0, INTERROGATE_LIMITS.phrasesPerCategory);
      c.topn = Math.min(Math.max(1, c.topn), INTERROGATE_LIMITS.topn);
      if (c.items.length) out.push(c);
    }
    return out.length ? out : undefined;
  }
}
