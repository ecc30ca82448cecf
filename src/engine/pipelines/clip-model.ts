// A loaded CLIP model (models/clip_vision/): its vision tower's graph and session, its image processor, and
// its text tower (CLIPModel and OpenCLIP files carry both) with a tokenizer, for the interrogator. Graphs are
// cached on disk like the checkpoints'; sessions live as long as the model pool keeps the model.
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { type Device, ModelFileError, type RawImage } from '../api.ts';
import { buildClipTextEncoder, clipTextGraphOptions, type ClipTextOptions } from '../nets/clip-text.ts';
import { buildClipVisionEncoder, clipVisionGraphOptions } from '../nets/clip-vision.ts';
import { defaultCacheDir, getOrBuildGraph, type GraphKey } from '../onnx/cache.ts';
import type { GraphBuilder } from '../onnx/graph.ts';
import { ClipTokenizer } from '../prompt/index.ts';
import { createSession, precisionFor, runSession, type Session } from '../runtime.ts';
import { openClipModelWeights, type ClipModelWeights } from '../weights/clip-keys.ts';
import { filesIdentity } from '../weights/hash.ts';
import { hasTokenizerFiles, standardTokenizerDir } from '../weights/tokenizers.ts';
import { clipPreprocess, clipProcessingFromConfig, defaultClipProcessing, type ClipImageProcessing } from './clip-preprocess.ts';

export interface ClipModelSettings {
  device: Device;
  cacheDir?: string;
  hfCacheDir?: string;
  threads?: number;
}

/** What the server lists about a CLIP model (read from the file headers only). */
export interface ClipModelSummary {
  layout: 'transformers' | 'openclip';
  imageSize: number;
  /** Width of the image embedding. */
  projectionDim: number;
  /** Width of the text embedding when the file has a text tower (needed by the interrogator), else undefined. */
  textProjectionDim?: number;
}

/** Reads a CLIP model's headers: its layout and widths, or ModelFileError naming the file and what is wrong. */
export function inspectClipModel(path: string): ClipModelSummary {
  const m = openClipModelWeights(path);
  return {
    layout: m.layout,
    imageSize: m.config.vision.image_size,
    projectionDim: m.config.vision.projection_dim,
    textProjectionDim: m.config.text?.projection_dim,
  };
}

/** A text tower the interrogator can rank phrases with: token ids in, L2-normalised embeddings out. */
export interface TextTower {
  /** Identifies the weights (for the phrase-embedding cache). */
  identity: string;
  tokenizer: ClipTokenizer;
  /** Width of the projected text embedding. */
  dim: number;
  /** Projected text embeddings [ids.length, dim] of CLIP's pooled (EOS) token, not normalised. */
  embed(ids: number[][], sequenceLength: number): Promise<{ data: Float32Array; dim: number }>;
}

export class ClipModel {
  private readonly sessions = new Map<string, Promise<Session>>();
  /** L2-normalised phrase embeddings by phrase-list hash (the interrogator's per-model cache). */
  readonly phraseEmbeddings = new Map<string, Float32Array>();
  lastUsed = Date.now();

  private constructor(
    readonly path: string,
    readonly weights: ClipModelWeights,
    readonly processing: ClipImageProcessing,
    readonly identity: string,
    private readonly settings: ClipModelSettings,
    private readonly textTokenizer: ClipTokenizer | undefined,
  ) {}

  static async open(path: string, settings: ClipModelSettings): Promise<ClipModel> {
    if (!existsSync(path)) throw new ModelFileError(path, 'does not exist');
    const weights = openClipModelWeights(path);
    const size = weights.config.vision.image_size;
    const processing = weights.preprocessor ? clipProcessingFromConfig(weights.preprocessor, size) : defaultClipProcessing(size);
    const identity = filesIdentity(
      weights.files.map((f) => f.file),
      JSON.stringify(weights.config),
    );
    let tokenizer: ClipTokenizer | undefined;
    if (weights.weights.text) {
      // Every CLIP shares OpenAI's BPE vocabulary; a folder's own files win, else the standard CLIP-L files.
      const dir = weights.dir && hasTokenizerFiles(weights.dir) ? weights.dir : await standardTokenizerDir('clip-l', { hfCacheDir: settings.hfCacheDir });
      tokenizer = await ClipTokenizer.fromDir(dir);
    }
    return new ClipModel(path, weights, processing, identity, settings, tokenizer);
  }

  get projectionDim(): number {
    return this.weights.config.vision.projection_dim;
  }

  /** image_embeds of one image: CLIPImageProcessor then the vision tower ([projectionDim], not normalised). */
  async imageEmbeds(image: RawImage): Promise<Float32Array> {
    const session = await this.session('clip-vision', clipVisionGraphOptions({}), (b) =>
      buildClipVisionEncoder(b, this.weights.weights.vision, this.weights.config.vision),
    );
    const out = await runSession(session, { pixel_values: clipPreprocess(image, this.processing) });
    return out.image_embeds!.data;
  }

