// The SQLite JobBackend: one file in WAL mode, owned by one process. Every state change is written before it
// is announced, so after a crash the database says exactly which jobs were queued, running or finished.
// Durability: synchronous = FULL. In WAL mode that is one fsync of the WAL per commit, so a 202 for a submit, a
// "succeeded" after the image's own fsync, or a cancel survives a power cut. NORMAL would never corrupt the
// file either, but could lose the last commits: an accepted job gone, or a finished job back to running and
// run again. Commits here are a handful per job (progress stays in memory), so FULL costs little: measured
// 7.4 ms per commit (FULL) vs 0.14 ms (NORMAL) on an ext4 virtual disk, against seconds per generation
// (bench/storage-bench.ts). quick_check, not integrity_check, at open: linear in the file, 21 ms for 10,000
// jobs and 124 ms for 100,000 (integrity_check, which also cross-checks indexes: 26 and 267 ms).
// A file that is not a database or fails SQLite's quick_check is refused at open (CorruptDatabaseError), and a
// row whose JSON cannot be read never crashes a read: a queued one is failed with the reason instead of run.
// Live progress and the latest preview change on every step, so they stay in memory while the job runs (one
// process sees them all) and progress is written once, when the job ends. Events are an in-process emitter.
import { EventEmitter } from 'node:events';
import Database from 'better-sqlite3';
import type { FinalState, FinishData, JobBackend, JobFilter, NewJob } from './backend.ts';
import type { Job, JobError, JobEvent, JobPreview, JobResult, JobState, LiveProgress } from './job.ts';
import type { JobSpec } from './job-spec.ts';
import { specWithDefaults } from './job-spec.ts';
import { nextTurn, priorityOf } from './fairness.ts';

/** The job database cannot be used as it is: not a database, or damaged. Startup stops with this. */
export class CorruptDatabaseError extends Error {
  constructor(
    readonly file: string,
    readonly detail: string,
  ) {
    super(
      `the job database ${file} is damaged (${detail}); stop kiln, move the file aside (with any -wal/-shm next to it) ` +
        'and start again for a new empty queue, or restore it from a backup; the images folder is not affected',
    );
    this.name = 'CorruptDatabaseError';
  }
}

/** SQLite's result codes for a file that is not a database, or is damaged. */
const CORRUPT_CODES = new Set(['SQLITE_CORRUPT', 'SQLITE_NOTADB', 'SQLITE_CORRUPT_VTAB', 'SQLITE_CORRUPT_SEQUENCE', 'SQLITE_CORRUPT_INDEX']);

/** Why a stored queued job cannot run: its spec is not the JSON object it was written as. */
const UNREADABLE_SPEC = 'the stored job could not be read (its spec is not valid JSON; the database was damaged or edited); submit it again';

/** quick_check reports at most this many problems (the first ones name the damage well enough). */
const QUICK_CHECK_MAX_ERRORS = 5;

/** Stands in for a spec that cannot be parsed, so a damaged row is still listed (as failed) instead of a 500. */
const UNREADABLE_SPEC_PLACEHOLDER: JobSpec = specWithDefaults({ prompts: [''] });

/** A stored JSON object, or undefined when the text is not one. */
function parseObject<T>(text: string | null): T | undefined {
  if (!text) return undefined;
  try {
    const v: unknown = JSON.parse(text);
    return v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as T) : undefined;
  } catch {
    return undefined;
  }
}

interface Row {
  seq: number;
  id: string;
  state: JobState;
  owner: string;
  spec: string;
  created_at: number;
  started_at: number | null;
  finished_at: number | null;
  attempts: number;
  error: string | null;
  result: string | null;
  progress: number | null;
  step: number | null;
  total_steps: number | null;
  extra: string | null;
  external_id: string | null;
  priority: number;
  turn: number;
  ticket: number;
}

