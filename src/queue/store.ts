// SQLite persistence for jobs (one file, WAL mode). Every state change is written before it is announced,
// so after a crash the database says exactly which jobs were queued, running or finished.
import Database from 'better-sqlite3';
import type { Job, JobError, JobResult, JobState } from './job.ts';
import type { JobSpec } from './job-spec.ts';

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
}

function fromRow(r: Row): Job {
  const state = r.state;
  return {
    id: r.id,
    seq: r.seq,
    state,
    owner: r.owner,
    spec: JSON.parse(r.spec) as JobSpec,
    createdAt: r.created_at,
    startedAt: r.started_at ?? undefined,
    finishedAt: r.finished_at ?? undefined,
    attempts: r.attempts,
    error: r.error ? (JSON.parse(r.error) as JobError) : undefined,
    result: r.result ? (JSON.parse(r.result) as JobResult) : undefined,
    progress: r.progress ?? (state === 'succeeded' ? 1 : 0),
    step: r.step ?? 0,
    totalSteps: r.total_steps ?? 0,
  };
}

export class JobStore {
  private readonly db: Database.Database;

  constructor(file: string) {
    this.db = new Database(file);
    this.db.pragma('journal_mode = WAL');
    this.db.pragma('synchronous = NORMAL');
    this.db.pragma('busy_timeout = 5000');
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
        result TEXT,
        progress REAL,
        step INTEGER,
        total_steps INTEGER
      );
      CREATE INDEX IF NOT EXISTS jobs_state_seq ON jobs (state, seq);
      CREATE INDEX IF NOT EXISTS jobs_finished ON jobs (finished_at);
    `);
    // Databases from before the progress columns existed get them added.
    const cols = new Set((this.db.prepare('PRAGMA table_info(jobs)').all() as Array<{ name: string }>).map((c) => c.name));
    for (const [col, type] of [['progress', 'REAL'], ['step', 'INTEGER'], ['total_steps', 'INTEGER']]) {
      if (!cols.has(col)) this.db.exec(`ALTER TABLE jobs ADD COLUMN ${col} ${type}`);
    }
  }

  insert(id: string, owner: string, spec: JobSpec, now: number): Job {
    const info = this.db
      .prepare('INSERT INTO jobs (id, state, owner, spec, created_at) VALUES (?, ?, ?, ?, ?)')
      .run(id, 'queued', owner, JSON.stringify(spec), now);
    return this.get(id) ?? fromRow({ seq: Number(info.lastInsertRowid) } as Row);
  }

  get(id: string): Job | undefined {
    const row = this.db.prepare('SELECT * FROM jobs WHERE id = ?').get(id) as Row | undefined;
    return row ? fromRow(row) : undefined;
  }

  /** The oldest queued job (lowest seq), or undefined. */
  nextQueued(): Job | undefined {
    const row = this.db.prepare("SELECT * FROM jobs WHERE state = 'queued' ORDER BY seq LIMIT 1").get() as Row | undefined;
    return row ? fromRow(row) : undefined;
  }

  /** Queued jobs ahead of `seq`. */
  queuedBefore(seq: number): number {
    return (this.db.prepare("SELECT COUNT(*) AS n FROM jobs WHERE state = 'queued' AND seq < ?").get(seq) as { n: number }).n;
  }

  countByState(): Record<JobState, number> {
    const out: Record<JobState, number> = { queued: 0, running: 0, succeeded: 0, failed: 0, cancelled: 0 };
    for (const r of this.db.prepare('SELECT state, COUNT(*) AS n FROM jobs GROUP BY state').all() as Array<{ state: JobState; n: number }>) {
      out[r.state] = r.n;
    }
    return out;
  }

  list(opts: { owner?: string; state?: JobState; limit: number; beforeSeq?: number }): Job[] {
    const where: string[] = [];
    const args: unknown[] = [];
    if (opts.owner !== undefined) (where.push('owner = ?'), args.push(opts.owner));
    if (opts.state !== undefined) (where.push('state = ?'), args.push(opts.state));
    if (opts.beforeSeq !== undefined) (where.push('seq < ?'), args.push(opts.beforeSeq));
    const sql = `SELECT * FROM jobs ${where.length ? 'WHERE ' + where.join(' AND ') : ''} ORDER BY seq DESC LIMIT ?`;
    return (this.db.prepare(sql).all(...args, opts.limit) as Row[]).map(fromRow);
  }

  markRunning(id: string, now: number): void {
    this.db.prepare("UPDATE jobs SET state = 'running', started_at = ?, attempts = attempts + 1 WHERE id = ?").run(now, id);
  }

  /** Puts a job back in line. `refundAttempt` undoes the attempt count (used when we stopped it ourselves). */
  requeue(id: string, refundAttempt: boolean): void {
    this.db
      .prepare(`UPDATE jobs SET state = 'queued', started_at = NULL${refundAttempt ? ', attempts = MAX(attempts - 1, 0)' : ''} WHERE id = ?`)
      .run(id);
  }

  /** Final state; `progress` keeps how far a stopped job got (shown to clients after it ends). */
  finish(
    id: string,
    state: 'succeeded' | 'failed' | 'cancelled',
    now: number,
    data: { result?: JobResult; error?: JobError; progress?: { fraction: number; step: number; totalSteps: number } },
  ): void {
    const p = data.progress;
    this.db
      .prepare('UPDATE jobs SET state = ?, finished_at = ?, result = ?, error = ?, progress = ?, step = ?, total_steps = ? WHERE id = ?')
      .run(state, now, data.result ? JSON.stringify(data.result) : null, data.error ? JSON.stringify(data.error) : null, p?.fraction ?? null, p?.step ?? null, p?.totalSteps ?? null, id);
  }

  /** Jobs left 'running' by a process that died. */
  running(): Job[] {
    return (this.db.prepare("SELECT * FROM jobs WHERE state = 'running' ORDER BY seq").all() as Row[]).map(fromRow);
  }

  /** Finished jobs older than `cutoff` (ms since epoch). */
  finishedBefore(cutoff: number, limit = 500): Job[] {
    return (
      this.db.prepare("SELECT * FROM jobs WHERE state IN ('succeeded','failed','cancelled') AND finished_at < ? ORDER BY finished_at LIMIT ?").all(cutoff, limit) as Row[]
    ).map(fromRow);
  }

  /** Queued jobs removed at once (admin purge). */
  queuedIds(): string[] {
    return (this.db.prepare("SELECT id FROM jobs WHERE state = 'queued' ORDER BY seq").all() as Array<{ id: string }>).map((r) => r.id);
  }

  delete(ids: string[]): void {
    const del = this.db.prepare('DELETE FROM jobs WHERE id = ?');
    this.db.transaction((list: string[]) => list.forEach((id) => del.run(id)))(ids);
  }

  close(): void {
    if (this.db.open) this.db.close();
  }
}
