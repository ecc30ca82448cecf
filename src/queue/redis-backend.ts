// The Redis JobBackend, for several API nodes and workers sharing one queue. Two layers:
// - Job records live in Redis hashes (one per job) with sorted-set indexes (all / by state / by owner / by
//   client id / by finish time), changed by small Lua scripts so a state change and its index moves are one
//   atomic step (two processes can never both end a job).
// - Dispatch is BullMQ: a queued job is also a BullMQ job (same id). A worker takes it with getNextJob (manual
//   processing), holds its lock while the job runs (renewed on a timer; the engine runs in another process, so
//   this event loop stays free to renew), and releases it when the job ends. A worker that dies stops renewing;
//   BullMQ's stalled-job check puts the job back in line and another worker takes it (attempt + 1). That is why
//   interrupted() is empty here: recovery is continuous, not a start-up sweep.
// Events, previews and cancel requests cross processes through Redis pub/sub and short-lived keys.
import { EventEmitter } from 'node:events';
import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import type { RedisOptions } from 'ioredis';
import type { Job as BullJob } from 'bullmq';
import type { FinalState, FinishData, JobBackend, JobFilter, NewJob } from './backend.ts';
import { BackendUnavailableError } from './backend.ts';
import type { Job, JobError, JobEvent, JobPreview, JobResult, JobState, LiveProgress } from './job.ts';
import { JOB_STATES } from './job.ts';
import type { JobSpec } from './job-spec.ts';
import { RouteQueues } from './redis-routes.ts';
import { ANY_ROUTE, routeOrder, type JobRouting } from './routing.ts';
import { dispatchRank, MAX_TURN, priorityOf, rankRange } from './fairness.ts';

export interface RedisBackendOptions {
  /** redis://[user:password@]host:port[/db][?prefix=name:] or rediss:// */
  url: string;
  /** Key prefix for records, indexes and channels; BullMQ's keys go under `<prefix>bull`. Default `kiln:`. */
  prefix?: string;
  /** How long a worker's hold on a running job lasts without renewal (renewed every third of it). */
  lockMs?: number;
  /** How often workers look for jobs whose holder stopped renewing. */
  stalledCheckMs?: number;
  /** A job re-delivered after its worker died more often than this fails as interrupted. */
  maxAttempts?: number;
  /** A command that cannot reach Redis fails after this long (the HTTP layer answers 503). */
  commandTimeoutMs?: number;
  /** Model-aware routing (routing.ts): which model queue a job goes to, and which ones this worker takes from. */
  routing?: JobRouting;
}

/** What a worker announces about itself (GET /v1/workers, /health). */
export interface WorkerAnnouncement {
  id: string;
  host: string;
  pid: number;
  device: string;
  /** Models its engine holds in memory now. */
  loadedModels: string[];
  /** Models it runs jobs for (routing.ts): `--model X` gives [X]; otherwise every checkpoint it has. */
  models?: string[];
  /** The job it is running, if any. */
  job?: string;
  startedAt: number;
  heartbeatAt: number;
}

/** A running job this process took from BullMQ, with its lock token and renewal timer. */
interface Held {
  bull: BullJob;
  token: string;
  renew: NodeJS.Timeout;
}

const PREVIEW_TTL_S = 3600;

/**
 * Moves a job between states if its state is one of the allowed ones, atomically with the state/finished
 * indexes. KEYS[1] = the job hash. ARGV: prefix, id, allowed states (comma list), new state, attempts op
 * (inc|dec|zero|keep), finishedAt ('' = none), the worker that must hold the job ('' = anyone: a job that
 * went to another worker after this one lost its lock is no longer this one's to end), then HSET pairs as field,
 * value until a '--' marker, then fields to HDEL. Returns the previous state, or false when nothing changed.
 */
