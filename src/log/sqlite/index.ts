/**
 * The SQLite adapter, Sinho's embedded default: one file in WAL mode with
 * `synchronous=FULL`, so an acknowledged append is on disk. Several processes
 * may share the file; writes are serialised by SQLite's write lock.
 */
import { checkLogOptions, StoredEventLog, type EventLogOptions } from '../stored-event-log.js';
import type { LogStorage } from '../storage.js';
import type { EventLog } from '../types.js';
import { InvalidInput } from '../../errors.js';
import { prepareReadStatements, readAllPage, readStreamPage } from './read.js';
import { migrate } from './schema.js';
import { retryingWhileBusy } from './busy.js';
import { openSqliteFile, type SqliteFileOptions } from './file.js';
import { writerOn, WriterThread, type SqliteWriter } from './writer.js';

export interface SqliteEventLogOptions extends EventLogOptions, SqliteFileOptions {
  /** How often another process's commits are noticed, ms. Default 200. */
  externalCommitCheckMs?: number;
  /**
   * Write (appends, consumer-group state, snapshots) on a thread of its own, with its own connection, so that
   * commits run beside the main thread's work instead of stopping it (see writer.ts). Default true for a file;
   * a `:memory:` database has one connection and always writes on the calling thread.
   */
  writerThread?: boolean;
}

export function openSqliteEventLog(options: SqliteEventLogOptions): EventLog {
  checkLogOptions(options ?? {});
  const externalCommitCheckMs = options?.externalCommitCheckMs ?? 200;
  if (!Number.isSafeInteger(externalCommitCheckMs) || externalCommitCheckMs < 1) {
    throw new InvalidInput('INVALID_ARGUMENT', `externalCommitCheckMs must be an integer >= 1, got ${JSON.stringify(options.externalCommitCheckMs)}.`, { option: 'externalCommitCheckMs' });
  }
  if (options?.writerThread !== undefined && typeof options.writerThread !== 'boolean') {
    throw new InvalidInput('INVALID_ARGUMENT', `writerThread must be a boolean, got ${JSON.stringify(options.writerThread)}.`, { option: 'writerThread' });
  }
  const file = openSqliteFile('openSqliteEventLog', options, migrate);
  const { db, busyTimeoutMs } = file;
  const read = prepareReadStatements(db);
  const settings = { busyTimeoutMs, externalCommitCheckMs };
  const threaded = options.path !== ':memory:' && options.writerThread !== false;
  const writer: SqliteWriter = threaded ? new WriterThread(options.path, settings, file.autocheckpointPages) : writerOn(db, settings);
  const readHead = (): number => read.head.get()!.position;

  const storage: LogStorage = {
    adapter: 'sqlite',
    subscriptions: writer.subscriptions,
    // On the calling thread a commit is synchronous: one at a time. A writer thread gets the next batch while it
    // commits one (see pipelineCommits).
    maxCommitsInFlight: threaded ? 2 : 1,
    pipelineCommits: threaded,
    recheckIntervalMs: 5000,
    commit: (batch, durability) => writer.commit(batch, durability),
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
    writeSnapshot: (stream, snapshot) => writer.writeSnapshot(stream, snapshot),
    truncateStream: (stream, beforeRevision) => writer.truncateStream(stream, beforeRevision),
    watchExternalCommits: (onCommit) => writer.watchExternalCommits(onCommit),
    close: async () => {
      await writer.close();
      await file.close();
    },
  };
  // Reads retry while busy here; the writer's calls retry on its own side (see writerOn).
  const writerCalls: (keyof LogStorage)[] = ['commit', 'writeSnapshot', 'truncateStream', 'watchExternalCommits', 'close'];
  return new StoredEventLog(retryingWhileBusy(storage, busyTimeoutMs, writerCalls), options);
}
export { openSqliteFeedStore, type SqliteFeedStoreOptions } from '../../realtime/sqlite/feed-store.js';
