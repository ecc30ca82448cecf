// One server per data directory. Two servers on one folder would both run its queue: each re-queues the
// other's running job at start and the same job runs twice. The lock is an exclusive SQLite lock (an fcntl
// lock on <data-dir>/kiln.lock, held by an open connection in EXCLUSIVE locking mode), so the kernel drops it
// when the holder exits in any way, kill -9 and power loss included: a stale lock cannot block a restart, and
// no pid can be mistaken for a live server after pid reuse. kiln.pid beside it only names the holder in the
// message.
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';

export const LOCK_FILE = 'kiln.lock';
export const PID_FILE = 'kiln.pid';

export class DataDirLockedError extends Error {
  constructor(
    readonly dir: string,
    readonly holderPid?: number,
  ) {
    super(
      `the data directory ${dir} is in use by another kiln server${holderPid ? ` (pid ${holderPid})` : ''}; ` +
        'stop that one first, or give this one its own --data-dir',
    );
    this.name = 'DataDirLockedError';
  }
}

export class DataDirLock {
  private constructor(
    private readonly db: Database.Database,
    private readonly pidFile: string,
  ) {}

  /** Takes the lock or throws DataDirLockedError at once (no waiting: a second server is a mistake to report). */
  static acquire(dir: string): DataDirLock {
    const db = new Database(join(dir, LOCK_FILE), { timeout: 0 });
    try {
      db.pragma('locking_mode = EXCLUSIVE');
      db.pragma('journal_mode = MEMORY'); // no -journal file beside the lock: its content does not matter
      // The first write takes the EXCLUSIVE lock; in this locking mode it is kept until the connection closes.
      db.exec('CREATE TABLE IF NOT EXISTS holder (pid INTEGER NOT NULL, since INTEGER NOT NULL)');
      db.transaction(() => {
        db.exec('DELETE FROM holder');
        db.prepare('INSERT INTO holder (pid, since) VALUES (?, ?)').run(process.pid, Date.now());
      })();
    } catch (e) {
      db.close();
      if ((e as { code?: unknown }).code === 'SQLITE_BUSY') throw new DataDirLockedError(dir, readPid(join(dir, PID_FILE)));
      throw e;
    }
    const pidFile = join(dir, PID_FILE);
    try {
      writeFileSync(pidFile, `${process.pid}\n`);
    } catch {
      // Informational only (a full disk must not stop a start): the message then names no pid.
    }
    return new DataDirLock(db, pidFile);
  }

  /** Gives the folder up (idempotent); the next server may take it at once. */
  release(): void {
    if (!this.db.open) return;
    rmSync(this.pidFile, { force: true });
    this.db.close();
  }
}

function readPid(file: string): number | undefined {
  try {
    const pid = Number.parseInt(readFileSync(file, 'utf8'), 10);
    return Number.isSafeInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}