const TRANSITION = `
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return false end
local allowed = false
for s in string.gmatch(ARGV[3], '[^,]+') do if s == state then allowed = true end end
if not allowed then return false end
if ARGV[7] ~= '' and redis.call('HGET', KEYS[1], 'worker') ~= ARGV[7] then return false end
local prefix, id, to = ARGV[1], ARGV[2], ARGV[4]
local seq = tonumber(redis.call('HGET', KEYS[1], 'seq'))
redis.call('ZREM', prefix .. 'state:' .. state, id)
redis.call('ZADD', prefix .. 'state:' .. to, seq, id)
redis.call('HSET', KEYS[1], 'state', to)
local owner = redis.call('HGET', KEYS[1], 'owner')
if state == 'queued' and to ~= 'queued' then
  redis.call('ZREM', prefix .. 'ready', id)
  redis.call('ZREM', prefix .. 'ready:' .. owner, id)
end
local op = ARGV[5]
if op == 'inc' then redis.call('HINCRBY', KEYS[1], 'attempts', 1)
elseif op == 'zero' then redis.call('HSET', KEYS[1], 'attempts', 0)
elseif op == 'dec' then
  local a = tonumber(redis.call('HGET', KEYS[1], 'attempts') or '0')
  if a > 0 then redis.call('HSET', KEYS[1], 'attempts', a - 1) end
end
if ARGV[6] ~= '' then redis.call('ZADD', prefix .. 'finished', tonumber(ARGV[6]), id)
else redis.call('ZREM', prefix .. 'finished', id) end
local i = 8
while ARGV[i] ~= '--' do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  i = i + 2
end
i = i + 1
while ARGV[i] do
  redis.call('HDEL', KEYS[1], ARGV[i])
  i = i + 1
end
local rank = redis.call('HGET', KEYS[1], 'rank')
if to == 'queued' and state ~= 'queued' and rank then
  redis.call('HSET', KEYS[1], 'ticket', redis.call('INCR', prefix .. 'ticket'))
  redis.call('ZADD', prefix .. 'ready', rank, id)
  redis.call('ZADD', prefix .. 'ready:' .. owner, rank, id)
end
return state
`;

/**
 * Puts a queued job in the run order (fairness.ts), atomically with reading the turns it follows. KEYS[1] = the
 * job hash. ARGV: prefix, id, owner, priority, lowest and highest rank of that priority (dispatchRank), max turn.
 * The turn is one after the later of the owner's last queued turn there and the turn before the head's
 * (fairness.ts nextTurn). Returns the rank (BullMQ's priority for the job).
 */
const QUEUE_TURN = `
local prefix, id, owner = ARGV[1], ARGV[2], ARGV[3]
local lo, hi, maxTurn = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local head = redis.call('ZRANGEBYSCORE', prefix .. 'ready', lo, hi, 'WITHSCORES', 'LIMIT', 0, 1)
local last = redis.call('ZREVRANGEBYSCORE', prefix .. 'ready:' .. owner, hi, lo, 'WITHSCORES', 'LIMIT', 0, 1)
local base = 0
if head[2] then base = tonumber(head[2]) - lo - 1 end
if last[2] and tonumber(last[2]) - lo > base then base = tonumber(last[2]) - lo end
local turn = math.min(maxTurn, base + 1)
local rank = lo + turn
redis.call('HSET', KEYS[1], 'priority', ARGV[4], 'turn', turn, 'rank', rank, 'ticket', redis.call('INCR', prefix .. 'ticket'))
redis.call('ZADD', prefix .. 'ready', rank, id)
redis.call('ZADD', prefix .. 'ready:' .. owner, rank, id)
return rank
`;

/** Queued jobs that run before one (rank, then ticket among equal ranks). ARGV: prefix, id, rank, ticket. */
const QUEUED_AHEAD = `
local prefix, rank, ticket = ARGV[1], tonumber(ARGV[3]), tonumber(ARGV[4])
local n = redis.call('ZCOUNT', prefix .. 'ready', '-inf', '(' .. rank)
for _, other in ipairs(redis.call('ZRANGEBYSCORE', prefix .. 'ready', rank, rank)) do
  if other ~= ARGV[2] and tonumber(redis.call('HGET', prefix .. 'job:' .. other, 'ticket') or '0') < ticket then n = n + 1 end
end
return n
`;

/** Live progress, written only while the job runs (a late write never overwrites a final record). */
const SET_PROGRESS = `
if redis.call('HGET', KEYS[1], 'state') ~= 'running' or redis.call('HGET', KEYS[1], 'worker') ~= ARGV[5] then return 0 end
redis.call('HSET', KEYS[1], 'progress', ARGV[1], 'step', ARGV[2], 'totalSteps', ARGV[3], 'phase', ARGV[4])
return 1
`;

/** JSON with byte arrays (preview pixels) as base64, for records, events and previews. */
function encode(value: unknown): string {
  return JSON.stringify(value, (_k, v) => (v instanceof Uint8Array ? { $bytes: Buffer.from(v).toString('base64') } : v));
}
function decode<T>(text: string): T {
  return JSON.parse(text, (_k, v) => (v && typeof v === 'object' && typeof v.$bytes === 'string' ? new Uint8Array(Buffer.from(v.$bytes, 'base64')) : v)) as T;
}

