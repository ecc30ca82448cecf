// Every server option, in one table: its config-file key, CLI flag, environment variable, type, default and
// meaning. Precedence: CLI flag > environment (KILN_*) > config file (kiln.config.json / .yaml / .yml in the
// data dir, or --config FILE) > default. `kiln serve --help` prints this table. Flags and env use friendly
// units (seconds, hours, MiB); config-file keys are the dotted names below in their own unit (…Ms, …Bytes).
import { existsSync, readFileSync } from 'node:fs';
import { isAbsolute, join, resolve } from 'node:path';
import { getHFHubCachePath } from '@huggingface/hub';
import { parse as parseYaml } from 'yaml';
import type { Limits, QueueConfig } from '../queue/config.ts';
import { WebhookPolicy } from '../queue/webhook-target.ts';
import { parseS3Url } from '../storage/s3.ts';
import { editDistance } from './edit-distance.ts';
import { type ModelPreset, ModelPresetError, parseModelPresets } from './model-presets.ts';

export type Role = 'user' | 'admin';
export interface ApiKey {
  /** Shown in logs and used as the job owner; never the key itself. */
  name: string;
  key: string;
  role: Role;
}

export interface KilnConfig {
  host: string;
  port: number;
  dataDir: string;
  modelsDir: string;
  cacheDir: string;
  /** More models folders (A1111 or ComfyUI `models/`, other Kiln roots), scanned after modelsDir. */
  modelRoots: string[];
  /** The standard Hugging Face hub cache (shared with diffusers, ComfyUI, InvokeAI). */
  hfCacheDir: string;
  /** Hub endpoints (tests and mirrors point these elsewhere). */
  hfEndpoint: string;
  civitaiEndpoint: string;
  model?: string;
  /** Folder with tokenizer/ (and tokenizer_2/) for single-file checkpoints, instead of the Hugging Face cache. */
  tokenizer?: string;
  /** Default separate VAE (a name in models/vae/ or a path); requests may choose another. */
  vae?: string;
  /** Friendly label -> model name (file/folder in modelsDir, absolute path, or Hugging Face repo id). */
  modelAliases: Record<string, string>;
  /** Model name or label (`*` wildcards allowed) -> defaults for the fields a request leaves out (config file only). */
  modelPresets: Record<string, ModelPreset>;
  device: 'cpu' | 'cuda' | 'tensorrt' | 'webgpu';
  /** onnxruntime threads per op; undefined = all cores but one. */
  threads?: number;
  /** Weight-only quantisation of the networks' Linear layers at graph build time; undefined = float weights. */
  quantize?: 'q8' | 'q4';
  /** UNet precision on the CPU: 'int8' after calibration within a checked bound (docs/int8.md). */
  precision: 'fp32' | 'int8';
  /** Models --precision applies to (file or folder names in the models folder, or paths); empty = every model. */
  precisionModels: string[];
  offline: boolean;
  insecure: boolean;
  keys: ApiKey[];
  tlsCert?: string;
  tlsKey?: string;
  publicUrl?: string;
  /** The job queue: 'sqlite' (embedded, one machine) or a redis:// URL (API nodes and workers on many machines). */
  queueUrl: string;
  /** This process runs jobs (false: an API node that only queues them; `kiln worker` processes run them). */
  worker: boolean;
  /** Where results and uploads live: undefined = <dataDir>/images; `s3://bucket/prefix` = an S3-protocol store. */
  storage?: string;
  /** S3 endpoint for MinIO-compatible servers (path-style addressing); undefined = AWS. */
  s3Endpoint?: string;
  s3Region?: string;
  /** With S3 storage: GET /v1/images/{name} redirects to a presigned URL valid this many ms (0 = stream through Kiln). */
  presignMs: number;
  logLevel: string;
  rateLimitPerMinute: number;
  /** Requests with a missing or wrong API key allowed per client address per minute before 429; 0 = no limit. */
  authFailuresPerMinute: number;
  /** Browser origins allowed to call the API cross-origin (CORS); '*' for any. */
  corsOrigins: string[];
  /** Webhook targets opened despite being loopback/private/link-local: host names, IPs or CIDR blocks. */
  webhookAllow: string[];
  metricsPublic: boolean;
  engineModule?: string;
  /** Live preview of the running job every this many model evaluations (0 = no previews). */
  previewEvery: number;
  /** Free an unused model's memory after this many ms (0 = keep models loaded; default 10 minutes, as seed 003). */
  idleUnloadMs: number;
  /** Most models held in memory at once; the least recently used is freed first. */
  maxLoadedModels: number;
  /** Seed 000's routes (/run, /runsync, /alpha/v1/txt2img) make transparent images (LayerDiffuse), as that seed promises. */
  seed000Transparent: boolean;
  limits: Limits;
  queue: QueueConfig;
  http: HttpBounds;
}

/** How the HTTP layer bounds a request before any route sees it (stalled clients, nesting bombs). */
export interface HttpBounds {
  /** A client must send the whole request head within this many ms (408 and close otherwise). */
  headersTimeoutMs: number;
  /** ... and the whole request, head and body, within this many ms. Answering may take longer. */
  requestTimeoutMs: number;
  /** An idle keep-alive connection between requests is closed after this many ms. */
  keepAliveTimeoutMs: number;
  /** A connection with no bytes either way for this many ms is closed (0 = never: blocking routes wait silently). */
  idleTimeoutMs: number;
  /** Deepest nesting of arrays/objects accepted in a JSON body or JSON-valued field. */
  maxJsonDepth: number;
}

type Kind = 'string' | 'int' | 'number' | 'bool' | 'path' | 'list' | { oneOf: readonly string[] };

