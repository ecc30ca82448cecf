// A loaded model: its weights (lazy), tokenizers and onnxruntime sessions, built from cached graphs on
// first use. Each network's graph is keyed by the weights' identity and its build options, so the
// second start of the same model skips the build, and a VAE-encoder graph is only built for img2img.
import { existsSync, statSync } from 'node:fs';
import type { Device, LoadedModelInfo, ModelRef, Tiling } from '../api.ts';
import { buildClipTextEncoder, clipTextGraphOptions, isClipTextBranchSite, type ClipTextOptions } from '../nets/clip-text.ts';
import { getFamily } from '../families/index.ts';
import type { ModelFamily, TextEncoders } from '../families/types.ts';
import { buildUnet, isUnetBranchSite, unetGraphOptions } from '../nets/unet.ts';
import { buildVaeDecoder, buildVaeEncoder, vaeDecoderGraphOptions, vaeEncoderGraphOptions, vaeScaleFactor } from '../nets/vae.ts';
import { buildReporter } from '../onnx/build-progress.ts';
import { defaultCacheDir, getOrBuildGraph, type GraphKey } from '../onnx/cache.ts';
import type { GraphBuilder } from '../onnx/graph.ts';
import { ClipTokenizer } from '../prompt/index.ts';
import { openSession, precisionFor, withExtraInputs, type Session } from '../runtime.ts';
import { applyLoras, branchFeeds, type AppliedLoras, type BranchPatch } from '../weights/lora/index.ts';
import { loadModel, loadVae, type LoadedModel } from '../weights/model.ts';
import { filesIdentity } from '../weights/hash.ts';
import type { EmbeddingSettings, LoraSettings } from '../api.ts';
import { applyEmbeddings, type AppliedEmbeddings } from '../weights/embeddings.ts';

export interface SessionSettings {
  device: Device;
  cacheDir?: string;
  /** The HF hub cache single-file checkpoints' tokenizers are read from. */
  hfCacheDir?: string;
  threads?: number;
  spinning?: boolean;
  /** Cache onnxruntime's optimised models beside the graphs for faster later starts (CPU; default true). */
  cacheOptimized?: boolean;
}

/** LoRA combinations whose sessions stay in memory per model (each is a full UNet session; the oldest is freed). */
const MAX_LORA_VARIANTS = 2;

/** Separate VAEs whose sessions stay in memory per model (the oldest is freed). */
const MAX_VAE_VARIANTS = 2;

/** A separate VAE of a view (withVae): its weights, config and graph-key material (the files' identity). */
interface VaeOverride {
  path: string;
  vae: LoadedModel['vae'];
  vaeConfig: LoadedModel['vaeConfig'];
  identity: string;
}

/** What a model and its LoRA/VAE views share: the sessions, and the LoRA and VAE variants in use, oldest first. */
interface SharedSessions {
  sessions: Map<string, Promise<Session>>;
  loraVariants: Array<{ id: string; sessionIds: Set<string> }>;
  vaeVariants: Array<{ id: string; sessionIds: Set<string> }>;
  /** Separate VAEs read so far, by path, size and mtime (headers only; the weights stay lazy). */
  vaes: Map<string, VaeOverride>;
  /** The model the views were made from: the one the pool counts users and last use on. */
  root?: ModelSessions;
}

export class ModelSessions implements TextEncoders {
  /** Milliseconds spent building graphs and creating sessions, for timings. */
  buildMs = 0;
  lastUsed = Date.now();
  /** Generations using this model right now; a model in use is never freed. */
  users = 0;

  readonly family: ModelFamily;

  private constructor(
    readonly ref: ModelRef,
    readonly model: LoadedModel,
    readonly tokenizers: ClipTokenizer[],
    readonly settings: SessionSettings,
    private readonly shared: SharedSessions = { sessions: new Map(), loraVariants: [], vaeVariants: [], vaes: new Map() },
    /** Set on a LoRA view (withAdapters): the merged weights and their graph-key material. */
    readonly loras?: AppliedLoras,
    /** Set on a view with textual-inversion embeddings: extended token tables and tokenizers. */
    readonly embeddings?: AppliedEmbeddings,
    /** Set on a view with a separate VAE (withVae): `model` already carries its weights and config. */
    private readonly vaeOverride?: VaeOverride,
  ) {
    this.family = getFamily(model.family);
    shared.root ??= this;
  }

