// Everything behind the HTTP routes, wired once: image store, job backend, queue, webhooks, engine
// (in its own process), models. Compat adapters reach this as `app.kiln` and use submit() / queue.get / queue.waitFor /
// queue.cancel / queue.events / storage.read / storeUpload, exactly like the native routes do.
import { existsSync, mkdirSync, readdirSync } from 'node:fs';
import { availableParallelism, hostname } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FastifyBaseLogger } from 'fastify';
import { graphCacheDir, type KilnConfig } from './config.ts';
import { openImageStore } from './image-store-config.ts';
import { DataDirLock } from '../storage/data-dir-lock.ts';
import type { ImageStore } from '../storage/image-store.ts';
import { SqliteJobBackend } from '../queue/sqlite-backend.ts';
import { RedisJobBackend } from '../queue/redis-backend.ts';
import { listSamplers, listSchedules, type ModelRef } from '../engine/index.ts';
import { ensureTokenizerRole, ensureTokenizers, type TokenizerFetchOptions } from './models/tokenizers.ts';
import type { JobBackend } from '../queue/backend.ts';
import { WebhookSender } from '../queue/webhooks.ts';
import { WebhookPolicy, WebhookTargetError } from '../queue/webhook-target.ts';
import { JobQueue } from '../queue/queue.ts';
import type { SubmitOptions } from '../queue/queue.ts';
import { createExecutor } from '../queue/executor.ts';
import { BUILD_SECONDS_PER_GIB } from '../queue/build-log.ts';
import { ProcessEngine } from '../queue/engine-process.ts';
import { findOption, normalizeOptions } from '../queue/engine.ts';
import type { Engine, NamedOption } from '../queue/engine.ts';
import { checkLoraWeights, checkRestoreFaces, checkSpecLimits, checkWebhookUrl, SpecError } from '../queue/job-spec.ts';
import { checkSpecLoras, resolveLora } from './models/loras.ts';
import { checkSpecVae, isTaesdChoice } from './models/vae.ts';
import { findTaesdDecoders } from './models/taesd.ts';
import { checkTransparentSpec, jobTransparentSettings } from './models/layerdiffuse.ts';
import { usableEmbeddings } from './models/embeddings.ts';
import { describeCheckpoint } from './models/family.ts';
import { UpscalerCatalog } from './upscalers.ts';
import { ClipVisionCatalog } from './models/clip-vision.ts';
import { FaceRestorerCatalog } from './models/face-restorers.ts';
import { checkCapabilities, checkFamilyCapabilities, familyCan } from '../queue/capabilities.ts';
import { checkFamilySpec } from '../queue/family-rules.ts';
import type { JobSpec } from '../queue/job-spec.ts';
import type { Job } from '../queue/job.ts';
import { storeInputImage } from './uploads.ts';
import { ModelRegistry } from './models/registry.ts';
import { checkChunkImages } from '../queue/batch-split.ts';
import { modelRouting, type ModelRouting } from './model-routes.ts';
import { Metrics, requestSurface } from './metrics.ts';
import { applyModelPreset, checkPresetNames, presetFor } from './model-presets.ts';
import { sizeOf } from './models/size.ts';

/** While a model loads, a line this often says it is still working. */
const LOAD_TICK_MS = 10_000;

/** How often a worker on a shared queue announces itself; one silent for 3 beats is shown as gone. */
export const WORKER_HEARTBEAT_MS = 2000;
/** Images per chunk of a split batch on a shared queue, unless --split-batch says otherwise. */
const DEFAULT_SPLIT_IMAGES = 8;

export const DEFAULT_ENGINE_MODULE = fileURLToPath(new URL('../engine/index.ts', import.meta.url));

export interface EngineStatus {
  state: 'starting' | 'ready' | 'error';
  error?: string;
  /** The default model once the engine has loaded it (engines without load() count as loaded). */
  loadedModel?: string;
  loadError?: string;
}

export interface ServiceOptions {
  /** An in-process engine (tests). Without it the engine module runs in a supervised child process. */
  engine?: Engine;
  log?: FastifyBaseLogger;
  /** A shared-queue worker that runs jobs for its default model only (`kiln worker --model X`; model-routes.ts). */
  onlyDefaultModel?: boolean;
}