function parseOr<T>(text: string | undefined, fallback: T): T {
  if (text === undefined || text === '') return fallback;
  try {
    return decode<T>(text);
  } catch {
    return fallback;
  }
}

/** A hash (and its extra hash) as a Job. */
function fromHash(h: Record<string, string>, extra: Record<string, string>): Job {
  const state = h.state as JobState;
  const num = (k: string) => (h[k] === undefined || h[k] === '' ? undefined : Number(h[k]));
  return {
    id: h.id!,
    seq: Number(h.seq),
    priority: num('priority') ?? 0,
    turn: num('turn') ?? 0,
    ticket: num('ticket') ?? 0,
    state,
    owner: h.owner!,
    spec: parseOr<JobSpec>(h.spec, {} as JobSpec),
    createdAt: Number(h.createdAt),
    startedAt: num('startedAt'),
    finishedAt: num('finishedAt'),
    attempts: Number(h.attempts ?? 0),
    error: h.error ? parseOr<JobError | undefined>(h.error, { code: 'storage', message: 'the stored error could not be read' }) : undefined,
    result: h.result ? parseOr<JobResult | undefined>(h.result, undefined) : undefined,
    progress: num('progress') ?? (state === 'succeeded' ? 1 : 0),
    phase: h.phase ? (h.phase as Job['phase']) : undefined,
    step: num('step') ?? 0,
    totalSteps: num('totalSteps') ?? 0,
    extra: Object.fromEntries(Object.entries(extra).map(([k, v]) => [k, parseOr<unknown>(v, null)])),
    externalId: h.externalId || undefined,
  };
}

function isConnectionError(e: unknown): boolean {
  const msg = (e as Error)?.message ?? '';
  return (
    /Stream isn't writeable|Connection is closed|ECONNREFUSED|ECONNRESET|ETIMEDOUT|EPIPE|Reached the max retries|timed out/i.test(msg) ||
    (e as { code?: string })?.code === 'ECONNREFUSED'
  );
}

export class RedisJobBackend implements JobBackend {
  readonly prefix: string;
  private readonly cmd: Redis;
  /** BullMQ queues per route (redis-routes.ts); workers are made on the first claim (API nodes never make one). */
  private readonly queues: RouteQueues;
  /** BullMQ does not close a connection it was given: closed here. */
  private readonly producerConn: Redis;
  private sub?: Redis;
  private reconciled = false;
  private readonly held = new Map<string, Held>();
  private readonly emitter = new EventEmitter();
  private readonly workerId = randomUUID().slice(0, 8);
  private claims = 0;
  private closed = false;
  private readonly connection: RedisOptions;
  private readonly lockMs: number;

  constructor(private readonly opts: RedisBackendOptions) {
    this.emitter.setMaxListeners(0);
    const url = new URL(opts.url);
    // ?prefix=team-a: keeps several Kiln deployments (or test servers) apart on one Redis.
    this.prefix = opts.prefix ?? url.searchParams.get('prefix') ?? 'kiln:';
    this.lockMs = opts.lockMs ?? 30_000;
    if (url.protocol !== 'redis:' && url.protocol !== 'rediss:') throw new Error(`--queue: expected redis://host:port, got ${opts.url}`);
    this.connection = {
      host: url.hostname,
      port: Number(url.port || 6379),
      username: url.username ? decodeURIComponent(url.username) : undefined,
      password: url.password ? decodeURIComponent(url.password) : undefined,
      db: url.pathname.length > 1 ? Number(url.pathname.slice(1)) : 0,
      tls: url.protocol === 'rediss:' ? {} : undefined,
    };
    // Fail fast while Redis is away (the HTTP layer answers 503) instead of queueing commands in memory.
    const failFast: RedisOptions = {
      ...this.connection,
      enableOfflineQueue: false,
      maxRetriesPerRequest: 1,
      commandTimeout: opts.commandTimeoutMs ?? 5000,
      retryStrategy: (n) => Math.min(200 * n, 2000),
    };
    this.cmd = new Redis(failFast);
    this.cmd.on('error', () => undefined); // reconnects on its own; callers see BackendUnavailableError
    this.cmd.defineCommand('kilnTransition', { numberOfKeys: 1, lua: TRANSITION });
    this.cmd.defineCommand('kilnSetProgress', { numberOfKeys: 1, lua: SET_PROGRESS });
    this.cmd.defineCommand('kilnQueueTurn', { numberOfKeys: 1, lua: QUEUE_TURN });
    this.cmd.defineCommand('kilnQueuedAhead', { numberOfKeys: 0, lua: QUEUED_AHEAD });
    this.producerConn = new Redis(failFast);
    this.producerConn.on('error', () => undefined);
    this.queues = new RouteQueues({
      prefix: `${this.prefix}bull`,
      producerConnection: this.producerConn,
      workerConnection: {
        host: this.connection.host,
        port: this.connection.port,
        username: this.connection.username,
        password: this.connection.password,
        db: this.connection.db,
        tls: this.connection.tls,
        maxRetriesPerRequest: null,
      },
      lockMs: this.lockMs,
      stalledCheckMs: opts.stalledCheckMs ?? 30_000,
      // A dead worker's job back in line wakes every idle worker (they otherwise wait for a 'queued' event).
      onStalled: (jobId) =>
        void this.read(jobId)
          .then((job) => (job ? this.publish({ type: 'queued', job }) : undefined))
          .catch(() => undefined),
    });
  }