/** A row as a Job. Never throws: unreadable JSON columns read as absent (the spec as a placeholder). */
function fromRow(r: Row): Job {
  const state = r.state;
  return {
    id: r.id,
    seq: r.seq,
    priority: r.priority,
    turn: r.turn,
    ticket: r.ticket,
    state,
    owner: r.owner,
    spec: parseObject<JobSpec>(r.spec) ?? UNREADABLE_SPEC_PLACEHOLDER,
    createdAt: r.created_at,
    startedAt: r.started_at ?? undefined,
    finishedAt: r.finished_at ?? undefined,
    attempts: r.attempts,
    error: r.error ? (parseObject<JobError>(r.error) ?? { code: 'storage', message: 'the stored error could not be read' }) : undefined,
    result: parseObject<JobResult>(r.result),
    progress: r.progress ?? (state === 'succeeded' ? 1 : 0),
    step: r.step ?? 0,
    totalSteps: r.total_steps ?? 0,
    extra: parseObject<Record<string, unknown>>(r.extra) ?? {},
    externalId: r.external_id ?? undefined,
  };
}

const specReadable = (r: Row) => parseObject<JobSpec>(r.spec) !== undefined;

/** Columns added after the first release, with their types: databases from before get them on open. */
const ADDED_COLUMNS: ReadonlyArray<[string, string]> = [
  ['progress', 'REAL'],
  ['step', 'INTEGER'],
  ['total_steps', 'INTEGER'],
  ['extra', 'TEXT'],
  ['external_id', 'TEXT'],
  ['priority', 'INTEGER NOT NULL DEFAULT 0'],
  ['turn', 'INTEGER NOT NULL DEFAULT 0'],
  ['ticket', 'INTEGER NOT NULL DEFAULT 0'],
];

const placeholders = (list: readonly unknown[]) => list.map(() => '?').join(', ');

export class SqliteJobBackend implements JobBackend {
  private readonly db: Database.Database;
  private readonly emitter = new EventEmitter();
  private readonly live = new Map<string, LiveProgress>();
  private readonly previews = new Map<string, JobPreview>();

  constructor(
    private readonly file: string,
    opts: { check?: boolean } = {},
  ) {
    this.emitter.setMaxListeners(0);
    this.db = new Database(file);
    try {
      this.open(opts.check ?? true);
    } catch (e) {
      this.db.close();
      const code = (e as { code?: unknown }).code;
      if (typeof code === 'string' && CORRUPT_CODES.has(code)) throw new CorruptDatabaseError(file, (e as Error).message);
      throw e;
    }
  }

  private open(check: boolean): void {
    this.db.pragma('journal_mode = WAL');
    // Why FULL and not NORMAL: see the top of this file.
    this.db.pragma('synchronous = FULL');
    this.db.pragma('busy_timeout = 5000');
    if (check) this.quickCheck();
    this.db.exec(`
      CREATE TABLE IF NOT EXISTS jobs (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        state TEXT NOT NULL,
        owner TEXT NOT NULL,
        spec TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        started_at INTEGER,
        finished_at INTEGER,
        attempts INTEGER NOT NULL DEFAULT 0,
        error TEXT,
        result TEXT
      );
      CREATE INDEX IF NOT EXISTS jobs_state_seq ON jobs (state, seq);
      CREATE INDEX IF NOT EXISTS jobs_finished ON jobs (finished_at);
    `);
    const cols = new Set((this.db.prepare('PRAGMA table_info(jobs)').all() as Array<{ name: string }>).map((c) => c.name));
    for (const [col, type] of ADDED_COLUMNS) {
      if (!cols.has(col)) this.db.exec(`ALTER TABLE jobs ADD COLUMN ${col} ${type}`);
    }
    this.db.exec('CREATE INDEX IF NOT EXISTS jobs_external_id ON jobs (external_id)');
    // The run order (fairness.ts): claiming and queue positions walk this index.
    this.db.exec('CREATE INDEX IF NOT EXISTS jobs_run_order ON jobs (state, priority DESC, turn, ticket)');
    this.db.exec('CREATE INDEX IF NOT EXISTS jobs_ticket ON jobs (ticket)');
    this.db.exec('CREATE INDEX IF NOT EXISTS jobs_owner_turn ON jobs (state, priority, owner, turn)');
    this.failUnreadable();
  }

