/**
 * Opening a SQLite file the way every Sinho store on SQLite uses it (the log,
 * the notification feeds): options checked before anything is touched, WAL
 * with `synchronous=FULL`, the store's set-up (migrations) under SQLite's own
 * busy handler, then only a short handler (writes wait with timers, see
 * busy.ts), and WAL checkpoints on a background thread (see checkpoint.ts).
 */
import Database from 'better-sqlite3';
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { InvalidInput } from '../../errors.js';
import { BUSY_HANDLER_MS } from './busy.js';
import { BackgroundCheckpointer, BACKSTOP_AUTOCHECKPOINT_PAGES } from './checkpoint.js';

/** SQLite's own `wal_autocheckpoint` default, in pages. */
const SQLITE_DEFAULT_AUTOCHECKPOINT_PAGES = 1000;

/** The options every Sinho store on a SQLite file takes. */
export interface SqliteFileOptions {
  /** Path of the database file (created with its folder when missing), or `:memory:`. */
  path: string;
  /**
   * How long a write waits for another process's write lock, ms (then STORE_BUSY). The wait is
   * timers, not a sleep inside SQLite: the process keeps serving meanwhile. Default 5,000.
   */
  busyTimeoutMs?: number;
  /**
   * Checkpoint the WAL on a background thread this often, ms (default 50), so
   * that commits (appends, fan-out) do not copy pages into the database file
   * themselves, stalling their thread; `false` leaves checkpoints to SQLite's
   * automatic ones, inside commits.
   */
  backgroundCheckpointMs?: number | false;
}

export interface SqliteFile {
  db: Database.Database;
  /** The checked `busyTimeoutMs`: the budget for retryingWhileBusy. */
  busyTimeoutMs: number;
  /**
   * The connection's `wal_autocheckpoint`, in pages: a high backstop with the background checkpointer, SQLite's
   * default otherwise. Another connection that commits to the file (the log's writer thread) takes the same.
   */
  autocheckpointPages: number;
  /** Stops the checkpoint thread, then closes the connection. */
  close(): Promise<void>;
}

/**
 * Runs one write on `db` without an fsync of its own: `synchronous=NORMAL` for that write, then back to FULL.
 * In WAL mode the write stays atomic and consistent; it becomes durable with the next FULL commit's fsync of
 * the WAL, which covers every frame before it. For what may be lost to a power failure (relaxed appends,
 * snapshots), never for what is acknowledged as durable.
 */
export function withoutFsync<T>(db: Database.Database, write: () => T): T {
  db.pragma('synchronous = NORMAL');
  try {
    return write();
  } finally {
    db.pragma('synchronous = FULL');
  }
}

/** `opener` names the public function in error messages; `setUp` runs once, synchronously, before the handler is shortened. */
export function openSqliteFile(opener: string, options: SqliteFileOptions, setUp: (db: Database.Database) => void): SqliteFile {
  const path: unknown = options?.path;
  if (typeof path !== 'string' || path.length === 0) {
    throw new InvalidInput('INVALID_ARGUMENT', `${opener} needs a path (a file path or ":memory:").`);
  }
  const busyTimeoutMs = options.busyTimeoutMs ?? 5000;
  if (!Number.isSafeInteger(busyTimeoutMs) || busyTimeoutMs < 0) {
    throw new InvalidInput('INVALID_ARGUMENT', `busyTimeoutMs must be an integer >= 0, got ${JSON.stringify(options.busyTimeoutMs)}.`);
  }
  const checkpointMs = options.backgroundCheckpointMs ?? 50;
  if (checkpointMs !== false && (!Number.isSafeInteger(checkpointMs) || checkpointMs < 1)) {
    throw new InvalidInput('INVALID_ARGUMENT', `backgroundCheckpointMs must be an integer >= 1 or false, got ${JSON.stringify(checkpointMs)}.`);
  }
  if (path !== ':memory:') mkdirSync(dirname(path), { recursive: true });
  const db = new Database(path);
  try {
    db.pragma(`busy_timeout = ${busyTimeoutMs}`);
    if (path !== ':memory:') db.pragma('journal_mode = WAL');
    db.pragma('synchronous = FULL');
    setUp(db);
    db.pragma(`busy_timeout = ${Math.min(BUSY_HANDLER_MS, busyTimeoutMs)}`);
  } catch (error) {
    db.close();
    throw error;
  }
  let checkpointer: BackgroundCheckpointer | undefined;
  let autocheckpointPages = SQLITE_DEFAULT_AUTOCHECKPOINT_PAGES;
  if (path !== ':memory:' && checkpointMs !== false) {
    checkpointer = new BackgroundCheckpointer(path, checkpointMs);
    autocheckpointPages = BACKSTOP_AUTOCHECKPOINT_PAGES;
    db.pragma(`wal_autocheckpoint = ${autocheckpointPages}`);
  }
  return {
    db,
    busyTimeoutMs,
    autocheckpointPages,
    close: async () => {
      await checkpointer?.close();
      db.close();
    },
  };
}
