/**
 * The PostgreSQL adapter, for when one machine is not enough. Appends are
 * group-committed per process and serialised across processes by the head
 * row lock, so positions are gap-free and visible in order (see schema.ts).
 */
import pg from 'pg';
import { checkLogOptions, StoredEventLog, type EventLogOptions } from '../stored-event-log.js';
import type { LogStorage } from '../storage.js';
import type { EventLog } from '../types.js';
import { commitBatch, RevisionGuesses } from './append.js';
import { watchExternalCommits } from './notify.js';
import { checkSchemaName, PG_TYPES, type PgPool } from './pg-types.js';
import { readAllPage, readEventsById, readHead, readStreamPage } from './read.js';
import { migrate } from './schema.js';
import { createPostgresSubscriptionStorage } from './subscription.js';

export interface PostgresEventLogOptions extends EventLogOptions {
  /** e.g. `postgres://root@127.0.0.1:5432/test`. Default: libpq environment variables (PGHOST, ...). */
  connectionString?: string;
  /** The database schema holding Sinho's tables; created when missing. Default `sinho`. */
  schema?: string;
  /** Connections in the pool. Default 10. */
  poolSize?: number;
  /** Use LISTEN/NOTIFY for wake-ups. Turn off behind a transaction-mode pooler. Default true. */
  listen?: boolean;
  /** Safety re-check of the head while a reader waits, ms. Default 2,000. */
  recheckIntervalMs?: number;
  /** Called with errors of the background LISTEN connection (it reconnects by itself). */
  onBackgroundError?: (error: Error) => void;
  /**
   * The group-commit delay, in milliseconds (0 to 1,000; default 0, off): while appends keep arriving on their own
   * (at least 5 while the previous batch was held back or committing), the next batch is held back this long so that it carries more of them,
   * like PostgreSQL's `commit_delay` or Kafka's `linger.ms`. Fewer, larger commits cost less CPU per event at a steady
   * high rate, for that much more latency. A writer waiting on its own appends, and a full batch, are never delayed.
   * See docs/log.md, "Group-commit delay".
   */
  groupCommitDelayMs?: number;
}


