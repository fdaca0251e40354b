/**
 * The SQLite adapter, Sinho's embedded default: one file in WAL mode with
 * `synchronous=FULL`, so an acknowledged append is on disk. Several processes
 * may share the file; writes are serialised by SQLite's write lock.
 */
import { checkLogOptions, StoredEventLog, type EventLogOptions } from '../stored-event-log.js';
import type { AppendRequest, CommitResult, LogStorage } from '../storage.js';
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

/** Batches of at most this many events commit on the calling thread when the writer thread has nothing to do. */
const SMALL_BATCH_EVENTS = 16;

const eventsIn = (batch: readonly AppendRequest[]): number => {
  let events = 0;
  for (const request of batch) for (const append of request.appends) events += append.events.length;
  return events;
};

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
  const here = writerOn(db, settings);
  const thread = threaded ? new WriterThread(options.path, settings, file.autocheckpointPages) : undefined;
  const writer: SqliteWriter = thread ?? here;
  // A small batch while nothing else is being written commits here, on the calling thread: the crossing costs
  // more than it saves when there is nothing to do meanwhile (one awaited append at a time ran at 3,200-3,500/s
  // through the thread against 4,900-5,300/s here). The process's two connections never write at once: this
  // thread's commit is synchronous, and it runs only while no call waits for the writer thread.
  let committingHere = 0;
  const commit = async (batch: readonly AppendRequest[], durability: 'durable' | 'relaxed'): Promise<CommitResult> => {
    if (!thread || (thread.idle && committingHere === 0 && eventsIn(batch) <= SMALL_BATCH_EVENTS)) {
      committingHere += 1;
      try {
        return await here.commit(batch, durability);
      } finally {
        committingHere -= 1;
      }
    }
    return thread.commit(batch, durability);
  };
  const readHead = (): number => read.head.get()!.position;

  const storage: LogStorage = {
    adapter: 'sqlite',
    subscriptions: writer.subscriptions,
    // On the calling thread a commit is synchronous: one at a time. A writer thread gets the next batch while it
    // commits one (see pipelineCommits).
    maxCommitsInFlight: threaded ? 2 : 1,
    pipelineCommits: threaded,
    recheckIntervalMs: 5000,
    commit,
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