  /** Resolves once Redis answers (start-up); rejects with BackendUnavailableError after `timeoutMs`. */
  async ready(timeoutMs = 10_000): Promise<void> {
    const end = Date.now() + timeoutMs;
    for (;;) {
      try {
        await this.cmd.ping();
        return;
      } catch (e) {
        if (Date.now() > end) throw new BackendUnavailableError(`Redis at ${this.describe()} does not answer: ${(e as Error).message}`);
        await new Promise((r) => setTimeout(r, 200));
      }
    }
  }

  describe(): string {
    return `${this.connection.host}:${this.connection.port}`;
  }

  private key(id: string): string {
    return `${this.prefix}job:${id}`;
  }

  /** Runs a Redis call; connection failures become BackendUnavailableError (503 at the HTTP layer). */
  private async io<T>(fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (e) {
      if (isConnectionError(e)) throw new BackendUnavailableError(`the job queue (Redis at ${this.describe()}) is unavailable: ${(e as Error).message}`);
      throw e;
    }
  }

  private async read(id: string): Promise<Job | undefined> {
    const [h, extra] = await this.io(() => Promise.all([this.cmd.hgetall(this.key(id)), this.cmd.hgetall(`${this.prefix}extra:${id}`)]));
    return h.state ? fromHash(h, extra) : undefined;
  }

  private async readMany(ids: string[]): Promise<Job[]> {
    if (ids.length === 0) return [];
    const pipe = this.cmd.pipeline();
    for (const id of ids) pipe.hgetall(this.key(id)).hgetall(`${this.prefix}extra:${id}`);
    const out = (await this.io(() => pipe.exec())) ?? [];
    const jobs: Job[] = [];
    for (let i = 0; i < ids.length; i++) {
      const h = out[2 * i]?.[1] as Record<string, string> | undefined;
      const extra = (out[2 * i + 1]?.[1] as Record<string, string> | undefined) ?? {};
      if (h?.state) jobs.push(fromHash(h, extra));
    }
    return jobs;
  }

  private async transition(
    id: string,
    from: readonly JobState[],
    to: JobState,
    attempts: 'inc' | 'dec' | 'zero' | 'keep',
    finishedAt: number | undefined,
    set: Record<string, string | number>,
    del: string[] = [],
  ): Promise<JobState | undefined> {
    const pairs = Object.entries(set).flatMap(([k, v]) => [k, String(v)]);
    const prev = await this.io(() =>
      (this.cmd as unknown as { kilnTransition: (...a: unknown[]) => Promise<string | null> }).kilnTransition(
        this.key(id),
        this.prefix,
        id,
        from.join(','),
        to,
        attempts,
        finishedAt === undefined ? '' : String(finishedAt),
        this.held.has(id) ? this.workerId : '',
        ...pairs,
        '--',
        ...del,
      ),
    );
    return prev ? (prev as JobState) : undefined;
  }

  /** The route stored with a job (ANY_ROUTE for jobs queued without routing). */
  private async routeOf(id: string): Promise<string> {
    return (await this.io(() => this.cmd.hget(this.key(id), 'route'))) ?? ANY_ROUTE;
  }

  /** Gives a queued record its turn in the run order (fairness.ts); returns its rank. */
  private async queueTurn(id: string, owner: string, priority: number): Promise<number> {
    const [lo, hi] = rankRange(priority);
    const rank = await this.io(() =>
      (this.cmd as unknown as { kilnQueueTurn: (...a: unknown[]) => Promise<number> }).kilnQueueTurn(
        this.key(id),
        this.prefix,
        id,
        owner,
        String(priority),
        String(lo),
        String(hi),
        String(MAX_TURN),
      ),
    );
    return Number(rank);
  }