export class KilnServices {
  readonly storage: ImageStore;
  readonly backend: JobBackend;
  readonly webhooks: WebhookSender;
  readonly queue: JobQueue;
  readonly models: ModelRegistry;
  /** Upscalers requests may name (latent modes, built-ins, readable files in models/upscalers/). */
  readonly upscalers: UpscalerCatalog;
  /** CLIP models (models/clip_vision/) and interrogator phrase lists (models/interrogate/). */
  readonly clipVision: ClipVisionCatalog;
  /** Face restorers' weight files (models/codeformer/, gfpgan/, facedetect/, A1111's Codeformer/, GFPGAN/). */
  readonly faceRestorers: FaceRestorerCatalog;
  readonly engine: Engine;
  /** The engine process (absent when a test injects an in-process engine). */
  readonly engineProcess?: ProcessEngine;
  readonly metrics: Metrics;
  /** This server's claim on the data directory, taken first and given up last. */
  private readonly lock: DataDirLock;
  readonly engineStatus: EngineStatus = { state: 'starting' };
  /** Resolves when the engine has started (or failed to). */
  readonly engineReady: Promise<void>;
  private samplerList: NamedOption[] = [];
  private heartbeat?: NodeJS.Timeout;
  /** Which model queue a job goes to and which ones this worker serves (shared queue only; model-routes.ts). */
  readonly routing: ModelRouting = modelRouting(
    () => this.models,
    () => this.loadedModels().map((m) => m.name),
    () => (this.opts.onlyDefaultModel ? this.models.default?.name : undefined),
  );
  private scheduleList: NamedOption[] = [];

