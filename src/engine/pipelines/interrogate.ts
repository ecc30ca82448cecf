// A1111's CLIP interrogator (modules/interrogate.py) without its BLIP caption: the image's CLIP embedding,
// L2-normalised, against each phrase category's normalised text embeddings; per category
// softmax(100 * cosine) over its phrases (the first `dictLimit`), the top N appended as ", phrase" (or
// ", (phrase:0.123)" with ranks). Kiln has no captioning model, so the prompt is the phrases alone.
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { KilnInputError, type RawImage } from '../api.ts';
import { type ClipModel, normalised, phraseEmbeddings, type TextTower } from './clip-model.ts';

export interface PhraseCategory {
  name: string;
  /** How many of its best phrases the prompt takes (A1111: `.topN.` in the file name, else 1). */
  topn: number;
  items: string[];
}

export interface InterrogateRequest {
  image: RawImage;
  /** A CLIP model folder or file (models/clip_vision/). */
  clip: { path: string; name?: string };
  /** A checkpoint whose text encoder may serve as the text tower when the CLIP file has none. */
  model?: { path: string; vae?: string; tokenizerDir?: string };
  /** Phrase lists; absent = Kiln's built-in mediums, movements and flavors (src/engine/data/interrogate). */
  categories?: PhraseCategory[];
  /** A1111 interrogate_return_ranks: "(phrase:probability)" instead of the bare phrase. */
  returnRanks?: boolean;
  /** A1111 interrogate_clip_dict_limit: only the first this many phrases of each list (0 = all; default 1500). */
  dictLimit?: number;
}

export interface PhraseMatch {
  phrase: string;
  /** The phrase's softmax probability within its category (what A1111 prints with ranks). */
  probability: number;
  /** Cosine similarity between the image and the phrase. */
  similarity: number;
}

export interface InterrogateResult {
  prompt: string;
  categories: Array<{ name: string; matches: PhraseMatch[] }>;
  /** Which text tower ranked the phrases: the CLIP model's own, or a checkpoint's text encoder. */
  textTower: 'clip-model' | 'checkpoint';
  clipModel: string;
}

/** Bounds on phrase lists a request may bring. */
export const INTERROGATE_LIMITS = { categories: 32, phrasesPerCategory: 20000, phraseChars: 300, topn: 20 };
export const A1111_DICT_LIMIT = 1500;

const DATA_DIR = fileURLToPath(new URL('../data/interrogate/', import.meta.url));

/** `name.topN.txt` -> topn N (A1111's category file convention). */
export function categoryFromFile(fileName: string, text: string): PhraseCategory {
  const stem = fileName.replace(/\.txt$/i, '');
  const m = /\.top(\d+)$/.exec(stem);
  const items = text
    .split(/\r?\n/)
    .map((l) => l.trim())
    .filter((l) => l.length > 0);
  return { name: m ? stem.slice(0, m.index) : stem, topn: m ? Number(m[1]) : 1, items };
}

let builtIn: PhraseCategory[] | undefined;
export function builtInCategories(): PhraseCategory[] {
  builtIn ??= readdirSync(DATA_DIR)
    .filter((f) => f.endsWith('.txt'))
    .sort()
    .map((f) => categoryFromFile(f, readFileSync(join(DATA_DIR, f), 'utf8')));
  return builtIn;
}

function checkCategories(categories: PhraseCategory[]): void {
  const L = INTERROGATE_LIMITS;
  if (categories.length === 0) throw new KilnInputError('there are no phrase categories to rank', 'categories');
  if (categories.length > L.categories) throw new KilnInputError(`${categories.length} phrase categories; at most ${L.categories}`, 'categories');
  for (const c of categories) {
    if (c.items.length === 0) throw new KilnInputError(`category "${c.name}" has no phrases`, 'categories');
    if (c.items.length > L.phrasesPerCategory)
      throw new KilnInputError(`category "${c.name}" has ${c.items.length} phrases; at most ${L.phrasesPerCategory}`, 'categories');
    if (!(Number.isInteger(c.topn) && c.topn >= 1 && c.topn <= L.topn))
      throw new KilnInputError(`category "${c.name}": topn must be 1 to ${L.topn}`, 'categories');
    const long = c.items.find((p) => p.length > L.phraseChars);
    if (long !== undefined) throw new KilnInputError(`category "${c.name}" has a phrase longer than ${L.phraseChars} characters`, 'categories');
  }
}

/** Ranks `items` (embeddings `text`, normalised, [n * dim]) against the normalised image embedding. */
export function rankPhrases(image: Float32Array, text: Float32Array, items: string[], topn: number): PhraseMatch[] {
  const dim = image.length;
  const sims = items.map((_, i) => {
    let s = 0;
    for (let k = 0; k < dim; k++) s += image[k]! * text[i * dim + k]!;
    return s;
  });
  // softmax(100 * cosine) as A1111 (logit scale 100), computed stably.
  const max = Math.max(...sims);
  const exps = sims.map((s) => Math.exp(100 * (s - max)));
  const total = exps.reduce((a, b) => a + b, 0);
  const order = sims.map((_, i) => i).sort((a, b) => sims[b]! - sims[a]! || a - b);
  return order.slice(0, Math.min(topn, items.length)).map((i) => ({ phrase: items[i]!, probability: exps[i]! / total, similarity: sims[i]! }));
}

export async function interrogate(
  req: InterrogateRequest,
  clip: ClipModel,
  checkpointTower: (projectionDim: number) => Promise<TextTower | undefined>,
  cacheDir: string | undefined,
): Promise<InterrogateResult> {
  const categories = req.categories ?? builtInCategories();
  checkCategories(categories);
  let tower = clip.textTower();
  let kind: InterrogateResult['textTower'] = 'clip-model';
  if (!tower) {
    tower = await checkpointTower(clip.projectionDim);
    kind = 'checkpoint';
  }
  if (!tower) {
    throw new KilnInputError(
      `the CLIP model "${req.clip.name ?? req.clip.path}" has no text tower, and no checkpoint text encoder projects to its ${clip.projectionDim}-wide embedding space; ` +
        'put a full CLIP model (transformers CLIPModel folder, e.g. openai/clip-vit-large-patch14, or an OpenCLIP file) in models/clip_vision/',
      'clip_model',
    );
  }
  const image = normalised(await clip.imageEmbeds(req.image));
  const limit = req.dictLimit ?? A1111_DICT_LIMIT;
  const ranked: InterrogateResult['categories'] = [];
  for (const c of categories) {
    const items = limit > 0 ? c.items.slice(0, limit) : c.items;
    const text = await phraseEmbeddings(tower, items, clip.phraseEmbeddings, cacheDir);
    if (text.length !== items.length * image.length) {
      throw new KilnInputError(`the text tower's embeddings are ${text.length / items.length} wide, the image's ${image.length}`, 'clip_model');
    }
    ranked.push({ name: c.name, matches: rankPhrases(image, text, items, c.topn) });
  }
  const parts = ranked.flatMap((c) => c.matches.map((m) => (req.returnRanks ? `(${m.phrase}:${m.probability.toFixed(3)})` : m.phrase)));
  return { prompt: parts.join(', '), categories: ranked, textTower: kind, clipModel: req.clip.name ?? req.clip.path };
}