  /** SQLite's quick_check (pages, records, no index cross-check): about linear in the file size. */
  private quickCheck(): void {
    const rows = this.db.pragma(`quick_check(${QUICK_CHECK_MAX_ERRORS})`) as Array<{ quick_check: string }>;
    const problems = rows.map((r) => r.quick_check).filter((m) => m !== 'ok');
    if (problems.length) throw new CorruptDatabaseError(this.file, `quick_check: ${problems.join('; ')}`);
  }

  /**
   * Queued or running jobs whose spec cannot be read are failed with the reason, once, instead of crashing
   * every start (or every claim) on them. One pass over the unfinished rows (json_type only on valid JSON: it
   * throws on anything else).
   */
  private failUnreadable(): void {
    const error = JSON.stringify({ code: 'storage', message: UNREADABLE_SPEC } satisfies JobError);
    this.db
      .prepare(
        "UPDATE jobs SET state = 'failed', finished_at = ?, error = ? WHERE state IN ('queued', 'running') AND CASE WHEN json_valid(spec) THEN json_type(spec) <> 'object' ELSE 1 END",
      )
      .run(Date.now(), error);
  }

  /** A stored row with the live progress of a running job laid over it. */
  private withLive(job: Job): Job {
    const live = job.state === 'running' ? this.live.get(job.id) : undefined;
    return live ? { ...job, ...live } : job;
  }

  private row(id: string): Job | undefined {
    const row = this.db.prepare('SELECT * FROM jobs WHERE id = ?').get(id) as Row | undefined;
    return row ? this.withLive(fromRow(row)) : undefined;
  }

  private rows(sql: string, ...args: unknown[]): Job[] {
    return (this.db.prepare(sql).all(...args) as Row[]).map((r) => this.withLive(fromRow(r)));
  }

  private drop(id: string): void {
    this.live.delete(id);
    this.previews.delete(id);
  }

  async insert(job: NewJob): Promise<Job> {
    const priority = priorityOf(job.spec);
    // The turn and the row in one transaction: two inserts never read the same owner's last turn.
    this.db.transaction(() => {
      this.db
        .prepare(
          'INSERT INTO jobs (id, state, owner, spec, created_at, finished_at, error, extra, external_id, priority, turn, ticket) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)',
        )
        .run(
          job.id,
          job.failed ? 'failed' : 'queued',
          job.owner,
          JSON.stringify(job.spec),
          job.createdAt,
          job.failed ? job.createdAt : null,
          job.failed ? JSON.stringify(job.failed) : null,
          JSON.stringify(job.extra ?? {}),
          job.externalId ?? null,
          priority,
          job.failed ? 0 : this.turnFor(job.owner, priority),
          job.failed ? 0 : this.nextTicket(),
        );
    })();
    return this.row(job.id)!;
  }

  /** The next place in the order of entering the queue (the run order's last tie-break, fairness.ts). */
  private nextTicket(): number {
    return (this.db.prepare('SELECT COALESCE(MAX(ticket), 0) + 1 AS t FROM jobs').get() as { t: number }).t;
  }

  /** The turn of a job `owner` queues now at `priority` (fairness.ts). */
  private turnFor(owner: string, priority: number): number {
    const head = this.db.prepare("SELECT MIN(turn) AS t FROM jobs WHERE state = 'queued' AND priority = ?").get(priority) as { t: number | null };
    const last = this.db.prepare("SELECT MAX(turn) AS t FROM jobs WHERE state = 'queued' AND priority = ? AND owner = ?").get(priority, owner) as {
      t: number | null;
    };
    return nextTurn(head.t ?? undefined, last.t ?? undefined);
  }