  constructor(
    readonly config: KilnConfig,
    private readonly opts: ServiceOptions = {},
  ) {
    // Preset sampler and schedule names are the engine's: a typo is a start error naming the key, not a failing job.
    checkPresetNames(config.modelPresets, normalizeOptions(listSamplers()), normalizeOptions(listSchedules()));
    mkdirSync(config.dataDir, { recursive: true });
    // Before the database is opened: a second server must not even recover (re-queue) the first one's jobs.
    this.lock = DataDirLock.acquire(config.dataDir);
    try {
      this.storage = openImageStore(config);
      this.backend =
        config.queueUrl === 'sqlite'
          ? new SqliteJobBackend(join(config.dataDir, 'jobs.sqlite'))
          : new RedisJobBackend({
              url: config.queueUrl,
              lockMs: config.queue.workerLockMs,
              stalledCheckMs: config.queue.workerLockMs,
              maxAttempts: config.queue.maxAttempts,
              routing: this.routing,
            });
    } catch (e) {
      this.lock.release();
      throw e;
    }
    this.models = new ModelRegistry(config);
    this.upscalers = new UpscalerCatalog(this.models, config.modelsDir);
    this.clipVision = new ClipVisionCatalog(this.models, config.modelsDir);
    this.faceRestorers = new FaceRestorerCatalog(config.modelsDir);
    // An API node runs no jobs: no engine process, only the engine's static lists (samplers, schedules).
    const child =
      opts.engine || !config.worker
        ? undefined
        : new ProcessEngine(config.engineModule ?? DEFAULT_ENGINE_MODULE, {
            device: config.device,
            cacheDir: graphCacheDir(config),
            hfCacheDir: config.hfCacheDir,
            // Leave one core to the server process so status, SSE and /health answer during a generation.
            threads: config.threads ?? Math.max(1, availableParallelism() - 1),
            spinning: false,
            quantize: config.quantize,
            precision: config.precision,
            precisionModels: config.precisionModels,
            idleUnloadMs: config.idleUnloadMs,
            maxLoadedModels: config.maxLoadedModels,
          });
    this.engineProcess = child;
    const engine = opts.engine ?? child ?? listsOnlyEngine();
    this.engine = engine;
    const log = opts.log;
    this.webhooks = new WebhookSender({ log, policy: new WebhookPolicy(config.webhookAllow) });
    // Splitting a batch pays only where several workers share the queue; on one machine its chunks would run in turn.
    const splitImages = config.queue.splitImages ?? (config.queueUrl === 'sqlite' ? 0 : DEFAULT_SPLIT_IMAGES);
    checkChunkImages(splitImages);
    this.queue = new JobQueue({
      backend: this.backend,
      webhooks: this.webhooks,
      config: { ...config.queue, splitImages },
      storage: this.storage,
      run: createExecutor({
        engine,
        storage: this.storage,
        resolveModel: (n, vae) => this.resolveModel(n, vae),
        resolveLora: (n) => resolveLora(this.models, n),
        embeddings: () => usableEmbeddings(this.models),
        resolveUpscaler: (n) => this.upscalers.resolve(n),
        resolveClipModel: async (n, kind) => {
          const clip = this.clipVision.resolve(n, kind);
          // A CLIP file without its own tokenizer reads CLIP-L's from the HF cache: fetched there first if missing.
          if (!existsSync(join(clip.path, 'vocab.json'))) await ensureTokenizerRole('clip-l', this.tokenizerFetch());
          return clip;
        },
        resolveFaceRestorer: (m) => this.faceRestorers.resolve(m),
        interrogateCategories: () => this.clipVision.categories(),
        hasModel: (n) => this.models.has(n),
        transparent: (spec) => jobTransparentSettings(spec, config.modelsDir),
        device: config.device,
        previewEvery: config.previewEvery,
        taesdDecoders: () => findTaesdDecoders(config.modelsDir),
      }),
      // An evaluation that ignores abort past the grace is inside a native call: only killing its process stops it.
      // While shutting down the killed process is not replaced: the server is about to close it anyway.
      hardStop: child ? () => child.kill(!this.queue.isStopping) : undefined,
      abortGraceMs: config.queue.abortGraceMs,
      runsJobs: config.worker,
      log: log ? { info: (o, m) => log.info(o, m), warn: (o, m) => log.warn(o, m), error: (o, m) => log.error(o, m) } : undefined,
    });
    this.metrics = new Metrics(this.queue, () => this.loadedModels());
    if (child) {
      // A replaced engine process starts empty: load the default model again (from the graph cache) so the next
      // job does not pay for it and /v1/models tells the truth.
      child.onRestart = (r) => {
        log?.warn({ reason: r.reason, readyMs: Math.round(r.readyMs) }, 'engine process replaced');
        void this.warmUp();
      };
    }
    this.engineReady = (async () => {
      try {
        if (child) {
          const module = config.engineModule ?? DEFAULT_ENGINE_MODULE;
          if (!existsSync(module)) throw new Error(`engine module not found: ${module}`);
          await child.start();
        }
        // A GPU device must really start (provider libraries, CUDA/cuDNN), or the start fails with the reason.
        if (config.device !== 'cpu') await engine.run('device-check', { device: config.device });
        this.samplerList = normalizeOptions(await engine.listSamplers());
        this.scheduleList = normalizeOptions(await engine.listSchedules());
        this.engineStatus.state = 'ready';
      } catch (e) {
        this.engineStatus.state = 'error';
        this.engineStatus.error = (e as Error).message;
        log?.error({ err: e }, 'engine failed to start');
        return;
      }
      await this.warmUp();
    })();
  }