interface OptionSpec {
  /** Dotted path in KilnConfig and in the config file. */
  key: string;
  flag: string;
  env: string;
  kind: Kind;
  default?: unknown;
  /** Multiplier from the user-facing unit (seconds, hours, MiB) to the stored unit. */
  scale?: number;
  doc: string;
}

const MiB = 1024 * 1024;

export const OPTIONS: readonly OptionSpec[] = [
  {
    key: 'host',
    flag: 'host',
    env: 'KILN_HOST',
    kind: 'string',
    default: '127.0.0.1',
    doc: 'Address to bind. Anything other than a loopback address needs API keys or --insecure.',
  },
  { key: 'port', flag: 'port', env: 'KILN_PORT', kind: 'int', default: 7860, doc: 'TCP port (0 picks a free one).' },
  {
    key: 'dataDir',
    flag: 'data-dir',
    env: 'KILN_DATA_DIR',
    kind: 'path',
    default: './kiln-data',
    doc: 'Holds the job database (jobs.sqlite), stored images (images/), uploads (inputs/) and the optional config file.',
  },
  {
    key: 'modelsDir',
    flag: 'models-dir',
    env: 'KILN_MODELS_DIR',
    kind: 'path',
    doc: 'Models folder with checkpoints/, loras/, vae/, ... (default: <data-dir>/models).',
  },
  {
    key: 'cacheDir',
    flag: 'cache-dir',
    env: 'KILN_CACHE_DIR',
    kind: 'path',
    doc: 'Downloaded Hugging Face models and compiled graphs (default: <data-dir>/cache).',
  },
  {
    key: 'modelRoots',
    flag: 'models-root',
    env: 'KILN_MODEL_ROOTS',
    kind: 'list',
    default: [],
    doc: 'More models folders to scan after --models-dir: an AUTOMATIC1111 or ComfyUI models/ folder, another Kiln models folder (comma-separated; config file: a list). Kiln never creates folders in them.',
  },
  {
    key: 'hfCacheDir',
    flag: 'hf-cache',
    env: 'HF_HUB_CACHE',
    kind: 'path',
    doc: 'The standard Hugging Face hub cache, where repo ids are found and downloaded (default: $HF_HOME/hub, else ~/.cache/huggingface/hub).',
  },
  {
    key: 'hfEndpoint',
    flag: 'hf-endpoint',
    env: 'HF_ENDPOINT',
    kind: 'string',
    default: 'https://huggingface.co',
    doc: 'Hugging Face Hub address (a mirror).',
  },
  {
    key: 'civitaiEndpoint',
    flag: 'civitai-endpoint',
    env: 'KILN_CIVITAI_ENDPOINT',
    kind: 'string',
    default: 'https://civitai.com',
    doc: 'Civitai address for /add_new_lora and kiln pull (the key comes from CIVIT_KEY).',
  },
  {
    key: 'tokenizer',
    flag: 'tokenizer',
    env: 'KILN_TOKENIZER',
    kind: 'path',
    doc: 'Diffusers-style folder holding tokenizer/ (and tokenizer_2/ for SDXL), used for single-file checkpoints instead of the standard CLIP tokenizer files from the Hugging Face cache.',
  },
  {
    key: 'model',
    flag: 'model',
    env: 'KILN_MODEL',
    kind: 'string',
    doc: 'Default model: a path, a name or label from the models folder, or a Hugging Face repo id (owner/name).',
  },
  {
    key: 'vae',
    flag: 'vae',
    env: 'KILN_VAE',
    kind: 'string',
    doc: 'Default separate VAE: a name from models/vae/ (or models/VAE/) or a path. A request picks another with vae (native) or sd_vae (A1111); "None" keeps the checkpoint\'s own.',
  },
  {
    key: 'threads',
    flag: 'threads',
    env: 'KILN_THREADS',
    kind: 'int',
    doc: 'onnxruntime threads per op (default: every core but one, which stays with the HTTP server).',
  },
  {
    key: 'quantize',
    flag: 'quantize',
    env: 'KILN_QUANTIZE',
    kind: { oneOf: ['q8', 'q4'] },
    doc: 'Weight-only quantisation of the Linear layers (UNet attention/feed-forward; Flux/SD3 transformers, T5) as 8- or 4-bit blocks of 32 (onnxruntime MatMulNBits): q8 about halves, q4 about quarters their memory, at a small quality cost (docs/quantization.md). Default: float weights. GGUF files keep their own quantisation either way.',
  },
  { key: 'device', flag: 'device', env: 'KILN_DEVICE', kind: { oneOf: ['cpu', 'cuda', 'tensorrt', 'webgpu'] }, default: 'cpu', doc: 'Where the networks run.' },
  {
    key: 'precision',
    flag: 'precision',
    env: 'KILN_PRECISION',
    kind: { oneOf: ['fp32', 'int8'] },
    default: 'fp32',
    doc: "CPU UNet precision. int8: each model's first generation runs fp32 and calibrates, then the int8 UNet (about 1.6x faster measured) is used if it stays within the quality bound, else fp32 with a log line (docs/int8.md). bf16 is not offered: onnxruntime's CPU provider has no bf16 MatMul/Conv kernels.",
  },
  {
    key: 'precisionModels',
    flag: 'precision-models',
    env: 'KILN_PRECISION_MODELS',
    kind: 'list',
    default: [],
    doc: 'Models --precision applies to: file or folder names (with or without extension) or paths, comma-separated; the others stay fp32. Empty: every model.',
  },
  { key: 'offline', flag: 'offline', env: 'KILN_OFFLINE', kind: 'bool', default: false, doc: 'Never download models; say what to download instead.' },
  { key: 'insecure', flag: 'insecure', env: 'KILN_INSECURE', kind: 'bool', default: false, doc: 'Allow binding a non-loopback address without API keys.' },
  { key: 'tlsCert', flag: 'tls-cert', env: 'KILN_TLS_CERT', kind: 'path', doc: 'PEM certificate; with --tls-key the server speaks HTTPS.' },
  { key: 'tlsKey', flag: 'tls-key', env: 'KILN_TLS_KEY', kind: 'path', doc: 'PEM private key for --tls-cert.' },
  {
    key: 'publicUrl',
    flag: 'public-url',
    env: 'KILN_PUBLIC_URL',
    kind: 'string',
    doc: 'Base URL used in result image URLs (default: taken from the request Host header).',
  },
  {
    key: 'queueUrl',
    flag: 'queue',
    env: 'KILN_QUEUE',
    kind: 'string',
    default: 'sqlite',
    doc: "Job queue: 'sqlite' (embedded, one machine) or redis://host:port[/db] (BullMQ; API nodes and `kiln worker` processes on many machines).",
  },
  {
    key: 'worker',
    flag: 'worker',
    env: 'KILN_WORKER',
    kind: 'bool',
    default: true,
    doc: 'Run jobs in this process; --worker false makes an API node that only queues (needs --queue redis://…; `kiln worker` runs the jobs).',
  },
  {
    key: 'queue.workerLockMs',
    flag: 'worker-lock',
    env: 'KILN_WORKER_LOCK',
    kind: 'number',
    scale: 1000,
    default: 30_000,
    doc: "Redis queue: a dead worker's job goes to another worker after about this many seconds (its lock, renewed while it runs).",
  },
  {
    key: 'queue.splitImages',
    flag: 'split-batch',
    env: 'KILN_SPLIT_BATCH',
    kind: 'int',
    doc: 'Batches of more images than this run as chunks of this many on several workers (a multiple of 4; 0: never). Default: 8 on a Redis queue, 0 on the embedded one.',
  },
  {
    key: 'storage',
    flag: 'storage',
    env: 'KILN_STORAGE',
    kind: 'string',
    doc: 'Where result images live: s3://bucket/prefix for an S3-compatible store shared by several nodes (credentials from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY); default <data-dir>/images.',
  },
  {
    key: 's3Endpoint',
    flag: 's3-endpoint',
    env: 'KILN_S3_ENDPOINT',
    kind: 'string',
    doc: 'S3 endpoint URL for MinIO-compatible servers (path-style); default AWS.',
  },
  { key: 's3Region', flag: 's3-region', env: 'KILN_S3_REGION', kind: 'string', doc: 'S3 region (default AWS_REGION or us-east-1).' },
  {
    key: 'presignMs',
    flag: 'presign',
    env: 'KILN_PRESIGN',
    kind: 'int',
    scale: 1000,
    default: 0,
    doc: 'With S3 storage, image URLs redirect to presigned S3 URLs valid this many seconds (0 = Kiln streams the images).',
  },
  {
    key: 'logLevel',
    flag: 'log-level',
    env: 'KILN_LOG_LEVEL',
    kind: { oneOf: ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] },
    default: 'info',
    doc: 'pino log level.',
  },
  {
    key: 'rateLimitPerMinute',
    flag: 'rate-limit',
    env: 'KILN_RATE_LIMIT',
    kind: 'int',
    default: 600,
    doc: 'Requests per minute per API key (or per IP without keys); 0 disables.',
  },
  {
    key: 'authFailuresPerMinute',
    flag: 'auth-fail-limit',
    env: 'KILN_AUTH_FAIL_LIMIT',
    kind: 'int',
    default: 30,
    doc: 'Requests with a missing or wrong API key per client address (IPv6: per /64) per minute; beyond it they get 429 with Retry-After. Requests with a valid key from that address are not affected. 0 disables.',
  },
  {
    key: 'webhookAllow',
    flag: 'webhook-allow',
    env: 'KILN_WEBHOOK_ALLOW',
    kind: 'list',
    default: [],
    doc: 'Webhook targets allowed although they are loopback, private, link-local or otherwise non-public: host names, IP addresses or CIDR blocks, comma-separated (config file: a list). By default webhooks go to public addresses only.',
  },
  {
    key: 'corsOrigins',
    flag: 'cors-origins',
    env: 'KILN_CORS_ORIGINS',
    kind: 'list',
    default: [],
    doc: 'Browser origins allowed to call the API from their pages (CORS), e.g. http://localhost:3000, comma-separated; * allows any. Requests still need their API key.',
  },
  { key: 'metricsPublic', flag: 'metrics-public', env: 'KILN_METRICS_PUBLIC', kind: 'bool', default: true, doc: 'Serve /metrics without an API key.' },
  {
    key: 'engineModule',
    flag: 'engine-module',
    env: 'KILN_ENGINE_MODULE',
    kind: 'path',
    doc: 'Module exporting createEngine() (default: the built-in engine). For tests and alternative engines.',
  },
  {
    key: 'idleUnloadMs',
    flag: 'idle-unload',
    env: 'KILN_IDLE_UNLOAD',
    kind: 'number',
    scale: 1000,
    // Seed 003's servers free the GPU after 10 minutes without work ("Buffer Timeout: 10 minutes"); users of it expect that.
    default: 600_000,
    doc: "Free a model from memory after this many seconds unused (it reloads on the next job, from the graph cache; /ready stays true). 0 keeps models loaded. The default, 10 minutes, is seed 003's buffer timeout.",
  },
  {
    key: 'maxLoadedModels',
    flag: 'max-loaded-models',
    env: 'KILN_MAX_LOADED_MODELS',
    kind: 'int',
    default: 2,
    doc: 'Most models held in memory at once; loading another frees the least recently used.',
  },
  {
    key: 'seed000Transparent',
    flag: 'seed000-transparent',
    env: 'KILN_SEED000_TRANSPARENT',
    kind: 'bool',
    default: true,
    doc: 'Seed 000 routes (/run, /runsync, /alpha/v1/txt2img) always make transparent PNGs, as that seed promises (SDXL + LayerDiffuse files in models/layerdiffuse/; a 4xx names what is missing). false: ordinary RGB images.',
  },
  {
    key: 'previewEvery',
    flag: 'preview-every',
    env: 'KILN_PREVIEW_EVERY',
    kind: 'int',
    default: 5,
    doc: 'Live preview of the running job (GET /v1/jobs/{id}/preview, A1111 progress current_image) every this many model evaluations; a cheap latent-to-RGB map at 1/8 size. 0 disables.',
  },
  { key: 'limits.maxWidth', flag: 'max-width', env: 'KILN_MAX_WIDTH', kind: 'int', default: 2048, doc: 'Largest width in pixels.' },
  { key: 'limits.maxHeight', flag: 'max-height', env: 'KILN_MAX_HEIGHT', kind: 'int', default: 2048, doc: 'Largest height in pixels.' },
  { key: 'limits.maxPixels', flag: 'max-pixels', env: 'KILN_MAX_PIXELS', kind: 'int', default: 2048 * 2048, doc: 'Largest width x height.' },
  { key: 'limits.maxSteps', flag: 'max-steps', env: 'KILN_MAX_STEPS', kind: 'int', default: 150, doc: 'Most sampling steps per image.' },
  {
    key: 'limits.maxImages',
    flag: 'max-images',
    env: 'KILN_MAX_IMAGES',
    kind: 'int',
    default: 150,
    doc: 'Most images per request (prompts x images per prompt).',
  },
  {
    key: 'limits.maxPromptChars',
    flag: 'max-prompt-chars',
    env: 'KILN_MAX_PROMPT_CHARS',
    kind: 'int',
    default: 10000,
    doc: 'Longest prompt or negative prompt, in characters.',
  },
  { key: 'limits.bodyBytes', flag: 'max-body-mb', env: 'KILN_MAX_BODY_MB', kind: 'number', scale: MiB, default: 20 * MiB, doc: 'Largest request body (MiB).' },
  {
    key: 'limits.uploadBytes',
    flag: 'max-upload-mb',
    env: 'KILN_MAX_UPLOAD_MB',
    kind: 'number',
    scale: MiB,
    default: 10 * MiB,
    doc: 'Largest uploaded image file (MiB).',
  },
  {
    key: 'limits.maxDecodedPixels',
    flag: 'max-decoded-pixels',
    env: 'KILN_MAX_DECODED_PIXELS',
    kind: 'int',
    default: 4096 * 4096,
    doc: 'Largest decoded width x height of an uploaded image (guards against decompression bombs).',
  },
  {
    key: 'queue.maxQueued',
    flag: 'max-queue',
    env: 'KILN_MAX_QUEUE',
    kind: 'int',
    default: 100,
    doc: 'Most jobs waiting; beyond it submissions get 429 with Retry-After.',
  },
  {
    key: 'queue.jobTimeoutMs',
    flag: 'job-timeout',
    env: 'KILN_JOB_TIMEOUT',
    kind: 'number',
    scale: 1000,
    default: 600_000,
    doc: 'Longest a job may run (seconds); then it is stopped and marked failed.',
  },
  {
    key: 'queue.retentionMs',
    flag: 'retention',
    env: 'KILN_RETENTION',
    kind: 'number',
    scale: 3_600_000,
    default: 24 * 3_600_000,
    doc: 'How long finished jobs and their images are kept (hours).',
  },
  {
    key: 'queue.cleanupIntervalMs',
    flag: 'cleanup-interval',
    env: 'KILN_CLEANUP_INTERVAL',
    kind: 'number',
    scale: 1000,
    default: 600_000,
    doc: 'How often expired jobs are removed (seconds).',
  },
  {
    key: 'queue.recoverRunning',
    flag: 'recover-running',
    env: 'KILN_RECOVER_RUNNING',
    kind: { oneOf: ['requeue', 'fail'] },
    default: 'requeue',
    doc: 'What happens at startup to a job that was running when the process died.',
  },
  {
    key: 'queue.maxAttempts',
    flag: 'max-attempts',
    env: 'KILN_MAX_ATTEMPTS',
    kind: 'int',
    default: 2,
    doc: 'Runs a job may start before a job interrupted by a crash (of the server or of the engine process) is marked failed instead of re-run.',
  },
  {
    key: 'queue.shutdownGraceMs',
    flag: 'shutdown-grace',
    env: 'KILN_SHUTDOWN_GRACE',
    kind: 'number',
    scale: 1000,
    default: 30_000,
    doc: 'On shutdown, how long to let the running job finish before it is stopped and re-queued (seconds).',
  },
  {
    key: 'http.headersTimeoutMs',
    flag: 'headers-timeout',
    env: 'KILN_HEADERS_TIMEOUT',
    kind: 'number',
    scale: 1000,
    default: 20_000,
    doc: 'A client must send the request line and headers within this many seconds, or gets 408 and is disconnected.',
  },
  {
    key: 'http.requestTimeoutMs',
    flag: 'request-timeout',
    env: 'KILN_REQUEST_TIMEOUT',
    kind: 'number',
    scale: 1000,
    default: 120_000,
    doc: 'A client must send the whole request (headers and body) within this many seconds, or gets 408 and is disconnected. Waiting for the answer is not counted.',
  },
  {
    key: 'http.keepAliveTimeoutMs',
    flag: 'keep-alive-timeout',
    env: 'KILN_KEEP_ALIVE_TIMEOUT',
    kind: 'number',
    scale: 1000,
    default: 72_000,
    doc: 'An idle keep-alive connection is closed after this many seconds (above the 60 s of common load balancers).',
  },
  {
    key: 'http.idleTimeoutMs',
    flag: 'idle-timeout',
    env: 'KILN_IDLE_TIMEOUT',
    kind: 'number',
    scale: 1000,
    default: 0,
    doc: 'Close a connection with no bytes in either direction for this many seconds; 0 = never (blocking A1111/OpenAI calls wait silently for their job).',
  },
  {
    key: 'http.maxJsonDepth',
    flag: 'max-json-depth',
    env: 'KILN_MAX_JSON_DEPTH',
    kind: 'int',
    default: 64,
    doc: 'Deepest nesting of arrays and objects accepted in a JSON body or JSON form field (deeper: 400).',
  },
  {
    key: 'queue.abortGraceMs',
    flag: 'abort-grace',
    env: 'KILN_ABORT_GRACE',
    kind: 'number',
    scale: 1000,
    default: 10_000,
    doc: 'After a cancel, timeout or shutdown stop, how long one model evaluation may run on before the engine process is killed and replaced (seconds).',
  },
];