  /** The model this view was made from (itself for a loaded model): the pool counts its users. */
  get root(): ModelSessions {
    return this.shared.root ?? this;
  }

  /**
   * This model with a separate VAE file (diffusers folder or .safetensors): a view sharing this model's text
   * encoder and UNet sessions, whose VAE graphs are keyed by the VAE files' identity. Throws ModelFileError
   * when the file is not a VAE or its latent channels do not fit this model.
   */
  withVae(path: string): ModelSessions {
    // Keyed by the file's size and mtime too, so a VAE file replaced on disk is read again.
    const st = existsSync(path) ? statSync(path) : undefined;
    const key = `${path}:${st?.size}:${st?.mtimeMs}`;
    let v = this.shared.vaes.get(key);
    if (!v) {
      const root = this.root.model;
      const { weights, config } = loadVae(path, root.family, root.vaeConfig);
      v = {
        path,
        vae: weights,
        vaeConfig: config,
        identity: filesIdentity(
          weights.files().map((f) => f.file),
          JSON.stringify(config),
        ),
      };
      this.shared.vaes.set(key, v);
    }
    const model = { ...this.model, vae: v.vae, vaeConfig: v.vaeConfig };
    return new ModelSessions(this.ref, model, this.tokenizers, this.settings, this.shared, this.loras, this.embeddings, v);
  }

  /**
   * This model with LoRAs applied: a view sharing this model's sessions. Plain low-rank modules (kohya/LoCon,
   * diffusers, PEFT) become LoRA branches: the component runs its branch graph (built once per model) with the
   * factors as inputs, so switching among them builds nothing. Other formats (LoHa, LoKr, (IA)3, full/diff,
   * DoRA) are merged, and those graphs are keyed by the LoRA files' identity and multipliers (one cached graph
   * per such combination); untouched components keep their plain graphs. `opts.merge` merges everything (tests).
   */
  withAdapters(loras: LoraSettings[], embeddings: EmbeddingSettings[] = [], opts: { merge?: boolean } = {}): ModelSessions {
    const branchSites = opts.merge ? undefined : { unet: isUnetBranchSite, textEncoder: isClipTextBranchSite };
    const applied = loras.length ? applyLoras(this.model, loras, { branchSites }) : undefined;
    const encoders = this.model.textEncoders.map((te, i) => ({ weights: applied?.textEncoders[i] ?? te.weights, tokenizer: this.tokenizer(i) }));
    const ti = embeddings.length ? applyEmbeddings(this.model, encoders, embeddings) : undefined;
    return new ModelSessions(this.ref, this.model, this.tokenizers, this.settings, this.shared, applied, ti, this.vaeOverride);
  }

  private get sessions(): Map<string, Promise<Session>> {
    return this.shared.sessions;
  }

  static async load(ref: ModelRef, settings: SessionSettings): Promise<ModelSessions> {
    const model = await loadModel(ref, { hfCacheDir: settings.hfCacheDir });
    const tokenizers = await Promise.all(model.tokenizerDirs.map((dir) => ClipTokenizer.fromDir(dir)));
    return new ModelSessions(ref, model, tokenizers, settings);
  }

  /** A model already in memory (the benchmark's random-weight models): no files read. */
  static fromModel(model: LoadedModel, tokenizers: ClipTokenizer[], settings: SessionSettings): ModelSessions {
    return new ModelSessions({ path: model.path }, model, tokenizers, settings);
  }

  get latentChannels(): number {
    return this.model.vaeConfig.latent_channels;
  }
  get latentFactor(): number {
    return vaeScaleFactor(this.model.vaeConfig);
  }
  get scalingFactor(): number {
    return this.model.vaeConfig.scaling_factor;
  }
  /** Default image size in pixels: the UNet's sample size times the latent factor. */
  get nativeSize(): number {
    return this.model.unetConfig.sample_size * this.latentFactor;
  }

  private vaePrecision(): 'fp32' | 'fp16' {
    return this.family.vae.needsFp32(this.model.vaeConfig) ? 'fp32' : precisionFor(this.settings.device);
  }

  get textEncoderCount(): number {
    return this.model.textEncoders.length;
  }

  tokenizer(index: number): ClipTokenizer {
    const t = this.embeddings?.textEncoders[index]?.tokenizer ?? this.tokenizers[index];
    if (!t) throw new Error(`internal error: model has no tokenizer ${index}`);
    return t;
  }