  /** The queued job's BullMQ entry in its route's queue, ranked by its stored turn (BullMQ serves the lowest rank first). */
  private async enqueue(id: string, route?: string): Promise<void> {
    const r = route ?? (await this.routeOf(id));
    const rank = Number(await this.io(() => this.cmd.hget(this.key(id), 'rank'))) || dispatchRank(0, 0);
    await this.io(() => this.queues.producer(r).add('job', { id }, { jobId: id, removeOnComplete: true, removeOnFail: true, priority: rank }));
  }

  async insert(job: NewJob): Promise<Job> {
    const seq = await this.io(() => this.cmd.incr(`${this.prefix}seq`));
    const state: JobState = job.failed ? 'failed' : 'queued';
    const fields: Record<string, string | number> = {
      id: job.id,
      seq,
      state,
      owner: job.owner,
      spec: encode(job.spec),
      createdAt: job.createdAt,
      attempts: 0,
    };
    if (job.failed) {
      fields.finishedAt = job.createdAt;
      fields.error = encode(job.failed);
    }
    if (job.externalId) fields.externalId = job.externalId;
    const route = this.opts.routing?.routeOf(job.spec) ?? ANY_ROUTE;
    if (route !== ANY_ROUTE) fields.route = route;
    const m = this.cmd.multi().hset(this.key(job.id), fields);
    if (route !== ANY_ROUTE) m.sadd(`${this.prefix}routes`, route);
    const extra = Object.entries(job.extra ?? {});
    if (extra.length) m.hset(`${this.prefix}extra:${job.id}`, Object.fromEntries(extra.map(([k, v]) => [k, encode(v)])));
    m.zadd(`${this.prefix}all`, seq, job.id).zadd(`${this.prefix}state:${state}`, seq, job.id).zadd(`${this.prefix}owner:${job.owner}`, seq, job.id);
    if (job.externalId) m.zadd(`${this.prefix}ext:${job.externalId}`, seq, job.id);
    if (job.failed) m.zadd(`${this.prefix}finished`, job.createdAt, job.id);
    await this.io(() => m.exec());
    if (!job.failed) {
      await this.queueTurn(job.id, job.owner, priorityOf(job.spec));
      await this.enqueue(job.id, route);
    }
    return (await this.read(job.id))!;
  }

  get(id: string): Promise<Job | undefined> {
    return this.read(id);
  }

  async findByExternalId(externalId: string, owner?: string): Promise<Job | undefined> {
    const ids = await this.io(() => this.cmd.zrevrange(`${this.prefix}ext:${externalId}`, 0, 99));
    const jobs = await this.readMany(ids);
    return jobs.find((j) => owner === undefined || j.owner === owner);
  }

  async list(f: JobFilter): Promise<Job[]> {
    const index = f.owner !== undefined ? `${this.prefix}owner:${f.owner}` : f.state !== undefined ? `${this.prefix}state:${f.state}` : `${this.prefix}all`;
    const max = f.beforeSeq !== undefined ? `(${f.beforeSeq}` : '+inf';
    const out: Job[] = [];
    let offset = 0;
    const page = Math.max(f.limit, 50);
    // Owner and state together: walk the owner's index newest first, keeping the matching state.
    while (out.length < f.limit) {
      const ids = await this.io(() => this.cmd.zrevrangebyscore(index, max, '-inf', 'LIMIT', offset, page));
      if (ids.length === 0) break;
      for (const j of await this.readMany(ids)) if (f.state === undefined || j.state === f.state) out.push(j);
      offset += ids.length;
      if (f.owner === undefined || f.state === undefined) break;
    }
    return out.slice(0, f.limit);
  }

  async counts(): Promise<Record<JobState, number>> {
    const pipe = this.cmd.pipeline();
    for (const s of JOB_STATES) pipe.zcard(`${this.prefix}state:${s}`);
    const res = (await this.io(() => pipe.exec())) ?? [];
    return Object.fromEntries(JOB_STATES.map((s, i) => [s, Number(res[i]?.[1] ?? 0)])) as Record<JobState, number>;
  }

  async queuedAhead(job: Job): Promise<number> {
    const rank = dispatchRank(job.priority, job.turn);
    return Number(
      await this.io(() =>
        (this.cmd as unknown as { kilnQueuedAhead: (...a: unknown[]) => Promise<number> }).kilnQueuedAhead(
          this.prefix,
          job.id,
          String(rank),
          String(job.ticket),
        ),
      ),
    );
  }