export async function openPostgresEventLog(options: PostgresEventLogOptions = {}): Promise<EventLog> {
  const schema = options.schema ?? 'sinho';
  checkSchemaName(schema);
  const logOptions = { ...options, maxBatchEvents: options.maxBatchEvents ?? 128 };
  checkLogOptions(logOptions);
  const clientConfig: pg.ClientConfig = { connectionString: options.connectionString, types: PG_TYPES };
  const pool = new pg.Pool({ ...clientConfig, max: options.poolSize ?? 10 }) as unknown as PgPool & pg.Pool;
  // An idle client's error (server restart) must not crash the process; the next query reconnects.
  (pool as pg.Pool).on('error', (error) => options.onBackgroundError?.(error));
  // The backends of this pool, whose commits' notifications the LISTEN connection skips (see notify.ts).
  // pg sets processID from the server's BackendKeyData at connect; @types/pg does not declare it.
  const ownBackends = new Set<number | undefined>();
  const backendOf = (client: object): number | undefined => (client as { processID?: number }).processID;
  (pool as pg.Pool).on('connect', (client) => void ownBackends.add(backendOf(client)));
  (pool as pg.Pool).on('remove', (client) => void ownBackends.delete(backendOf(client)));
  try {
    await migrate(pool, schema);
  } catch (error) {
    await pool.end();
    throw error;
  }
  const channel = `sinho_log_${schema}`;
  // A log that does not listen never hears of other processes' commits, so what it remembers would go stale
  // unnoticed, each stale guess costing a failed attempt: it reads the revisions of every batch instead.
  const guesses = new RevisionGuesses(options.listen === false ? 0 : 10_000);
  // Settled once the LISTEN connection is up (or failed once): see the end of this function.
  let firstListen!: () => void;
  const listening = new Promise<void>((resolve) => (firstListen = resolve));
  const storage: LogStorage = {
    adapter: 'postgres',
    subscriptions: createPostgresSubscriptionStorage(pool, schema),
    maxCommitsInFlight: 2,
    recheckIntervalMs: options.recheckIntervalMs ?? 2000,
    commit: (batch, durability) => commitBatch(pool, schema, channel, batch, durability, guesses),
    readStreamPage: (q) => readStreamPage(pool, schema, q),
    readAllPage: (q) => readAllPage(pool, schema, q),
    readEventsById: (ids) => readEventsById(pool, schema, ids),
    streamRevision: async (stream) => {
      const { rows } = await pool.query<{ revision: number }>(`SELECT revision FROM ${schema}.streams WHERE name = $1`, [stream]);
      return rows[0]?.revision ?? -1;
    },
    headPosition: () => readHead(pool, schema),
    positionAt: async (time) => {
      const { rows } = await pool.query<{ position: number | null }>(`SELECT MIN(position) AS position FROM ${schema}.events WHERE recorded_at >= $1`, [time]);
      if (rows[0]?.position != null) return Number(rows[0].position);
      return (await readHead(pool, schema)) + 1;
    },
    readSnapshot: async (stream, key) => {
      const { rows } = await pool.query<{ revision: number; state: unknown }>(`SELECT revision, state FROM ${schema}.snapshots WHERE stream = $1 AND key = $2`, [
        stream,
        key,
      ]);
      const row = rows[0];
      return row && { key, revision: row.revision, state: row.state as never };
    },
    writeSnapshot: async (stream, snapshot) => {
      // Without waiting for the WAL flush (as on SQLite): a snapshot is derived from durable events, and a later
      // durable commit (such as a truncation it allows) flushes the WAL past it. set_config(..., true) lasts for
      // this statement's own transaction, whose commit is what reads the setting.
      await pool.query(
        `WITH relaxed AS (SELECT set_config('synchronous_commit', 'off', true))
         INSERT INTO ${schema}.snapshots (stream, key, revision, state) SELECT $1, $2, $3, $4::json FROM relaxed
         ON CONFLICT (stream, key) DO UPDATE SET revision = EXCLUDED.revision, state = EXCLUDED.state, created_at = now()
         WHERE EXCLUDED.revision >= ${schema}.snapshots.revision`,
        [stream, snapshot.key, snapshot.revision, JSON.stringify(snapshot.state)],
      );
    },
    truncateStream: async (stream, beforeRevision) => {
      await pool.query(`DELETE FROM ${schema}.events WHERE stream = $1 AND revision < $2`, [stream, beforeRevision]);
    },
    watchExternalCommits: (onCommit) => {
      if (options.listen === false) {
        firstListen();
        return () => {};
      }
      const external = (head: number): void => {
        guesses.clear(); // another process committed: any stream's revision may have moved
        onCommit(head);
      };
      return watchExternalCommits(clientConfig, channel, external, (e) => options.onBackgroundError?.(e), {
        isOwnBackend: (pid) => ownBackends.has(pid),
        readHead: (db) => readHead(db, schema),
        onFirstAttempt: firstListen,
      });
    },
    close: () => pool.end(),
  };
  // Up to two batches of at most 128 events in flight: under full load the next
  // batch is planned and waiting on the head lock while the previous one flushes
  // (measured in bench/log.mjs: about 10% more throughput than one batch of 256).
  // Below full load one batch commits while the next gathers (group-commit.ts).
  const log = new StoredEventLog(storage, logOptions);
  // The log is handed out once it listens. The LISTEN connection reports the head it reads when it starts, as a
  // commit of another process; had it started while this log's first appends were committing, that head could
  // include them before their appends returned, and followers would read from the store the rows they were about
  // to be handed (the conformance test of that failed about once in ten CI runs). A failed first attempt does not
  // hold the log back: wake-ups then come from the re-check while it reconnects.
  await listening;
  return log;
}
export { openPostgresFeedStore, type PostgresFeedStoreOptions } from '../../realtime/postgres/feed-store.js';