  textEncoder(index: number, opts: ClipTextOptions): Promise<Session> {
    const part = this.model.textEncoders[index];
    if (!part) throw new Error(`internal error: model has no text encoder ${index}`);
    const ti = this.embeddings?.textEncoders[index];
    const lora = [this.loras?.textEncoderKeys[index], ti?.key].filter(Boolean).join('|') || undefined;
    const weights = ti?.weights ?? this.loras?.textEncoders[index] ?? part.weights;
    const branches = this.loras?.textEncoderBranches[index];
    // The tokenizer says which id ends the text (the pooled output's token).
    const buildOpts = { ...opts, eosTokenId: this.tokenizer(index).eos, ...(branches ? { loraBranches: true } : {}) };
    const options = lora ? { ...clipTextGraphOptions(buildOpts), lora } : clipTextGraphOptions(buildOpts);
    const session = this.session(
      `text-encoder-${index}`,
      this.precision(),
      options,
      (b) => buildClipTextEncoder(b, weights, part.config, buildOpts),
      () => weightBytes(weights, this.precision()),
    );
    return branches ? this.fedOnce(JSON.stringify(['text-encoder', index, options]), session, branches) : session;
  }

  /** This view's LoRA factors fed to a branch graph's session, made once per view and graph. */
  private readonly fed = new Map<string, Promise<Session>>();
  private fedOnce(id: string, session: Promise<Session>, patches: Map<string, BranchPatch[]>): Promise<Session> {
    let s = this.fed.get(id);
    if (!s) {
      s = withBranchFeeds(session, patches);
      s.catch(() => this.fed.delete(id));
      this.fed.set(id, s);
    }
    return s;
  }

  /** The UNet; with a tiling, its seamless variant (a graph and session of its own, built once and cached). */
  unet(tiling?: Tiling): Promise<Session> {
    const branches = this.loras?.unetBranches;
    const opts = { ...this.family.unet.buildOptions, tiling, ...(branches ? { loraBranches: true } : {}) };
    const lora = this.loras?.unetKey;
    const weights = this.loras?.unet ?? this.model.unet;
    const session = this.session(
      'unet',
      this.precision(),
      lora ? { ...unetGraphOptions(opts), lora } : unetGraphOptions(opts),
      (b) => buildUnet(b, weights, this.model.unetConfig as unknown as Record<string, unknown>, opts),
      () => weightBytes(weights, this.precision()),
    );
    return branches ? this.fedOnce(JSON.stringify(['unet', tiling ?? null]), session, branches) : session;
  }

  vaeDecoder(tiling?: Tiling): Promise<Session> {
    const opts = { scalingFactor: this.scalingFactor, tiling };
    return this.session(
      'vae-decoder',
      this.vaePrecision(),
      this.vaeKeyed(vaeDecoderGraphOptions(opts)),
      (b) => buildVaeDecoder(b, this.model.vae, this.model.vaeConfig, opts),
      () => weightBytes(this.model.vae, this.vaePrecision(), (n) => n.startsWith('decoder.') || n.startsWith('post_quant_conv.')),
    );
  }

  vaeEncoder(tiling?: Tiling): Promise<Session> {
    const opts = { tiling };
    return this.session(
      'vae-encoder',
      this.vaePrecision(),
      this.vaeKeyed(vaeEncoderGraphOptions(opts)),
      (b) => buildVaeEncoder(b, this.model.vae, this.model.vaeConfig, opts),
      () => weightBytes(this.model.vae, this.vaePrecision(), (n) => n.startsWith('encoder.') || n.startsWith('quant_conv.')),
    );
  }

  /** A VAE graph's options; on a separate-VAE view, with that VAE's identity (its own cached graph and session). */
  private vaeKeyed(options: Record<string, unknown>): Record<string, unknown> {
    return this.vaeOverride ? { ...options, vae: this.vaeOverride.identity } : options;
  }

  private precision(): 'fp32' | 'fp16' {
    return precisionFor(this.settings.device);
  }