  async ensureDispatched(id: string): Promise<void> {
    const state = await this.io(() => this.cmd.hget(this.key(id), 'state'));
    if (state === 'queued') await this.enqueue(id); // same jobId: a no-op when BullMQ has it
  }

  private async reconcile(): Promise<void> {
    const queued = await this.cmd.zrange(`${this.prefix}state:queued`, '0', '-1');
    for (const id of queued) await this.enqueue(id); // same jobId: a no-op when BullMQ has it
  }

  async claimNext(clock: () => number): Promise<Job | undefined> {
    if (!this.reconciled) {
      this.reconciled = true;
      // Queued records whose BullMQ job was never added (a producer died between the two writes) get one now.
      void this.reconcile().catch(() => undefined);
    }
    for (;;) {
      const token = `${this.workerId}:${++this.claims}`;
      const known = await this.io(() => this.cmd.smembers(`${this.prefix}routes`));
      const bull = await this.io(() => this.queues.next(routeOrder(known, this.opts.routing, this.claims), token));
      if (!bull?.id) return undefined;
      // Read after the take: the first claim waits for the worker's connection, and a job queued meanwhile
      // would otherwise start before it was created (a negative queue time).
      const now = clock();
      const id = bull.id;
      const before = await this.read(id);
      const release = () => bull.moveToCompleted(null, token, false).catch(() => undefined);
      if (!before || (before.state !== 'queued' && before.state !== 'running')) {
        await release(); // cancelled while it waited, or deleted
        continue;
      }
      const cancelled = (await this.io(() => this.cmd.hget(this.key(id), 'cancelRequested'))) === '1';
      if (before.state === 'running' && (cancelled || before.attempts >= (this.opts.maxAttempts ?? 2))) {
        // Its worker died; re-running is not allowed (cancel asked, or out of attempts): end it here.
        const why = cancelled
          ? undefined
          : `the worker running this job stopped, and it already ran ${before.attempts} time(s) (limit ${this.opts.maxAttempts ?? 2}); it was not re-run`;
        const done = await this.finish(id, ['running'], cancelled ? 'cancelled' : 'failed', now, why ? { error: { code: 'interrupted', message: why } } : {});
        await release();
        if (done) await this.publish({ type: done.state as 'failed' | 'cancelled', job: done });
        continue;
      }
      const prev = await this.transition(id, ['queued', 'running'], 'running', 'inc', undefined, { startedAt: now, worker: this.workerId }, [
        'progress',
        'step',
        'totalSteps',
        'phase',
      ]);
      if (!prev) {
        await release();
        continue;
      }
      const renew = setInterval(() => void bull.extendLock(token, this.lockMs).catch(() => undefined), Math.max(200, this.lockMs / 3));
      renew.unref();
      this.held.set(id, { bull, token, renew });
      await this.io(() => this.cmd.del(`${this.prefix}preview:${id}`));
      const job = (await this.read(id))!;
      // A job for the API node's default model was routed by that model's name: run that model here too.
      const route = await this.routeOf(id);
      return route !== ANY_ROUTE && job.spec.model === undefined && job.spec.kind !== 'upscale' ? { ...job, spec: { ...job.spec, model: route } } : job;
    }
  }

  /** Gives up this process's hold on a job's BullMQ entry (the record says what happened to it). */
  private async letGo(id: string): Promise<void> {
    const h = this.held.get(id);
    if (!h) return;
    this.held.delete(id);
    clearInterval(h.renew);
    await h.bull.moveToCompleted(null, h.token, false).catch(() => undefined);
  }

  async setProgress(id: string, p: LiveProgress): Promise<void> {
    await this.io(() =>
      (this.cmd as unknown as { kilnSetProgress: (...a: unknown[]) => Promise<number> }).kilnSetProgress(
        this.key(id),
        String(p.progress),
        String(p.step),
        String(p.totalSteps),
        p.phase ?? '',
        this.workerId,
      ),
    );
  }

  async requeue(id: string, refundAttempt: boolean): Promise<Job | undefined> {
    const prev = await this.transition(id, ['running'], 'queued', refundAttempt ? 'dec' : 'keep', undefined, {}, [
      'startedAt',
      'progress',
      'step',
      'totalSteps',
      'phase',
      'worker',
    ]);
    await this.letGo(id);
    if (prev) {
      await this.io(() => this.cmd.del(`${this.prefix}preview:${id}`));
      await this.enqueue(id); // with the turn it had: it was already running, so it is at or near the head
    }
    return this.read(id);
  }