export class ConfigError extends Error {
  constructor(
    readonly option: string,
    message: string,
  ) {
    super(`${option}: ${message}`);
    this.name = 'ConfigError';
  }
}

const CONFIG_FILES = ['kiln.config.json', 'kiln.config.yaml', 'kiln.config.yml'];

export interface ConfigSources {
  /** Parsed CLI flags, by flag name without dashes (see parseFlags). */
  flags?: Record<string, string | boolean | string[]>;
  env?: Record<string, string | undefined>;
  cwd?: string;
  /** Values that replace the file's (used by tests instead of writing a file). */
  file?: Record<string, unknown>;
}

/** Top-level config-file keys that are not option rows. */
const FILE_ONLY_KEYS = ['modelAliases', 'modelPresets', 'keys'];

/** Every key a config file may hold: dotted option names (their own unit), flag names (the flag's unit), and the rest. */
export function validFileKeys(): string[] {
  return [...OPTIONS.map((o) => o.key), ...OPTIONS.map((o) => o.flag), ...FILE_ONLY_KEYS];
}

/** An unknown key in the config file is an error naming it and the closest valid key (a typo must not be ignored). */
function checkFileKeys(file: Record<string, unknown>): void {
  const valid = validFileKeys();
  const groups = new Set(OPTIONS.filter((o) => o.key.includes('.')).map((o) => o.key.split('.')[0]!));
  const walk = (obj: Record<string, unknown>, prefix: string) => {
    for (const [k, v] of Object.entries(obj)) {
      const key = prefix + k;
      if (!prefix && groups.has(k) && v !== null && typeof v === 'object' && !Array.isArray(v)) {
        walk(v as Record<string, unknown>, `${k}.`);
        continue;
      }
      if (valid.includes(key)) continue;
      const closest = valid.map((c) => ({ c, d: editDistance(key.toLowerCase(), c.toLowerCase()) })).sort((a, b) => a.d - b.d)[0]!;
      throw new ConfigError(`${key} (config file)`, `unknown key; did you mean "${closest.c}"? (kiln serve --help lists the options)`);
    }
  };
  walk(file, '');
}

