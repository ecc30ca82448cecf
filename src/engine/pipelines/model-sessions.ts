// A loaded model: its weights (lazy), tokenizers and onnxruntime sessions, built from cached graphs on
// first use. Each network's graph is keyed by the weights' identity and its build options, so the
// second start of the same model skips the build, and a VAE-encoder graph is only built for img2img.
import { existsSync, statSync } from 'node:fs';
import type { Device, LoadedModelInfo, ModelRef, Tiling } from '../api.ts';
import { buildClipTextEncoder, clipTextGraphOptions, isClipTextBranchSite, type ClipTextOptions } from '../nets/clip-text.ts';
import { getFamily, unetFamily } from '../families/index.ts';
import type { FlowFamily, ModelFamily, TextEncoders, UnetFamily } from '../families/types.ts';
import type { FlowTextEncoders } from '../families/flow-types.ts';
import { buildFluxTransformer } from '../nets/flux.ts';
import { buildMmdit } from '../nets/mmdit.ts';
import { buildT5Encoder } from '../nets/t5.ts';
import { T5Tokenizer } from '../prompt/t5-tokenizer.ts';
import { buildUnet, isUnetBranchSite, unetGraphOptions } from '../nets/unet.ts';
import { buildVaeDecoder, buildVaeEncoder, vaeDecoderGraphOptions, vaeEncoderGraphOptions, vaeScaleFactor } from '../nets/vae.ts';
import { buildReporter } from '../onnx/build-progress.ts';
import { defaultCacheDir, getOrBuildGraph, graphKeyHash, type GraphKey } from '../onnx/cache.ts';
import type { GraphBuilder } from '../onnx/graph.ts';
import { ClipTokenizer } from '../prompt/index.ts';
import { openSession, precisionFor, withExtraInputs, type Session } from '../runtime.ts';
import { applyLoras, branchFeeds, type AppliedLoras, type BranchPatch } from '../weights/lora/index.ts';
import { loadModel, loadVae, requireUnetConfig, type LoadedModel } from '../weights/model.ts';
import { filesIdentity } from '../weights/hash.ts';
import type { EmbeddingSettings, LoraSettings } from '../api.ts';
import { applyEmbeddings, type AppliedEmbeddings } from '../weights/embeddings.ts';
import { type QuantizeMode, withQuantize } from '../weights/quantize.ts';
import type { WeightSource } from '../weights/types.ts';
import { Int8Network, VAE_CALIBRATION_DECODES, VAE_INT8_BOUND, type Int8Bound } from '../precision/int8-network.ts';
import type { Int8Layers } from '../precision/int8-graph.ts';

export interface SessionSettings {
  device: Device;
  cacheDir?: string;
  /** The HF hub cache single-file checkpoints' tokenizers are read from. */
  hfCacheDir?: string;
  threads?: number;
  spinning?: boolean;
  /** Cache onnxruntime's optimised models beside the graphs for faster later starts (CPU; default true). */
  cacheOptimized?: boolean;
  /**
   * Weight-only quantisation (--quantize q8|q4): the UNet's Linear layers (attention projections, feed-forward,
   * proj_in/out, embeddings) become MatMulNBits with 8- or 4-bit weights; convolutions stay float. A graph of its own.
   */
  quantize?: QuantizeMode;
  /**
   * UNet precision on the CPU: 'int8' calibrates from the first generations, then runs the int8 graph if it stays
   * within the bound (src/engine/precision/, docs/int8.md). Default 'fp32'. LoRA and tiled UNets stay fp32.
   */
  precision?: 'fp32' | 'int8';
  /** int8 only: UNet calls recorded before the int8 graph is built and checked, and the bounds the UNet and VAE decoder must meet. */
  int8?: { calibrationEvaluations?: number; bound?: Int8Bound; vaeBound?: Int8Bound; layers?: Int8Layers };
}

/** LoRA combinations whose sessions stay in memory per model (each is a full UNet session; the oldest is freed). */
const MAX_LORA_VARIANTS = 2;

/** Step reuse: the whole fp32 UNet graphs (plain, or with the deep feature) kept per model; mixing swaps them. */
const MAX_WHOLE_UNET_VARIANTS = 1;