  async finish(id: string, from: readonly JobState[], state: FinalState, now: number, data: FinishData): Promise<Job | undefined> {
    const set: Record<string, string | number> = { finishedAt: now };
    const del: string[] = [];
    for (const [k, v] of [
      ['result', data.result],
      ['error', data.error],
    ] as const) {
      if (v === undefined) del.push(k);
      else set[k] = encode(v);
    }
    if (data.progress) {
      set.progress = data.progress.progress;
      set.step = data.progress.step;
      set.totalSteps = data.progress.totalSteps;
    } else del.push('progress', 'step', 'totalSteps');
    del.push('phase');
    const prev = await this.transition(id, from, state, 'keep', now, set, del);
    if (!prev) return undefined;
    await this.io(() => this.cmd.del(`${this.prefix}preview:${id}`));
    if (this.held.has(id)) await this.letGo(id);
    else if (prev === 'queued')
      await this.queues
        .producer(await this.routeOf(id))
        .remove(id)
        .catch(() => undefined); // still waiting in BullMQ
    return this.read(id);
  }

  async retry(id: string, spec?: JobSpec): Promise<Job | undefined> {
    const set: Record<string, string | number> = spec ? { spec: encode(spec) } : {};
    const prev = await this.transition(id, ['failed'], 'queued', 'zero', undefined, set, [
      'startedAt',
      'finishedAt',
      'error',
      'result',
      'progress',
      'step',
      'totalSteps',
      'phase',
      'cancelRequested',
      'rank', // a fresh turn below, as a new submission gets
    ]);
    if (!prev) return undefined;
    // A new spec may name another model: the job goes to that model's queue.
    if (spec) await this.setRoute(id, this.opts.routing?.routeOf(spec) ?? ANY_ROUTE);
    const job = (await this.read(id))!;
    await this.queueTurn(id, job.owner, priorityOf(job.spec));
    await this.enqueue(id);
    return this.read(id);
  }

  private async setRoute(id: string, route: string): Promise<void> {
    if (route === ANY_ROUTE) await this.io(() => this.cmd.hdel(this.key(id), 'route'));
    else await this.io(() => this.cmd.multi().hset(this.key(id), 'route', route).sadd(`${this.prefix}routes`, route).exec());
  }

  /** Empty: BullMQ's stalled-job check re-delivers a dead worker's job to a live one (see claimNext). */
  async interrupted(): Promise<Job[]> {
    return [];
  }

  async finishedBefore(cutoff: number, limit: number): Promise<Job[]> {
    const ids = await this.io(() => this.cmd.zrangebyscore(`${this.prefix}finished`, '-inf', `(${cutoff}`, 'LIMIT', 0, limit));
    return this.readMany(ids);
  }

  async delete(ids: readonly string[]): Promise<void> {
    for (const job of await this.readMany([...ids])) {
      const m = this.cmd
        .multi()
        .del(this.key(job.id), `${this.prefix}extra:${job.id}`, `${this.prefix}preview:${job.id}`)
        .zrem(`${this.prefix}all`, job.id)
        .zrem(`${this.prefix}state:${job.state}`, job.id)
        .zrem(`${this.prefix}owner:${job.owner}`, job.id)
        .zrem(`${this.prefix}finished`, job.id)
        .zrem(`${this.prefix}ready`, job.id)
        .zrem(`${this.prefix}ready:${job.owner}`, job.id);
      if (job.externalId) m.zrem(`${this.prefix}ext:${job.externalId}`, job.id);
      await this.io(() => m.exec());
    }
  }

  async updateExtra(id: string, patch: Record<string, unknown>): Promise<Job | undefined> {
    // One hash field per top-level key: a shallow merge is one HSET, atomic, with no read-modify-write race.
    if ((await this.io(() => this.cmd.exists(this.key(id)))) === 0) return undefined;
    const entries = Object.entries(patch);
    if (entries.length) await this.io(() => this.cmd.hset(`${this.prefix}extra:${id}`, Object.fromEntries(entries.map(([k, v]) => [k, encode(v)]))));
    return this.read(id);
  }

  /** This process's id among the workers (records name it as the holder of a running job). */
  get id(): string {
    return this.workerId;
  }

  /** A worker's heartbeat: its entry in the shared worker table, with the time. */
  async announce(info: Omit<WorkerAnnouncement, 'id' | 'heartbeatAt'>, now = Date.now()): Promise<void> {
    const entry: WorkerAnnouncement = { ...info, id: this.workerId, heartbeatAt: now };
    await this.io(() => this.cmd.hset(`${this.prefix}workers`, this.workerId, JSON.stringify(entry)));
  }