/** Parses `--name value`, `--name=value` and bare boolean `--name` (repeated flags collect into a list). */
export function parseFlags(argv: readonly string[]): { flags: Record<string, string | boolean | string[]>; rest: string[] } {
  const flags: Record<string, string | boolean | string[]> = {};
  const rest: string[] = [];
  const booleans = new Set(['insecure', 'offline', 'metrics-public', 'help']);
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (!a.startsWith('--')) {
      rest.push(a);
      continue;
    }
    const eq = a.indexOf('=');
    const name = eq > 0 ? a.slice(2, eq) : a.slice(2);
    let value: string | boolean;
    if (eq > 0) value = a.slice(eq + 1);
    else if (booleans.has(name) || i + 1 >= argv.length || argv[i + 1]!.startsWith('--')) value = true;
    else value = argv[++i]!;
    const prev = flags[name];
    flags[name] = prev === undefined ? value : ([] as string[]).concat(prev as string, String(value));
  }
  return { flags, rest };
}

function getPath(obj: Record<string, unknown> | undefined, path: string): unknown {
  let cur: unknown = obj;
  for (const part of path.split('.')) {
    if (cur === null || typeof cur !== 'object') return undefined;
    cur = (cur as Record<string, unknown>)[part];
  }
  return cur;
}

