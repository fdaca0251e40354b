/**
 * The SQLite adapter, Sinho's embedded default: one file in WAL mode with
 * `synchronous=FULL`, so an acknowledged append is on disk. Several processes
 * may share the file; writes are serialised by SQLite's write lock.
 */
import Database from 'better-sqlite3';
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { InvalidInput } from '../../errors.js';
import { StoredEventLog, type EventLogOptions } from '../stored-event-log.js';
import type { LogStorage } from '../storage.js';
import type { EventLog } from '../types.js';
import { commitBatch, prepareAppendStatements } from './append.js';
import { watchExternalCommits } from './notify.js';
import { prepareReadStatements, readAllPage, readStreamPage } from './read.js';
import { migrate } from './schema.js';
import { createSqliteSubscriptionStorage } from './subscription.js';
import { BackgroundCheckpointer, BACKSTOP_AUTOCHECKPOINT_PAGES } from './checkpoint.js';
import { BUSY_HANDLER_MS, retryingWhileBusy } from './busy.js';

export interface SqliteEventLogOptions extends EventLogOptions {
  /** Path of the database file (created with its folder when missing), or `:memory:`. */
  path: string;
  /**
   * How long a write waits for another process's write lock, ms (then STORE_BUSY). The wait is
   * timers, not a sleep inside SQLite: the process keeps serving meanwhile. Default 5,000.
   */
  busyTimeoutMs?: number;
  /** How often another process's commits are noticed, ms. Default 200. */
  externalCommitCheckMs?: number;
  /**
   * Checkpoint the WAL on a background thread this often, ms (default 50), so
   * that commits do not copy pages into the database file themselves; `false`
   * leaves checkpoints to SQLite's automatic ones, inside commits.
   */
  backgroundCheckpointMs?: number | false;
}

export function openSqliteEventLog(options: SqliteEventLogOptions): EventLog {
  if (typeof options?.path !== 'string' || options.path.length === 0) {
    throw new InvalidInput('INVALID_ARGUMENT', 'openSqliteEventLog needs a path (a file path or ":memory:").');
  }
  if (options.path !== ':memory:') mkdirSync(dirname(options.path), { recursive: true });
  const busyTimeoutMs = options.busyTimeoutMs ?? 5000;
  if (!Number.isSafeInteger(busyTimeoutMs) || busyTimeoutMs < 0) {
    throw new InvalidInput('INVALID_ARGUMENT', `busyTimeoutMs must be an integer >= 0, got ${JSON.stringify(options.busyTimeoutMs)}.`);
  }
  const db = new Database(options.path);
  // Opening (migrations) is synchronous: SQLite's own handler waits there; afterwards only briefly (see busy.ts).
  db.pragma(`busy_timeout = ${busyTimeoutMs}`);
  if (options.path !== ':memory:') db.pragma('journal_mode = WAL');
  db.pragma('synchronous = FULL');
  migrate(db);
  db.pragma(`busy_timeout = ${Math.min(BUSY_HANDLER_MS, busyTimeoutMs)}`);
  const checkpointMs = options.backgroundCheckpointMs ?? 50;
  if (checkpointMs !== false && (!Number.isSafeInteger(checkpointMs) || checkpointMs < 1)) {
    throw new InvalidInput('INVALID_ARGUMENT', `backgroundCheckpointMs must be an integer >= 1 or false, got ${JSON.stringify(checkpointMs)}.`);
  }
  let checkpointer: BackgroundCheckpointer | undefined;
  if (options.path !== ':memory:' && checkpointMs !== false) {
    checkpointer = new BackgroundCheckpointer(options.path, checkpointMs);
    db.pragma(`wal_autocheckpoint = ${BACKSTOP_AUTOCHECKPOINT_PAGES}`);
  }
  const write = prepareAppendStatements(db);
  const read = prepareReadStatements(db);
  const readHead = (): number => read.head.get()!.position;

  const storage: LogStorage = {
    adapter: 'sqlite',
    subscriptions: retryingWhileBusy(createSqliteSubscriptionStorage(db), busyTimeoutMs),
    maxCommitsInFlight: 1,
    recheckIntervalMs: 5000,
    commit: async (batch, durability) => commitBatch(db, write, batch, durability),
    readStreamPage: async (q) => readStreamPage(read, q),
    readAllPage: async (q) => readAllPage(db, read, q),
    readEventsById: async (ids) => read.byId.all(JSON.stringify(ids)),
    streamRevision: async (stream) => read.streamRevision.get(stream)?.revision ?? -1,
    headPosition: async () => readHead(),
    positionAt: async (time) => read.positionAt.get(time.getTime())?.position ?? readHead() + 1,
    readSnapshot: async (stream, key) => {
      const row = read.readSnapshot.get(stream, key);
      return row && { key, revision: row.revision, state: JSON.parse(row.state) };
    },
    writeSnapshot: async (stream, snapshot) => {
      read.writeSnapshot.run(stream, snapshot.key, snapshot.revision, JSON.stringify(snapshot.state), new Date().toISOString());
    },
    truncateStream: async (stream, beforeRevision) => {
      read.truncate.run(stream, beforeRevision);
    },
    watchExternalCommits: (onCommit) => watchExternalCommits(db, readHead, options.externalCommitCheckMs ?? 200, onCommit),
    close: async () => {
      await checkpointer?.close();
      db.close();
    },
  };
  return new StoredEventLog(retryingWhileBusy(storage, busyTimeoutMs, ['watchExternalCommits', 'close']), options);
}
export { openSqliteFeedStore, type SqliteFeedStoreOptions } from '../../realtime/sqlite/feed-store.js';