  /** Removes this worker's entry (a clean shutdown). */
  async withdraw(): Promise<void> {
    await this.io(() => this.cmd.hdel(`${this.prefix}workers`, this.workerId));
  }

  /**
   * Every worker that announced itself, newest heartbeat first; entries silent for longer than `forgetMs` are
   * removed (their jobs were already handed on by the stalled-job check).
   */
  async workers(now = Date.now(), forgetMs = 600_000): Promise<WorkerAnnouncement[]> {
    const all = await this.io(() => this.cmd.hgetall(`${this.prefix}workers`));
    const out: WorkerAnnouncement[] = [];
    for (const [id, text] of Object.entries(all)) {
      const w = parseOr<WorkerAnnouncement | undefined>(text, undefined);
      if (!w || now - w.heartbeatAt > forgetMs) await this.io(() => this.cmd.hdel(`${this.prefix}workers`, id));
      else out.push(w);
    }
    return out.sort((a, b) => b.heartbeatAt - a.heartbeatAt);
  }

  /** Jobs waiting per model route (routing.ts), for the routes that have any. */
  async routeBacklog(): Promise<Array<{ route: string; queued: number }>> {
    const routes = await this.io(() => this.cmd.smembers(`${this.prefix}routes`));
    const out: Array<{ route: string; queued: number }> = [];
    for (const route of routes.sort()) {
      const queued = await this.io(() => this.queues.waiting(route));
      if (queued > 0) out.push({ route, queued });
    }
    return out;
  }

  private subscriber(): Redis {
    if (!this.sub) {
      const sub = new Redis({ ...this.connection, maxRetriesPerRequest: null, retryStrategy: (n) => Math.min(200 * n, 2000) });
      sub.on('error', () => undefined);
      sub.on('message', (channel: string, message: string) => {
        if (channel === `${this.prefix}cancel`) this.emitter.emit('cancel', message);
        else if (channel === `${this.prefix}events`) {
          const event = parseOr<JobEvent | undefined>(message, undefined);
          if (!event) return;
          this.emitter.emit(`job:${event.job.id}`, event);
          this.emitter.emit('job:*', event);
        }
      });
      void sub.subscribe(`${this.prefix}events`, `${this.prefix}cancel`).catch(() => undefined);
      this.sub = sub;
    }
    return this.sub;
  }

  async publish(event: JobEvent): Promise<void> {
    await this.io(() => this.cmd.publish(`${this.prefix}events`, encode(event)));
  }

  subscribe(id: string, listener: (e: JobEvent) => void): () => void {
    this.subscriber();
    const key = `job:${id}`;
    this.emitter.on(key, listener);
    return () => this.emitter.off(key, listener);
  }

  /** Resolves once this process's subscriptions are live (a publish before that would be missed). */
  async subscribed(): Promise<void> {
    const sub = this.subscriber();
    if (sub.status !== 'ready') await new Promise<void>((resolve) => sub.once('ready', () => resolve()));
    await sub.subscribe(`${this.prefix}events`, `${this.prefix}cancel`);
  }

  async setPreview(id: string, preview: JobPreview | undefined): Promise<void> {
    const k = `${this.prefix}preview:${id}`;
    if (preview) await this.io(() => this.cmd.set(k, encode(preview), 'EX', PREVIEW_TTL_S));
    else await this.io(() => this.cmd.del(k));
  }

  async getPreview(id: string): Promise<JobPreview | undefined> {
    const text = await this.io(() => this.cmd.get(`${this.prefix}preview:${id}`));
    return text ? parseOr<JobPreview | undefined>(text, undefined) : undefined;
  }

  async requestCancel(id: string): Promise<void> {
    // Kept in the record too: a worker that missed the message (or took the job after its holder died) sees it.
    await this.io(() => this.cmd.hset(this.key(id), 'cancelRequested', '1'));
    await this.io(() => this.cmd.publish(`${this.prefix}cancel`, id));
  }

  onCancelRequest(listener: (id: string) => void): () => void {
    this.subscriber();
    this.emitter.on('cancel', listener);
    return () => this.emitter.off('cancel', listener);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const h of this.held.values()) clearInterval(h.renew);
    this.held.clear();
    await this.queues.close();
    this.producerConn.disconnect();
    this.sub?.disconnect();
    this.cmd.disconnect();
  }
}