function setPath(obj: Record<string, unknown>, path: string, value: unknown): void {
  const parts = path.split('.');
  let cur = obj;
  for (const part of parts.slice(0, -1)) {
    cur[part] ??= {};
    cur = cur[part] as Record<string, unknown>;
  }
  cur[parts[parts.length - 1]!] = value;
}

function coerce(opt: OptionSpec, raw: unknown, where: string, cwd: string, fromUser: boolean): unknown {
  const name = `${opt.key} (${where})`;
  const scale = fromUser ? (opt.scale ?? 1) : 1;
  const kind = opt.kind;
  if (typeof kind === 'object') {
    if (!kind.oneOf.includes(String(raw))) throw new ConfigError(name, `must be one of ${kind.oneOf.join(', ')}, got ${JSON.stringify(raw)}`);
    return String(raw);
  }
  switch (kind) {
    case 'bool':
      if (typeof raw === 'boolean') return raw;
      if (['1', 'true', 'yes', 'on'].includes(String(raw).toLowerCase())) return true;
      if (['0', 'false', 'no', 'off', ''].includes(String(raw).toLowerCase())) return false;
      throw new ConfigError(name, `must be true or false, got ${JSON.stringify(raw)}`);
    case 'int':
    case 'number': {
      const n = typeof raw === 'number' ? raw : Number(String(raw).trim());
      if (String(raw).trim() === '' || !Number.isFinite(n) || n < 0 || (kind === 'int' && !Number.isInteger(n))) {
        throw new ConfigError(name, `must be a non-negative ${kind === 'int' ? 'integer' : 'number'}, got ${JSON.stringify(raw)}`);
      }
      return Math.round(n * scale);
    }
    case 'path':
      if (typeof raw !== 'string' || raw === '') throw new ConfigError(name, 'must be a non-empty path');
      return isAbsolute(raw) ? raw : resolve(cwd, raw);
    case 'string':
      if (typeof raw !== 'string') throw new ConfigError(name, `must be a string, got ${JSON.stringify(raw)}`);
      return raw;
    case 'list': {
      const items = Array.isArray(raw) ? raw : typeof raw === 'string' ? raw.split(',') : undefined;
      if (!items || items.some((i) => typeof i !== 'string'))
        throw new ConfigError(name, `must be a comma-separated list (or a list of strings), got ${JSON.stringify(raw)}`);
      return (items as string[]).map((i) => i.trim()).filter(Boolean);
    }
  }
}