  /** Loads the default model so the first job does not pay for it and /ready reflects a loaded model. */
  async warmUp(): Promise<void> {
    const def = this.models.default;
    if (!def) return;
    if (!this.engine.load || !this.config.worker) {
      this.engineStatus.loadedModel = def.name;
      return;
    }
    const log = this.opts.log;
    const started = Date.now();
    // A first start builds the graphs (tens of seconds for a real model); say so, and keep saying it is working.
    const firstStart = !existsSync(graphCacheDir(this.config)) || readdirSync(graphCacheDir(this.config)).length === 0;
    let estimate = '';
    try {
      estimate = `, ~${Math.max(1, Math.round((sizeOf(def.path) / 1024 ** 3) * BUILD_SECONDS_PER_GIB))} s`;
    } catch {
      // size unknown: no estimate
    }
    log?.info(
      { model: def.name },
      firstStart
        ? `loading model ${def.name}; its graphs are built by the first job (first start only${estimate}), then read from the graph cache`
        : `loading model ${def.name}…`,
    );
    const ticker = setInterval(
      () => log?.info({ model: def.name }, `still loading model ${def.name} (${Math.round((Date.now() - started) / 1000)} s)…`),
      LOAD_TICK_MS,
    );
    ticker.unref();
    try {
      await this.engine.load(await this.resolveModel(undefined));
      const seconds = (Date.now() - started) / 1000;
      this.metrics.modelLoad.observe(seconds);
      log?.info({ model: def.name, seconds: Math.round(seconds * 10) / 10 }, `model ${def.name} ready in ${seconds.toFixed(1)} s`);
      this.engineStatus.loadedModel = def.name;
      this.engineStatus.loadError = undefined;
    } catch (e) {
      this.engineStatus.loadError = (e as Error).message;
      this.opts.log?.error({ err: e, model: def.name }, 'default model failed to load');
    } finally {
      clearInterval(ticker);
    }
  }

  /** A model's files for the engine, with the tokenizers a single file needs fetched into the HF cache first. */
  async resolveModel(name: string | undefined, vae?: string): Promise<ModelRef> {
    const ref = await this.models.resolve(name, vae);
    await ensureTokenizers(ref, this.tokenizerFetch());
    return ref;
  }

  private tokenizerFetch(): TokenizerFetchOptions {
    return { hfCacheDir: this.config.hfCacheDir, endpoint: this.config.hfEndpoint, offline: this.config.offline };
  }

  async start(): Promise<void> {
    if (this.backend instanceof RedisJobBackend) {
      await this.backend.ready();
      await this.backend.subscribed();
      if (this.config.worker) this.startHeartbeat(this.backend);
    }
    await this.queue.start();
  }

  /**
   * Models in the engine's memory now. The engine process reports every load and idle unload; an
   * injected engine is taken to hold the warmed-up default model.
   */
  loadedModels(): { name: string; path?: string; family?: string }[] {
    if (this.engineProcess) return this.engineProcess.loadedModels.map((m) => ({ name: m.name, path: m.path, family: m.family }));
    return this.engineStatus.loadedModel ? [{ name: this.engineStatus.loadedModel }] : [];
  }

  samplers(): NamedOption[] {
    return this.samplerList;
  }

  schedules(): NamedOption[] {
    return this.scheduleList;
  }

  /** Ready to generate: the engine is up and a default model is known. */
  readiness(): { ready: boolean; reason?: string; model?: string } {
    if (this.engineStatus.state !== 'ready')
      return { ready: false, reason: this.engineStatus.error ? `engine failed: ${this.engineStatus.error}` : 'engine starting' };
    const def = this.models.default;
    if (!def) return { ready: false, reason: 'no default model (start with --model)' };
    if (this.engineStatus.loadError) return { ready: false, reason: `model ${def.name} failed to load: ${this.engineStatus.loadError}` };
    if (this.engineStatus.loadedModel !== def.name) return { ready: false, reason: `loading model ${def.name}` };
    return { ready: true, model: def.name };
  }