  /** The model's own text tower, or undefined for a vision-only file. */
  textTower(): TextTower | undefined {
    const weights = this.weights.weights.text;
    const config = this.weights.config.text;
    const tokenizer = this.textTokenizer;
    if (!weights || !config || !tokenizer) return undefined;
    return {
      identity: `${this.identity}:text`,
      tokenizer,
      dim: config.projection_dim,
      embed: async (ids, sequenceLength) => {
        const opts: ClipTextOptions = { hidden: false, textEmbeds: true, sequenceLength };
        const session = await this.session('clip-text', clipTextGraphOptions(opts), (b) => buildClipTextEncoder(b, weights, config, opts));
        const flat = BigInt64Array.from(ids.flat().map((i) => BigInt(i)));
        const out = await runSession(session, { input_ids: { int64: flat, shape: [ids.length, sequenceLength] } });
        return { data: out.text_embeds!.data, dim: config.projection_dim };
      },
    };
  }

  private session(network: string, options: Record<string, unknown>, build: (b: GraphBuilder) => void): Promise<Session> {
    this.lastUsed = Date.now();
    const precision = precisionFor(this.settings.device);
    const key: GraphKey = { network, weightsIdentity: this.identity, precision, options };
    const id = JSON.stringify(key);
    let s = this.sessions.get(id);
    if (!s) {
      s = (async () => {
        const { modelPath } = getOrBuildGraph(this.settings.cacheDir ?? defaultCacheDir(), key, build);
        return createSession(modelPath, { device: this.settings.device, intraOpThreads: this.settings.threads });
      })();
      s.catch(() => this.sessions.delete(id));
      this.sessions.set(id, s);
    }
    return s;
  }

  async release(): Promise<void> {
    const all = [...this.sessions.values()];
    this.sessions.clear();
    for (const p of all) await (await p.catch(() => undefined))?.release();
  }
}

/**
 * The phrase embeddings of `phrases` through `tower`, L2-normalised, [phrases.length * dim]: from memory, else
 * from the disk cache (`<cacheDir>/clip-phrases/`), else computed in batches and stored in both.
 */
export async function phraseEmbeddings(
  tower: TextTower,
  phrases: string[],
  memory: Map<string, Float32Array>,
  cacheDir: string | undefined,
): Promise<Float32Array> {
  const key = createHash('sha256').update(tower.identity).update('\0').update(phrases.join('\n')).digest('hex').slice(0, 32);
  const hit = memory.get(key);
  if (hit) return hit;
  const dir = join(cacheDir ?? defaultCacheDir(), '..', 'clip-phrases');
  const file = join(dir, `${key}.f32`);
  if (existsSync(file)) {
    const bytes = readFileSync(file);
    const data = new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
    // A file of another size (truncated, or written by another version) is recomputed and replaced.
    if (data.length === phrases.length * tower.dim) {
      memory.set(key, data);
      return data;
    }
  }
  const data = await computePhraseEmbeddings(tower, phrases);
  memory.set(key, data);
  try {
    mkdirSync(dir, { recursive: true });
    const tmp = `${file}.tmp-${process.pid}`;
    writeFileSync(tmp, new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
    renameSync(tmp, file);
  } catch {
    // A read-only cache only costs the recomputation next time.
  }
  return data;
}

/** Phrases per text-encoder call. */
const PHRASE_BATCH = 64;
/**
 * Sequence lengths the text graph is built for. The causal mask makes the pooled (EOS) token's output depend only
 * on the tokens before it, so a phrase padded to 16 gives the same embedding as padded to CLIP's 77.
 */
const SEQUENCE_BUCKETS = [16, 32, 77];

async function computePhraseEmbeddings(tower: TextTower, phrases: string[]): Promise<Float32Array> {
  const t = tower.tokenizer;
  // clip.tokenize(truncate=True): bos, at most 75 tokens, eos.
  const ids = phrases.map((p) => [t.bos, ...t.encode(p).slice(0, 75), t.eos]);
  const order = ids.map((_, i) => i).sort((a, b) => ids[a]!.length - ids[b]!.length);
  let out: Float32Array | undefined;
  let dim = 0;
  for (let start = 0; start < order.length; start += PHRASE_BATCH) {
    const batch = order.slice(start, start + PHRASE_BATCH);
    const longest = Math.max(...batch.map((i) => ids[i]!.length));
    const seq = SEQUENCE_BUCKETS.find((s) => s >= longest) ?? 77;
    const padded = batch.map((i) => [...ids[i]!, ...new Array<number>(seq - ids[i]!.length).fill(t.pad)]);
    const r = await tower.embed(padded, seq);
    dim = r.dim;
    out ??= new Float32Array(phrases.length * dim);
    batch.forEach((phrase, row) => {
      const v = r.data.subarray(row * dim, (row + 1) * dim);
      out!.set(normalised(v), phrase * dim);
    });
  }
  return out ?? new Float32Array(0);
}

/** v / |v| (a zero vector stays zero). */
export function normalised(v: Float32Array): Float32Array {
  let n = 0;
  for (const x of v) n += x * x;
  const inv = n > 0 ? 1 / Math.sqrt(n) : 0;
  return v.map((x) => x * inv);
}