  async get(id: string): Promise<Job | undefined> {
    return this.row(id);
  }

  async findByExternalId(externalId: string, owner?: string): Promise<Job | undefined> {
    if (owner === undefined) return this.rows('SELECT * FROM jobs WHERE external_id = ? ORDER BY seq DESC LIMIT 1', externalId)[0];
    return this.rows('SELECT * FROM jobs WHERE external_id = ? AND owner = ? ORDER BY seq DESC LIMIT 1', externalId, owner)[0];
  }

  async list(opts: JobFilter): Promise<Job[]> {
    const where: string[] = [];
    const args: unknown[] = [];
    const filter = (clause: string, value: unknown) => {
      where.push(clause);
      args.push(value);
    };
    if (opts.owner !== undefined) filter('owner = ?', opts.owner);
    if (opts.state !== undefined) filter('state = ?', opts.state);
    if (opts.beforeSeq !== undefined) filter('seq < ?', opts.beforeSeq);
    return this.rows(`SELECT * FROM jobs ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY seq DESC LIMIT ?`, ...args, opts.limit);
  }

  async counts(): Promise<Record<JobState, number>> {
    const out: Record<JobState, number> = { queued: 0, running: 0, succeeded: 0, failed: 0, cancelled: 0 };
    for (const r of this.db.prepare('SELECT state, COUNT(*) AS n FROM jobs GROUP BY state').all() as Array<{ state: JobState; n: number }>) {
      out[r.state] = r.n;
    }
    return out;
  }

  async queuedAhead(job: Job): Promise<number> {
    const ahead = this.db.prepare(
      "SELECT COUNT(*) AS n FROM jobs WHERE state = 'queued' AND (priority > ? OR (priority = ? AND (turn < ? OR (turn = ? AND ticket < ?))))",
    );
    return (ahead.get(job.priority, job.priority, job.turn, job.turn, job.ticket) as { n: number }).n;
  }

  async claimNext(clock: () => number): Promise<Job | undefined> {
    // One statement, so no other connection can claim the same row in between; the run order is fairness.ts's
    // (seq last: rows queued before turns existed all have turn and ticket 0).
    const claim = this.db.prepare(
      "UPDATE jobs SET state = 'running', started_at = ?, attempts = attempts + 1 WHERE seq = (SELECT seq FROM jobs WHERE state = 'queued' ORDER BY priority DESC, turn, ticket, seq LIMIT 1) RETURNING *",
    );
    for (;;) {
      const now = clock();
      const row = claim.get(now) as Row | undefined;
      if (!row) return undefined;
      this.drop(row.id);
      if (specReadable(row)) return fromRow(row);
      // Damaged since start (the start-up sweep catches the rest): failed with the reason, and on to the next.
      await this.finish(row.id, ['running'], 'failed', now, { error: { code: 'storage', message: UNREADABLE_SPEC } });
    }
  }

  async setProgress(id: string, progress: LiveProgress): Promise<void> {
    this.live.set(id, { ...progress });
  }

  /** The queued record is the queue here: nothing to repair. */
  async ensureDispatched(_id: string): Promise<void> {}

  async requeue(id: string, refundAttempt: boolean): Promise<Job | undefined> {
    // It keeps its turn, and queues behind the jobs that share it (a new ticket, as on Redis).
    this.db.transaction(() => {
      this.db
        .prepare(
          `UPDATE jobs SET state = 'queued', started_at = NULL, ticket = ?${refundAttempt ? ', attempts = MAX(attempts - 1, 0)' : ''} WHERE id = ? AND state = 'running'`,
        )
        .run(this.nextTicket(), id);
    })();
    this.drop(id);
    return this.row(id);
  }

