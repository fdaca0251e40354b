/**
 * The SQLite adapter, Sinho's embedded default: one file in WAL mode with
 * `synchronous=FULL`, so an acknowledged append is on disk. Several processes
 * may share the file; writes are serialised by SQLite's write lock.
 */
import { checkLogOptions, StoredEventLog, type EventLogOptions } from '../stored-event-log.js';
import type { LogStorage } from '../storage.js';
import type { EventLog } from '../types.js';
import { commitBatch, prepareAppendStatements } from './append.js';
import { watchExternalCommits } from './notify.js';
import { prepareReadStatements, readAllPage, readStreamPage, truncateStream } from './read.js';
import { migrate } from './schema.js';
import { createSqliteSubscriptionStorage } from './subscription.js';
import { retryingWhileBusy } from './busy.js';
import { openSqliteFile, withoutFsync, type SqliteFileOptions } from './file.js';

export interface SqliteEventLogOptions extends EventLogOptions, SqliteFileOptions {
  /** How often another process's commits are noticed, ms. Default 200. */
  externalCommitCheckMs?: number;
}

export function openSqliteEventLog(options: SqliteEventLogOptions): EventLog {
  checkLogOptions(options ?? {});
  const file = openSqliteFile('openSqliteEventLog', options, migrate);
  const { db, busyTimeoutMs } = file;
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
    streamRevision: async (stream) => read.stream.get(stream)?.revision ?? -1,
    headPosition: async () => readHead(),
    positionAt: async (time) => read.positionAt.get(time.getTime())?.position ?? readHead() + 1,
    readSnapshot: async (stream, key) => {
      const row = read.readSnapshot.get(stream, key);
      return row && { key, revision: row.revision, state: JSON.parse(row.state) };
    },
    writeSnapshot: async (stream, snapshot) => {
      // No fsync of its own, like a relaxed append: a snapshot is derived from events that are already durable;
      // if power fails before the next durable commit flushes the WAL, loads fall back to the previous snapshot
      // and the events. Writers that snapshot often (moim: every 50 joins of a community) otherwise paid one fsync
      // per snapshot on their main thread, outside group commit.
      const state = JSON.stringify(snapshot.state);
      withoutFsync(db, () => read.writeSnapshot.run(stream, snapshot.key, snapshot.revision, state, new Date().toISOString()));
    },
    truncateStream: async (stream, beforeRevision) => {
      truncateStream(read, stream, beforeRevision);
    },
    watchExternalCommits: (onCommit) => watchExternalCommits(db, readHead, options.externalCommitCheckMs ?? 200, onCommit),
    close: () => file.close(),
  };
  return new StoredEventLog(retryingWhileBusy(storage, busyTimeoutMs, ['watchExternalCommits', 'close']), options);
}
export { openSqliteFeedStore, type SqliteFeedStoreOptions } from '../../realtime/sqlite/feed-store.js';