  /**
   * Checks a spec against the engine's capabilities (FeatureNotImplemented -> 501), limits, the engine's
   * sampler/schedule names and known models. Throws SpecError naming the field. Sampler names also accept A1111's legacy "<sampler> <schedule>" form.
   */
  checkSpec(spec: JobSpec): void {
    // Features first: "not implemented" is the answer whatever else is wrong with the request.
    checkCapabilities(spec);
    checkSpecLimits(spec, this.config.limits);
    checkLoraWeights(spec);
    if (spec.webhook) webhookSpecError(() => this.webhooks.policy.checkLiteral(new URL(spec.webhook!.url)));
    if (spec.kind === 'embed-image' || spec.kind === 'interrogate') {
      // The CLIP model, and a checkpoint only where its VAE is wanted (embed-image) or one was named.
      this.clipVision.resolve(spec.vision?.clipModel, spec.kind, spec.sourceFields?.vision ?? 'clip_model');
      const needsCheckpoint = spec.kind === 'embed-image' ? spec.vision?.vae !== false : spec.model !== undefined;
      if (needsCheckpoint && !this.models.has(spec.model)) {
        if (spec.model === undefined)
          throw new SpecError(
            'model',
            'the VAE latent needs a checkpoint and the server has no default model (start it with --model, or ask for no VAE latent)',
          );
        throw new SpecError('model', `unknown model "${spec.model}" (GET /v1/models lists the checkpoints)`);
      }
      return;
    }
    if (spec.kind === 'upscale') {
      // No model, sampler or schedule: only the upscaler names and face restorers' files matter.
      this.upscalers.check(spec.upscale!.upscaler1, spec.sourceFields?.upscale ?? 'upscaler_1', { latent: false });
      if (spec.upscale!.upscaler2) this.upscalers.check(spec.upscale!.upscaler2, 'upscaler_2', { latent: false });
      for (const faces of spec.upscale!.restoreFaces ?? []) {
        const field = `${faces.model.toLowerCase()}_visibility`;
        checkRestoreFaces(faces, field);
        this.faceRestorers.resolve(faces.model, field);
      }
      return;
    }
    if (spec.restoreFaces) {
      const field = spec.sourceFields?.restoreFaces ?? 'restore_faces';
      checkRestoreFaces(spec.restoreFaces, field);
      this.faceRestorers.resolve(spec.restoreFaces.model, field);
    }
    if (!this.models.has(spec.model)) {
      if (spec.model === undefined) throw new SpecError('model', 'no model was given and the server has no default model (start it with --model)');
      const known = this.models.list().flatMap((e) => [e.name, ...e.labels]);
      throw new SpecError('model', `unknown model "${spec.model}"; available: ${known.length ? known.join(', ') : 'none'} (GET /v1/models)`);
    }
    if (spec.hires) {
      const field = spec.sourceFields?.hires === 'enable_hr' ? 'hr_upscaler' : 'hires.upscaler';
      this.upscalers.check(spec.hires.upscaler ?? 'Latent', field, { latent: true });
    }
    if (spec.vae !== undefined && !isTaesdChoice(spec.vae)) this.models.resolveVae(spec.vae, spec.model, spec.sourceFields?.vae ?? 'vae');
    if (spec.refiner !== undefined && !this.models.has(spec.refiner)) {
      throw new SpecError('refiner', `unknown model "${spec.refiner}" (GET /v1/models lists the checkpoints)`);
    }
    const samplers = this.samplerList;
    if (samplers.length > 0 && !findOption(samplers, spec.sampler)) {
      const legacy = this.scheduleList.find((s) => [s.name, ...s.aliases].some((n) => spec.sampler.toLowerCase().endsWith(` ${n.toLowerCase()}`)));
      const base = legacy ? spec.sampler.slice(0, spec.sampler.lastIndexOf(' ')) : undefined;
      if (!base || !findOption(samplers, base)) {
        throw new SpecError('sampler', `unknown sampler "${spec.sampler}"; available: ${samplers.map((s) => s.name).join(', ')}`);
      }
    }
    const schedules = this.scheduleList;
    if (schedules.length > 0 && spec.schedule.toLowerCase() !== 'automatic' && !findOption(schedules, spec.schedule)) {
      throw new SpecError(
        'schedule',
        `unknown schedule "${spec.schedule}"; available: ${schedules.map((s) => (typeof s.label === 'string' ? s.label : s.name)).join(', ')}`,
      );
    }
  }