  async finish(id: string, from: readonly JobState[], state: FinalState, now: number, data: FinishData): Promise<Job | undefined> {
    const p = data.progress;
    const info = this.db
      .prepare(
        `UPDATE jobs SET state = ?, finished_at = ?, result = ?, error = ?, progress = ?, step = ?, total_steps = ? WHERE id = ? AND state IN (${placeholders(from)})`,
      )
      .run(
        state,
        now,
        data.result ? JSON.stringify(data.result) : null,
        data.error ? JSON.stringify(data.error) : null,
        p?.progress ?? null,
        p?.step ?? null,
        p?.totalSteps ?? null,
        id,
        ...from,
      );
    if (info.changes === 0) return undefined;
    this.drop(id);
    return this.row(id);
  }

  async retry(id: string, spec?: JobSpec): Promise<Job | undefined> {
    // Back in line as a new submission would be: the (new) spec's priority, and a fresh turn (fairness.ts).
    const changes = this.db.transaction(() => {
      const row = this.db.prepare("SELECT owner, spec FROM jobs WHERE id = ? AND state = 'failed'").get(id) as { owner: string; spec: string } | undefined;
      if (!row) return 0;
      const priority = priorityOf(spec ?? parseObject<JobSpec>(row.spec) ?? {});
      return this.db
        .prepare(
          "UPDATE jobs SET state = 'queued', spec = COALESCE(?, spec), started_at = NULL, finished_at = NULL, error = NULL, result = NULL, progress = NULL, step = NULL, total_steps = NULL, attempts = 0, priority = ?, turn = ?, ticket = ? WHERE id = ? AND state = 'failed'",
        )
        .run(spec ? JSON.stringify(spec) : null, priority, this.turnFor(row.owner, priority), this.nextTicket(), id).changes;
    })();
    return changes === 0 ? undefined : this.row(id);
  }

  async interrupted(): Promise<Job[]> {
    return this.rows("SELECT * FROM jobs WHERE state = 'running' ORDER BY seq");
  }

  async finishedBefore(cutoff: number, limit: number): Promise<Job[]> {
    return this.rows("SELECT * FROM jobs WHERE state IN ('succeeded','failed','cancelled') AND finished_at < ? ORDER BY finished_at LIMIT ?", cutoff, limit);
  }

  async delete(ids: readonly string[]): Promise<void> {
    const del = this.db.prepare('DELETE FROM jobs WHERE id = ?');
    this.db.transaction((list: readonly string[]) => list.forEach((id) => del.run(id)))(ids);
    for (const id of ids) this.drop(id);
  }

  async updateExtra(id: string, patch: Record<string, unknown>): Promise<Job | undefined> {
    // Read-merge-write in one transaction, so concurrent patches of different keys both survive.
    this.db.transaction(() => {
      const row = this.db.prepare('SELECT extra FROM jobs WHERE id = ?').get(id) as { extra: string | null } | undefined;
      if (!row) return;
      const merged = { ...(row.extra ? (JSON.parse(row.extra) as Record<string, unknown>) : {}), ...patch };
      this.db.prepare('UPDATE jobs SET extra = ? WHERE id = ?').run(JSON.stringify(merged), id);
    })();
    return this.row(id);
  }

  async publish(event: JobEvent): Promise<void> {
    this.emitter.emit(`job:${event.job.id}`, event);
    this.emitter.emit('job:*', event);
  }

  subscribe(id: string, listener: (e: JobEvent) => void): () => void {
    const key = `job:${id}`;
    this.emitter.on(key, listener);
    return () => this.emitter.off(key, listener);
  }

  async setPreview(id: string, preview: JobPreview | undefined): Promise<void> {
    if (preview) this.previews.set(id, preview);
    else this.previews.delete(id);
  }

  async getPreview(id: string): Promise<JobPreview | undefined> {
    return this.previews.get(id);
  }

  async requestCancel(id: string): Promise<void> {
    this.emitter.emit('cancel', id);
  }

  onCancelRequest(listener: (id: string) => void): () => void {
    this.emitter.on('cancel', listener);
    return () => this.emitter.off('cancel', listener);
  }

  async close(): Promise<void> {
    if (this.db.open) this.db.close();
  }
}