  /** `expectedBytes`: about how many weight bytes the graph holds, for build progress (see onnx/build-progress.ts). */
  private session(
    network: string,
    precision: 'fp32' | 'fp16',
    options: Record<string, unknown>,
    build: (b: GraphBuilder) => void,
    expectedBytes?: () => number,
  ): Promise<Session> {
    this.lastUsed = Date.now();
    const key: GraphKey = { network, weightsIdentity: this.model.identity, precision, options };
    const id = JSON.stringify(key);
    let s = this.sessions.get(id);
    if (!s) {
      s = (async () => {
        const started = Date.now();
        const { modelPath } = getOrBuildGraph(this.settings.cacheDir ?? defaultCacheDir(), key, (b) => {
          // Only a real build reports (a cached graph skips this); the start of the report is the start of the build.
          const reporter = buildReporter(network, expectedBytes?.() ?? 0);
          if (reporter) b.onWeightsWritten = (bytes) => reporter.written(bytes);
          build(b);
          reporter?.done();
        });
        const { device, threads, spinning, cacheOptimized } = this.settings;
        const { session, rejected } = await openSession(modelPath, { device, intraOpThreads: threads, spinning, cacheOptimized: cacheOptimized ?? true });
        // Not an error (the plain graph was used and the cache rewritten), but worth seeing if it keeps happening.
        if (rejected) process.emitWarning(`${network}: cached optimised model refused and rebuilt (${rejected})`, 'KilnCacheWarning');
        this.buildMs += Date.now() - started;
        return session;
      })();
      s.catch(() => this.sessions.delete(id));
      this.sessions.set(id, s);
    }
    if (typeof options.lora === 'string') this.trackLoraVariant(id);
    if (typeof options.vae === 'string') this.trackVariant(this.shared.vaeVariants, options.vae, id, MAX_VAE_VARIANTS);
    return s;
  }

  /** Records a LoRA graph's session under its combination and frees the oldest combinations beyond the cap. */
  private trackLoraVariant(sessionId: string): void {
    const l = this.loras;
    const variantId = JSON.stringify([l?.unetKey, l?.textEncoderKeys, this.embeddings?.textEncoders.map((t) => t.key)]);
    this.trackVariant(this.shared.loraVariants, variantId, sessionId, MAX_LORA_VARIANTS);
  }

  /** Records a session under its variant (LoRA set or separate VAE) and frees the oldest variants beyond `max`. */
  private trackVariant(variants: SharedSessions['loraVariants'], variantId: string, sessionId: string, max: number): void {
    let v = variants.find((x) => x.id === variantId);
    if (!v) {
      v = { id: variantId, sessionIds: new Set() };
      variants.push(v);
    }
    v.sessionIds.add(sessionId);
    // The newest variant moves to the end; a generation uses one variant at a time, so freeing older ones is safe.
    variants.splice(variants.indexOf(v), 1);
    variants.push(v);
    while (variants.length > max) {
      const old = variants.shift()!;
      for (const id of old.sessionIds) {
        if (variants.some((x) => x.sessionIds.has(id))) continue; // still used by a newer combination
        const p = this.sessions.get(id);
        this.sessions.delete(id);
        p?.then((s) => s.release()).catch(() => undefined);
      }
    }
  }

  /** Frees every onnxruntime session (the memory of the model); graphs stay cached on disk. */
  async release(): Promise<void> {
    const all = [...this.sessions.values()];
    this.sessions.clear();
    for (const p of all) {
      try {
        await (await p).release();
      } catch {
        // A session that failed to start has nothing to release.
      }
    }
  }
}

/** The branch graph's session fed with this view's LoRA factors (rank 0 at the sites they do not patch). */
async function withBranchFeeds(session: Promise<Session>, patches: Map<string, BranchPatch[]>): Promise<Session> {
  return withExtraInputs(await session, (inputs) => branchFeeds(inputs, patches));
}

export function loadedModelInfo(ms: ModelSessions): LoadedModelInfo {
  return { path: ms.model.path, name: ms.model.name, family: ms.model.family, prediction: ms.model.prediction, lastUsed: ms.lastUsed };
}

/** The bytes a graph's weights take at `precision`: the elements of the source's tensors (those `include` keeps). */
function weightBytes(source: { names(): string[]; shape(name: string): number[] }, precision: 'fp32' | 'fp16', include?: (name: string) => boolean): number {
  let elements = 0;
  for (const name of source.names()) if (!include || include(name)) elements += source.shape(name).reduce((a, b) => a * b, 1);
  return elements * (precision === 'fp16' ? 2 : 4);
}