  /** The one door for new work: validate, then queue. Throws SpecError / QueueFullError / QueueClosedError. */
  async submit(spec: JobSpec, opts: SubmitOptions = {}): Promise<Job> {
    const preset = this.prepareSpec(spec);
    this.checkSpec(spec);
    if (spec.kind === 'txt2img' || spec.kind === 'img2img') {
      // Family-dependent rules (FLUX.1 / SD3: what their pipeline cannot do yet -> 501; sides multiple of 16 -> 400).
      const family = (await describeCheckpoint((await this.models.resolve(spec.model)).path)).family;
      // A preset's step reuse is for models that have a UNet to cut; a request without deep_cache gets it.
      if (preset?.preset.deepCache && spec.deepCache === undefined && familyCan(family, 'deepCache')) {
        spec.deepCache = preset.preset.deepCache;
        spec.origin = { ...spec.origin, preset: preset.key };
      }
      checkFamilyCapabilities(spec, family);
      checkFamilySpec(spec, family);
    }
    if (spec.loras?.length) checkSpecLoras(spec, this.models, (await describeCheckpoint((await this.models.resolve(spec.model)).path)).family);
    await checkSpecVae(spec, this.models, findTaesdDecoders(this.config.modelsDir));
    if (spec.transparentBackground)
      checkTransparentSpec(spec, this.config.modelsDir, (await describeCheckpoint((await this.models.resolve(spec.model)).path)).family);
    if (spec.webhook) await this.checkWebhook(spec.webhook.url);
    const job = await this.queue.submit(spec, opts);
    this.metrics.jobSubmitted(job);
    return job;
  }

  /**
   * Records where a job comes from (surface, model) and fills what the request left out from its model's preset:
   * one place for every surface, before the checks, so a preset value is checked like a requested one.
   */
  private prepareSpec(spec: JobSpec): ReturnType<typeof presetFor> {
    const entry = spec.kind === 'upscale' ? undefined : this.models.lookup(spec.model);
    spec.origin = { surface: requestSurface.getStore() ?? 'internal', ...(entry ? { model: entry.name } : {}) };
    if (!entry || spec.kind === 'embed-image' || spec.kind === 'interrogate') return undefined;
    const found = presetFor(this.config.modelPresets, [entry.name, ...entry.labels, ...(spec.model ? [spec.model] : [])]);
    if (found && applyModelPreset(spec, found.preset).length > 0) spec.origin.preset = found.key;
    return found;
  }

  /** A webhook URL a client gave: an http(s) URL whose target the webhook policy allows. Throws SpecError('webhook'). */
  async checkWebhook(url: string): Promise<void> {
    checkWebhookUrl(url);
    await webhookSpecError(() => this.webhooks.checkTarget(url));
  }

  /** Validates and stores an uploaded image (img2img input); returns its stored name for JobSpec.initImage. */
  storeUpload(bytes: Buffer, field = 'init_image'): Promise<string> {
    return storeInputImage(bytes, this.storage, this.config.limits, field);
  }

  /** A worker on a shared queue tells the others (GET /v1/workers, /health) what it is and does, every few seconds. */
  private startHeartbeat(backend: RedisJobBackend): void {
    const startedAt = Date.now();
    const beat = () =>
      backend
        .announce({
          host: hostname(),
          pid: process.pid,
          device: this.config.device,
          loadedModels: this.loadedModels().map((m) => m.name),
          models: this.routing.servedModels(),
          job: this.queue.runningJobId,
          startedAt,
        })
        .catch(() => undefined); // Redis away: the next beat tries again
    void beat();
    this.heartbeat = setInterval(beat, WORKER_HEARTBEAT_MS);
    this.heartbeat.unref();
  }

  /** Stops the queue (finishing or re-queuing the running job), the engine and the database. */
  async close(): Promise<void> {
    clearInterval(this.heartbeat);
    if (this.backend instanceof RedisJobBackend && this.config.worker) await this.backend.withdraw().catch(() => undefined);
    await this.queue.stop();
    this.metrics.close();
    await this.engine.close();
    await this.backend.close();
    this.lock.release();
  }
}

/** An API node's engine: the static sampler and schedule lists, and nothing to run (workers run the jobs). */
function listsOnlyEngine(): Engine {
  const refuse = () => Promise.reject(new Error('this API node runs no jobs (--worker false); a `kiln worker` process runs them'));
  return { run: refuse, generate: refuse, listSamplers, listSchedules, close: () => undefined } as Engine;
}

/** A refused webhook target as the 400 that names the `webhook` field. */
function webhookSpecError<T>(check: () => T): T {
  const refuse = (e: unknown): never => {
    throw e instanceof WebhookTargetError ? new SpecError('webhook', e.message) : e;
  };
  try {
    const out = check();
    return (out instanceof Promise ? out.catch(refuse) : out) as T;
  } catch (e) {
    return refuse(e);
  }
}