/** The two graphs of step reuse (DeepCache): the whole UNet that also returns the deep feature, and the shallow one. */
export interface StepReuseSessions {
  full: Session;
  shallow: Session;
}

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
  /** The untiled UNet graphs in use: the plain one or a step-reuse pair (one whole fp32 UNet stays in memory). */
  wholeUnetVariants: Array<{ id: string; sessionIds: Set<string> }>;
  /** Separate VAEs read so far, by path, size and mtime (headers only; the weights stay lazy). */
  vaes: Map<string, VaeOverride>;
  /** The model the views were made from: the one the pool counts users and last use on. */
  root?: ModelSessions;
  /** The int8 UNet and VAE decoder (calibration, then the int8 session), with settings.precision 'int8'. */
  int8?: Int8Network;
  int8Vae?: Int8Network;
}

export class ModelSessions implements TextEncoders, FlowTextEncoders {
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
    private readonly shared: SharedSessions = { sessions: new Map(), loraVariants: [], vaeVariants: [], wholeUnetVariants: [], vaes: new Map() },
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

  /** The family as a UNet family (throws for a flow family: UNet stages never run for those). */
  get unetFamily(): UnetFamily {
    return unetFamily(this.family);
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
  /** Default image size in pixels: the UNet's sample size times the latent factor (a flow family's own default). */
  get nativeSize(): number {
    if (this.family.kind === 'flow') return this.family.flow.nativeSize;
    return requireUnetConfig(this.model).sample_size * this.latentFactor;
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

  // ---------------------------------------------------------------- flow models (Flux, SD3)

  /** The family as a flow family (throws for a UNet family). */
  get flowFamily(): FlowFamily {
    if (this.family.kind !== 'flow') throw new Error(`internal error: ${this.family.label} is not a flow model`);
    return this.family;
  }

  private get flowParts(): NonNullable<LoadedModel['flow']> {
    const f = this.model.flow;
    if (!f) throw new Error(`internal error: ${this.model.name} has no flow transformer`);
    return f;
  }

  /** The transformer's text token width. */
  get contextDim(): number {
    const t = this.flowParts.transformer;
    return t.config.contextInDim;
  }

  /** Whether the transformer takes a distilled-guidance input (Flux dev). */
  get hasGuidanceInput(): boolean {
    const t = this.flowParts.transformer;
    return t.kind === 'flux' && t.config.guidanceEmbed;
  }

  get t5Tokens(): number {
    return this.flowFamily.flow.t5Tokens(this.hasGuidanceInput);
  }

  private t5Tok?: T5Tokenizer;
  t5Tokenizer(): T5Tokenizer {
    const file = this.flowParts.t5TokenizerFile;
    if (!file) throw new Error(`internal error: ${this.model.name} was loaded without its T5 tokenizer`);
    this.t5Tok ??= T5Tokenizer.fromFile(file);
    return this.t5Tok;
  }

  t5Encoder(): Promise<Session> | undefined {
    const t5 = this.flowParts.t5;
    if (!t5) return undefined;
    const opts = { sequenceLength: this.t5Tokens };
    const { weights, options: quantized } = this.quantized(t5.weights);
    return this.session('t5-encoder', this.precision(), { ...opts, ...quantized }, (b) => buildT5Encoder(b, weights, t5.config, opts));
  }

  /** The flow transformer (Flux or MMDiT), its text length fixed at the family's token count. */
  transformer(): Promise<Session> {
    const t = this.flowParts.transformer;
    const { weights, options: quantized } = this.quantized(this.model.unet);
    if (t.kind === 'flux') {
      const opts = { textTokens: this.t5Tokens };
      return this.session('flux-transformer', this.precision(), { ...opts, ...quantized }, (b) => buildFluxTransformer(b, weights, t.config, opts));
    }
    return this.session('mmdit', this.precision(), quantized, (b) => buildMmdit(b, weights, t.config));
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
    const opts = { ...this.unetFamily.unet.buildOptions, tiling, ...(branches ? { loraBranches: true } : {}) };
    const lora = this.loras?.unetKey;
    const { weights, options: quantized } = this.quantized(this.loras?.unet ?? this.model.unet);
    // int8 (activation + weight) and --quantize (weight-only) are alternatives; --quantize wins when both are set.
    const int8 = this.settings.precision === 'int8' && this.settings.device === 'cpu' && !this.settings.quantize;
    if (int8 && !branches && !lora && !tiling) return this.int8Unet().session();
    const graphOptions = { ...unetGraphOptions(opts), ...quantized };
    const session = this.session(
      'unet',
      this.precision(),
      lora ? { ...graphOptions, lora } : graphOptions,
      (b) => buildUnet(b, weights, requireUnetConfig(this.model) as unknown as Record<string, unknown>, opts),
      () => weightBytes(weights, this.precision()),
    );
    if (!tiling) this.trackWholeUnet('plain', [this.sessionId('unet', lora ? { ...graphOptions, lora } : graphOptions)]);
    return branches ? this.fedOnce(JSON.stringify(['unet', tiling ?? null]), session, branches) : session;
  }

  /**
   * Step reuse (DeepCache, docs/step-reuse.md): the whole UNet that also returns the deep feature at `branch`, and
   * the shallow graph that reuses it, at this view's precision, LoRA and tiling. undefined while the int8 UNet
   * calibrates (its ranges come from whole evaluations). Untiled, these replace the plain whole UNet in memory.
   */
  async unetReuse(branch: number, tiling?: Tiling): Promise<StepReuseSessions | undefined> {
    const branches = this.loras?.unetBranches;
    const lora = this.loras?.unetKey;
    const config = requireUnetConfig(this.model) as unknown as Record<string, unknown>;
    const optsFor = (part: 'full' | 'shallow') => ({
      ...this.unetFamily.unet.buildOptions,
      tiling,
      ...(branches ? { loraBranches: true } : {}),
      stepReuse: { branch, part },
    });
    const int8 = this.settings.precision === 'int8' && this.settings.device === 'cpu' && !this.settings.quantize;
    if (int8 && !branches && !lora && !tiling) {
      const network = this.int8Unet();
      const state = await network.settle();
      if (state === 'calibrating') return undefined;
      if (state === 'int8') {
        const open = (part: 'full' | 'shallow') => {
          const opts = optsFor(part);
          return network.variant(unetGraphOptions(opts), (b) => buildUnet(b, this.model.unet, config, opts));
        };
        const [full, shallow] = await Promise.all([open('full'), open('shallow')]);
        return { full, shallow };
      }
    }
    const { weights, options: quantized } = this.quantized(this.loras?.unet ?? this.model.unet);
    const ids: string[] = [];
    const open = (part: 'full' | 'shallow') => {
      const opts = optsFor(part);
      const graphOptions = { ...unetGraphOptions(opts), ...quantized, ...(lora ? { lora } : {}) };
      ids.push(this.sessionId('unet', graphOptions));
      const session = this.session('unet', this.precision(), graphOptions, (b) => buildUnet(b, weights, config, opts));
      return branches ? this.fedOnce(JSON.stringify(['unet', tiling ?? null, branch, part]), session, branches) : session;
    };
    const pair = [open('full'), open('shallow')];
    if (!tiling) this.trackWholeUnet(`reuse-${branch}`, ids);
    const [full, shallow] = await Promise.all(pair);
    return { full: full!, shallow: shallow! };
  }

  private sessionId(network: string, options: Record<string, unknown>): string {
    return JSON.stringify({ network, weightsIdentity: this.model.identity, precision: this.precision(), options } satisfies GraphKey);
  }

  private trackWholeUnet(variantId: string, sessionIds: string[]): void {
    for (const id of sessionIds) this.trackVariant(this.shared.wholeUnetVariants, variantId, id, MAX_WHOLE_UNET_VARIANTS);
  }

  /** The int8 state of the plain UNet (no LoRA, no tiling), shared by this model's views. */
  int8Unet(): Int8Network {
    if (this.shared.int8) return this.shared.int8;
    const opts = { ...this.unetFamily.unet.buildOptions };
    const options = unetGraphOptions(opts);
    const build = (b: GraphBuilder) => buildUnet(b, this.model.unet, requireUnetConfig(this.model) as unknown as Record<string, unknown>, opts);
    const cacheDir = this.settings.cacheDir ?? defaultCacheDir();
    const key: GraphKey = { network: 'unet', weightsIdentity: this.model.identity, precision: 'fp32', options };
    this.shared.int8 = new Int8Network(
      {
        open: (extra, makeBuilder, variantBuild) => this.openGraph({ ...key, options: { ...options, ...extra } }, variantBuild ?? build, makeBuilder),
        fp32: () => this.unetFp32(),
        log: (line) => process.emitWarning(`${this.model.name}: ${line}`, 'KilnPrecision'),
      },
      { label: 'UNet', stateFile: `${cacheDir}/unet-int8-${graphKeyHash(key)}.json`, ...this.settings.int8 },
    );
    return this.shared.int8;
  }

  /** The int8 state of the model's own VAE decoder (untiled), shared by this model's views. */
  int8VaeDecoder(): Int8Network {
    if (this.shared.int8Vae) return this.shared.int8Vae;
    const opts = { scalingFactor: this.scalingFactor };
    const options = vaeDecoderGraphOptions(opts);
    const build = (b: GraphBuilder) => buildVaeDecoder(b, this.model.vae, this.model.vaeConfig, opts);
    const cacheDir = this.settings.cacheDir ?? defaultCacheDir();
    const key: GraphKey = { network: 'vae-decoder', weightsIdentity: this.model.identity, precision: 'fp32', options };
    this.shared.int8Vae = new Int8Network(
      {
        open: (extra, makeBuilder) => this.openGraph({ ...key, options: { ...options, ...extra } }, build, makeBuilder),
        fp32: () => this.session('vae-decoder', 'fp32', options, build),
        log: (line) => process.emitWarning(`${this.model.name}: ${line}`, 'KilnPrecision'),
      },
      {
        label: 'VAE decoder',
        stateFile: `${cacheDir}/vae-decoder-int8-${graphKeyHash(key)}.json`,
        calibrationEvaluations: VAE_CALIBRATION_DECODES,
        bound: this.settings.int8?.vaeBound ?? VAE_INT8_BOUND,
        layers: this.settings.int8?.layers,
      },
    );
    return this.shared.int8Vae;
  }

  /** The plain fp32 UNet session (int8's fallback). */
  private unetFp32(): Promise<Session> {
    const opts = { ...this.unetFamily.unet.buildOptions };
    const session = this.session('unet', this.precision(), unetGraphOptions(opts), (b) =>
      buildUnet(b, this.model.unet, requireUnetConfig(this.model) as unknown as Record<string, unknown>, opts),
    );
    // A model whose int8 was refused runs this plain graph: it takes turns with the step-reuse pair like unet()'s.
    this.trackWholeUnet('plain', [this.sessionId('unet', unetGraphOptions(opts))]);
    return session;
  }

  vaeDecoder(tiling?: Tiling): Promise<Session> {
    const opts = { scalingFactor: this.scalingFactor, tiling };
    if (this.settings.precision === 'int8' && this.settings.device === 'cpu' && !tiling && !this.vaeOverride) return this.int8VaeDecoder().session();
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

  /**
   * `weights` with --quantize applied (Linear layers as MatMulNBits), and the graph-option entry that keys the
   * quantised graph apart from the float one (empty when not quantising, so float graph keys are unchanged).
   */
  private quantized(weights: WeightSource): { weights: WeightSource; options: Record<string, unknown> } {
    const mode = this.settings.quantize;
    return { weights: withQuantize(weights, { mode }), options: mode ? { quantize: mode } : {} };
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
      s = this.openGraph(key, build, undefined, expectedBytes);
      s.catch(() => this.sessions.delete(id));
      this.sessions.set(id, s);
    }
    if (typeof options.lora === 'string') this.trackLoraVariant(id);
    if (typeof options.vae === 'string') this.trackVariant(this.shared.vaeVariants, options.vae, id, MAX_VAE_VARIANTS);
    return s;
  }

  /** Builds (or finds in the cache) the graph for `key` and opens a session on it; not remembered here. */
  private async openGraph(
    key: GraphKey,
    build: (b: GraphBuilder) => void,
    makeBuilder?: (network: string, dir: string) => GraphBuilder,
    expectedBytes?: () => number,
  ): Promise<Session> {
    const started = Date.now();
    const reported = (b: GraphBuilder) => {
      // Only a real build reports (a cached graph skips this); the start of the report is the start of the build.
      const reporter = buildReporter(key.network, expectedBytes?.() ?? 0);
      if (reporter) b.onWeightsWritten = (bytes) => reporter.written(bytes);
      build(b);
      reporter?.done();
    };
    const { modelPath } = getOrBuildGraph(this.settings.cacheDir ?? defaultCacheDir(), key, reported, makeBuilder);
    const { device, threads, spinning, cacheOptimized } = this.settings;
    const { session, rejected } = await openSession(modelPath, { device, intraOpThreads: threads, spinning, cacheOptimized: cacheOptimized ?? true });
    // Not an error (the plain graph was used and the cache rewritten), but worth seeing if it keeps happening.
    if (rejected) process.emitWarning(`${key.network}: cached optimised model refused and rebuilt (${rejected})`, 'KilnCacheWarning');
    this.buildMs += Date.now() - started;
    return session;
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
    const int8 = [this.shared.int8, this.shared.int8Vae];
    this.shared.int8 = undefined;
    this.shared.int8Vae = undefined;
    for (const n of int8) await n?.release();
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