/** KEY=VALUE lines of a dotenv file (comments, `export ` and one level of quotes allowed); {} when absent. */
function readDotEnv(path: string): Record<string, string> {
  if (!existsSync(path)) return {};
  const out: Record<string, string> = {};
  for (const [i, raw] of readFileSync(path, 'utf8').split(/\r?\n/).entries()) {
    const line = raw.trim();
    if (!line || line.startsWith('#')) continue;
    const m = /^(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)$/.exec(line);
    if (!m) throw new ConfigError(`${path}:${i + 1}`, 'expected KEY=VALUE');
    const value = m[2]!;
    const quoted = /^(['"])(.*)\1$/.exec(value);
    out[m[1]!] = quoted ? quoted[2]! : value.replace(/\s+#.*$/, '');
  }
  return out;
}

function readConfigFile(path: string): Record<string, unknown> {
  const text = readFileSync(path, 'utf8');
  try {
    const parsed = path.endsWith('.json') ? JSON.parse(text) : parseYaml(text);
    if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) throw new Error('the top level must be an object');
    return parsed as Record<string, unknown>;
  } catch (e) {
    throw new ConfigError(path, `cannot parse: ${(e as Error).message}`);
  }
}

/**
 * `k1,k2` or `name=k1,name2=k2` from an env var / flag into keys with the given role. An unnamed key is named
 * by its source and position (`user-1` from KILN_API_KEYS, `cli-user-1` from --api-key), so keys from different
 * sources never share a name, and with it each other's jobs. Name keys (`name=key`) to keep a name when the
 * list changes: the name is the owner of the key's jobs.
 */
function keysFromList(list: string | string[], role: Role, source: 'env' | 'cli', namePrefix?: string): ApiKey[] {
  const items = ([] as string[])
    .concat(list)
    .flatMap((s) => s.split(','))
    .map((s) => s.trim())
    .filter(Boolean);
  const prefix = namePrefix ?? (source === 'cli' ? `cli-${role}` : role);
  return items.map((item, i) => {
    const eq = item.indexOf('=');
    return eq > 0 ? { name: item.slice(0, eq).trim(), key: item.slice(eq + 1).trim(), role } : { name: `${prefix}-${i + 1}`, key: item, role };
  });
}

function keysFromFile(raw: unknown): ApiKey[] {
  if (raw === undefined) return [];
  if (!Array.isArray(raw)) throw new ConfigError('keys (config file)', 'must be a list of {name, key, role}');
  return raw.map((k, i) => {
    const item = k as Partial<ApiKey>;
    if (typeof item?.key !== 'string' || item.key.length < 8)
      throw new ConfigError(`keys[${i}].key (config file)`, 'must be a string of at least 8 characters');
    if (item.role !== undefined && item.role !== 'user' && item.role !== 'admin')
      throw new ConfigError(`keys[${i}].role (config file)`, 'must be "user" or "admin"');
    if (item.name !== undefined && typeof item.name !== 'string') throw new ConfigError(`keys[${i}].name (config file)`, 'must be a string');
    return { name: item.name ?? `key-${i + 1}`, key: item.key, role: item.role ?? 'user' };
  });
}

/** Names the server uses for callers without a key; a key with one of them would own their jobs. */
const RESERVED_KEY_NAMES = new Set(['anonymous', 'public']);

/**
 * Every key has a distinct, printable name (it owns jobs and shows in logs) and every key is configured once:
 * two keys with one name would read each other's jobs, and one key under two names or roles is ambiguous.
 */
function checkKeys(keys: ApiKey[]): void {
  const names = new Map<string, number>();
  const secrets = new Map<string, string>();
  for (const [i, k] of keys.entries()) {
    if (k.key.length < 8) throw new ConfigError(`API key "${k.name}"`, 'must be at least 8 characters');
    if (!/^[\w.@:+-]{1,64}$/.test(k.name))
      throw new ConfigError(`API key name "${k.name.slice(0, 80)}"`, 'must be 1 to 64 letters, digits or . _ - @ : + (it names the owner of jobs)');
    if (RESERVED_KEY_NAMES.has(k.name.toLowerCase()))
      throw new ConfigError(`API key name "${k.name}"`, 'is reserved for requests without a key; choose another name');
    const clash = names.get(k.name.toLowerCase());
    if (clash !== undefined)
      throw new ConfigError(
        `API key name "${k.name}"`,
        `is given to two keys (#${clash + 1} and #${i + 1}); each key needs its own name, since the name owns its jobs`,
      );
    names.set(k.name.toLowerCase(), i);
    const same = secrets.get(k.key);
    if (same !== undefined) throw new ConfigError(`API key "${k.name}"`, `is the same key as "${same}"; configure each key once`);
    secrets.set(k.key, k.name);
  }
}

export function loadConfig(src: ConfigSources = {}): KilnConfig {
  const cwd = src.cwd ?? process.cwd();
  const flags = src.flags ?? {};
  const given = src.env ?? process.env;
  const known = new Set([...OPTIONS.map((o) => o.flag), 'config', 'api-key', 'admin-key', 'help']);
  for (const f of Object.keys(flags)) if (!known.has(f)) throw new ConfigError(`--${f}`, 'unknown option (see kiln serve --help)');

  // The data dir decides where the config file lives, so it is resolved from flags/env first.
  const dataDirRaw = flags['data-dir'] ?? given.KILN_DATA_DIR ?? './kiln-data';
  const dataDir = resolve(cwd, String(dataDirRaw));
  // A .env file in the data dir (seed 003 keeps API_KEY / ADMIN_API_KEY there) fills what the environment lacks.
  const env = { ...readDotEnv(join(dataDir, '.env')), ...given };
  let file: Record<string, unknown> = {};
  let fileDir = dataDir;
  const explicit = flags.config ?? env.KILN_CONFIG;
  if (explicit) {
    const p = resolve(cwd, String(explicit));
    if (!existsSync(p)) throw new ConfigError('--config', `file not found: ${p}`);
    file = readConfigFile(p);
    fileDir = resolve(p, '..');
  } else {
    const found = CONFIG_FILES.map((n) => join(dataDir, n)).find((p) => existsSync(p));
    if (found) file = readConfigFile(found);
  }
  if (src.file) file = { ...file, ...src.file };
  checkFileKeys(file);

  const out: Record<string, unknown> = {};
  for (const opt of OPTIONS) {
    const flag = flags[opt.flag];
    const envValue = env[opt.env];
    // A key written as its flag name (when that differs from the dotted name) takes the flag's unit.
    // (`queue` is both the --queue flag and the section of queue.* keys: a section is never a flag value.)
    const rawByFlag = opt.flag === opt.key ? undefined : file[opt.flag];
    const byFlag = rawByFlag !== null && typeof rawByFlag === 'object' && !Array.isArray(rawByFlag) ? undefined : rawByFlag;
    if (byFlag !== undefined && getPath(file, opt.key) !== undefined)
      throw new ConfigError(`${opt.flag} (config file)`, `given twice, also as ${opt.key}; keep one`);
    const fileValue = byFlag ?? getPath(file, opt.key);
    if (byFlag === undefined && fileValue !== undefined && opt.key.endsWith('Ms') && typeof fileValue === 'number' && fileValue > 0 && fileValue < 1000)
      throw new ConfigError(
        `${opt.key} (config file)`,
        `${fileValue} ms is under a second; did you mean seconds? Write "${opt.flag}: ${fileValue}" (flag names take seconds) or ${opt.key}: ${fileValue * 1000}`,
      );
    let value: unknown;
    if (flag !== undefined) {
      // A repeated list flag adds up; any other repeated flag: the last one wins.
      const given = Array.isArray(flag) ? (opt.kind === 'list' ? flag.join(',') : flag[flag.length - 1]) : flag;
      value = coerce(opt, given, `--${opt.flag}`, cwd, true);
    } else if (envValue !== undefined && envValue !== '') value = coerce(opt, envValue, opt.env, cwd, true);
    else if (byFlag !== undefined)
      value = coerce(opt, byFlag, 'config file', fileDir, true); // flag names: the flag's unit
    else if (fileValue !== undefined)
      value = coerce(opt, fileValue, 'config file', fileDir, false); // dotted names: the unit their suffix names (ms, bytes)
    else value = opt.default;
    if (value !== undefined) setPath(out, opt.key, value);
  }
  out.dataDir = dataDir;
  out.modelsDir ??= join(dataDir, 'models');
  out.cacheDir ??= join(dataDir, 'cache');
  out.hfCacheDir ??= getHFHubCachePath();
  if (typeof out.storage === 'string') {
    if (out.storage.startsWith('s3://')) {
      try {
        parseS3Url(out.storage);
      } catch (e) {
        throw new ConfigError('storage', (e as Error).message);
      }
    } else out.storage = resolve(cwd, out.storage);
  }
  if (out.queueUrl !== 'sqlite' && !/^rediss?:\/\/[^/]/.test(String(out.queueUrl)))
    throw new ConfigError('queue', `must be sqlite or redis://host:port[/db], got ${JSON.stringify(out.queueUrl)}`);
  if (out.worker === false && out.queueUrl === 'sqlite')
    throw new ConfigError('worker', 'an API node that runs no jobs needs a shared queue (--queue redis://…) that workers take jobs from');
  if (out.presignMs && !String(out.storage ?? '').startsWith('s3://')) throw new ConfigError('presign', 'only applies with --storage s3://…');

  const aliases = (file.modelAliases ?? {}) as Record<string, unknown>;
  if (typeof aliases !== 'object' || Array.isArray(aliases) || Object.values(aliases).some((v) => typeof v !== 'string')) {
    throw new ConfigError('modelAliases (config file)', 'must map labels to model names, e.g. {"Amanatsu": "amanatsu-v11.safetensors"}');
  }
  out.modelAliases = aliases;
  try {
    out.modelPresets = parseModelPresets(file.modelPresets, out.limits as Limits);
  } catch (e) {
    throw e instanceof ModelPresetError ? new ConfigError(`${e.key} (config file)`, e.detail) : e;
  }

  const keys = [
    ...keysFromFile(file.keys),
    ...(env.KILN_API_KEYS ? keysFromList(env.KILN_API_KEYS, 'user', 'env') : []),
    ...(env.KILN_ADMIN_KEYS ? keysFromList(env.KILN_ADMIN_KEYS, 'admin', 'env') : []),
    // Seed 003's own names, beside Kiln's.
    ...(env.API_KEY ? keysFromList(env.API_KEY, 'user', 'env', 'api-key') : []),
    ...(env.ADMIN_API_KEY ? keysFromList(env.ADMIN_API_KEY, 'admin', 'env', 'admin-api-key') : []),
    ...(flags['api-key'] !== undefined ? keysFromList(flags['api-key'] as string | string[], 'user', 'cli') : []),
    ...(flags['admin-key'] !== undefined ? keysFromList(flags['admin-key'] as string | string[], 'admin', 'cli') : []),
  ];
  checkKeys(keys);
  out.keys = keys;
  try {
    new WebhookPolicy(out.webhookAllow as string[]);
  } catch (e) {
    throw new ConfigError('webhookAllow', (e as Error).message);
  }

  const cfg = out as unknown as KilnConfig;
  if (cfg.http.requestTimeoutMs > 0 && cfg.http.headersTimeoutMs > cfg.http.requestTimeoutMs)
    throw new ConfigError('http.headersTimeoutMs', 'the headers timeout cannot be longer than the request timeout (--request-timeout)');
  if (cfg.http.maxJsonDepth < 1) throw new ConfigError('http.maxJsonDepth', 'must be at least 1');
  if (Boolean(cfg.tlsCert) !== Boolean(cfg.tlsKey)) throw new ConfigError('tlsCert/tlsKey', 'give both --tls-cert and --tls-key, or neither');
  return cfg;
}

/** A config for tests and embedding: defaults plus overrides, no files or environment read. */
export function testConfig(
  dataDir: string,
  overrides: Partial<Omit<KilnConfig, 'limits' | 'queue' | 'http'>> & {
    limits?: Partial<Limits>;
    queue?: Partial<QueueConfig>;
    http?: Partial<HttpBounds>;
  } = {},
): KilnConfig {
  // The HF cache is the test's own, never the machine's, and the hubs are a closed local port: a test never
  // reaches the internet unless it starts its own hub server and says so.
  const closed = 'http://127.0.0.1:9';
  const base = loadConfig({
    flags: { 'data-dir': dataDir, 'log-level': 'silent', 'hf-cache': join(dataDir, 'hf-cache'), 'hf-endpoint': closed, 'civitai-endpoint': closed },
    env: {},
  });
  // KILN_TEST_REDIS_URL runs test servers on a Redis queue (a key prefix per data dir), so the same server tests
  // check both backends (test/scale/redis-backend-suite.test.ts).
  const redis = process.env.KILN_TEST_REDIS_URL;
  if (redis) base.queueUrl = `${redis}?prefix=${encodeURIComponent(dataDir)}:`; // per data dir: a restart finds its jobs
  return {
    ...base,
    // Test servers run tiny SD1, which cannot be transparent; the LayerDiffuse tests turn seed 000's transparency on.
    seed000Transparent: false,
    ...overrides,
    limits: { ...base.limits, ...overrides.limits },
    queue: { ...base.queue, ...overrides.queue },
    http: { ...base.http, ...overrides.http },
  };
}

/** The graph cache, one folder for `kiln serve` and `kiln generate` alike. */
export function graphCacheDir(config: Pick<KilnConfig, 'cacheDir'>): string {
  return join(config.cacheDir, 'graphs');
}

/** The resolved configuration for `kiln serve --print-config`: every value, with API keys and TLS key masked. */
export function printableConfig(config: KilnConfig): Record<string, unknown> {
  return {
    ...config,
    keys: config.keys.map((k) => ({ name: k.name, role: k.role, key: `${k.key.slice(0, 2)}…(${k.key.length} chars)` })),
    ...(config.tlsKey ? { tlsKey: config.tlsKey } : {}),
  };
}

export function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\./.test(host);
}

/** Human-readable option table for `kiln serve --help`. */
export function optionsHelp(): string {
  const lines = OPTIONS.map((o) => {
    const def =
      o.default === undefined || (Array.isArray(o.default) && o.default.length === 0) ? '' : ` (default ${o.scale ? Number(o.default) / o.scale : o.default})`;
    return `  --${o.flag.padEnd(20)} ${o.env.padEnd(26)} ${o.doc}${def}`;
  });
  return [
    'Options (flag, environment variable, meaning). Config file keys use the names in src/server/config.ts.',
    ...lines,
    '  --api-key KEY         KILN_API_KEYS (comma list)  User API key; "name=key" names it (the name owns its jobs; unnamed: user-N from KILN_API_KEYS, cli-user-N from --api-key). Repeatable.',
    '  --admin-key KEY       KILN_ADMIN_KEYS             Admin API key (model management). Repeatable.',
    '  --config FILE         KILN_CONFIG                 Config file (default: kiln.config.json/.yaml in the data dir).',
  ].join('\n');
}
