/**
 * The PostgreSQL feed store: feeds shared by gateways and fan-out workers on
 * several machines. Same rules as the other stores (one conformance suite).
 *
 * Concurrency: a publish transaction locks the recipients' head rows in sorted
 * order (no deadlock between concurrent publishers) and each gateway node's
 * outbox head row, also in order, so per-user cursors stay dense and each
 * node's outbox sequence is assigned under a lock held until commit: rows
 * become visible in sequence order, and a gateway reading `seq > last` never
 * skips one that commits later (the log's head-row scheme). Commits wake
 * gateways through LISTEN/NOTIFY.
 */
import pg from 'pg';
import { watchExternalCommits } from '../../log/postgres/notify.js';
import { checkSchemaName, inTransaction, PG_TYPES, type PgPool, type PgQueryable } from '../../log/postgres/pg-types.js';
import { notificationJson, type FeedBounds, type FeedEntry, type FeedStore, type NewNotification, type NodeDelivery, type PublishOptions, type UndeliveredNotification } from '../feed-store.js';
import { PublishQueue, type PublishResult } from '../publish-queue.js';

export interface PostgresFeedStoreOptions {
  /** e.g. `postgres://root@127.0.0.1:5432/test`. Default: libpq environment variables. */
  connectionString?: string;
  /** The schema holding the feed tables; created when missing. Default `sinho`. */
  schema?: string;
  /** Connections in the pool. Default 10. */
  poolSize?: number;
  /** Use LISTEN/NOTIFY for wake-ups (off behind a transaction-mode pooler; gateways then poll). Default true. */
  listen?: boolean;
  /** Without LISTEN, how often gateways look for new outbox rows, ms. Default 50. */
  pollIntervalMs?: number;
  /** The clock, epoch ms. Default Date.now. */
  now?: () => number;
  onBackgroundError?: (error: Error) => void;
}

const schemaSql = (s: string) => [
  `CREATE SCHEMA IF NOT EXISTS ${s}`,
  `CREATE TABLE IF NOT EXISTS ${s}.feed_notifications (id bigserial PRIMARY KEY, source_id text NOT NULL UNIQUE, type text NOT NULL, data text NOT NULL, created_at bigint NOT NULL)`,
  `CREATE INDEX IF NOT EXISTS feed_notifications_created ON ${s}.feed_notifications (created_at)`,
  `CREATE TABLE IF NOT EXISTS ${s}.feed (user_id text NOT NULL, cursor bigint NOT NULL, notification_id bigint NOT NULL, PRIMARY KEY (user_id, cursor))`,
  `CREATE INDEX IF NOT EXISTS feed_notification ON ${s}.feed (notification_id)`,
  `CREATE TABLE IF NOT EXISTS ${s}.feed_users (user_id text PRIMARY KEY, head bigint NOT NULL, acked bigint NOT NULL DEFAULT 0, reported bigint NOT NULL DEFAULT 0)`,
  `CREATE INDEX IF NOT EXISTS feed_users_pending ON ${s}.feed_users (user_id) WHERE head > acked AND head > reported`,
  `CREATE TABLE IF NOT EXISTS ${s}.feed_nodes (node integer PRIMARY KEY, seq bigint NOT NULL)`,
  `CREATE TABLE IF NOT EXISTS ${s}.feed_outbox (node integer NOT NULL, seq bigint NOT NULL, notification_id bigint NOT NULL, recipients text NOT NULL, created_at bigint NOT NULL, PRIMARY KEY (node, seq))`,
  `CREATE INDEX IF NOT EXISTS feed_outbox_created ON ${s}.feed_outbox (created_at)`,
  `CREATE TABLE IF NOT EXISTS ${s}.feed_presence (user_id text NOT NULL, node text NOT NULL, expires_at bigint NOT NULL, PRIMARY KEY (user_id, node))`,
];

export async function openPostgresFeedStore(options: PostgresFeedStoreOptions = {}): Promise<FeedStore> {
  const s = options.schema ?? 'sinho';
  checkSchemaName(s);
  const now = options.now ?? Date.now;
  const clientConfig: pg.ClientConfig = { connectionString: options.connectionString, types: PG_TYPES };
  const driverPool = new pg.Pool({ ...clientConfig, max: options.poolSize ?? 10 });
  driverPool.on('error', (error) => options.onBackgroundError?.(error));
  const pool = driverPool as unknown as PgPool;
  const channel = `sinho_feed_${s}`;
  try {
    // Several processes may start at once: one creates the tables, the others wait for it.
    await inTransaction(pool, async (client) => {
      await client.query(`SELECT pg_advisory_xact_lock(hashtext($1))`, [`sinho-feed-schema-${s}`]);
      for (const sql of schemaSql(s)) await client.query(sql);
    });
  } catch (error) {
    await pool.end();
    throw error;
  }

  const listeners = new Set<() => void>();
  const notify = () => {
    for (const listener of listeners) listener();
  };

  const commit = (batch: { notification: NewNotification; nodeOf?: (userId: string) => number }[]): Promise<PublishResult[]> =>
    inTransaction(pool, async (client: PgQueryable) => {
      const at = now();
      const inserted = await client.query<{ id: number; source_id: string }>(
        `INSERT INTO ${s}.feed_notifications (source_id, type, data, created_at)
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[])
         ON CONFLICT (source_id) DO NOTHING RETURNING id, source_id`,
        [batch.map((b) => b.notification.sourceId), batch.map((b) => b.notification.type), batch.map((b) => JSON.stringify(b.notification.data ?? null)), batch.map(() => at)],
      );
      const idOf = new Map(inserted.rows.map((r) => [r.source_id, r.id]));
      // A sourceId twice in one batch: the first publish wins, the second is a repeat.
      const firstIndex = new Map<string, number>();
      batch.forEach((b, i) => firstIndex.has(b.notification.sourceId) || firstIndex.set(b.notification.sourceId, i));
      const fresh = batch.filter((b, i) => idOf.has(b.notification.sourceId) && firstIndex.get(b.notification.sourceId) === i);
      const users = [...new Set(fresh.flatMap((b) => b.notification.recipients))].sort();
      const heads = new Map<string, number>();
      if (users.length > 0) {
        // Locks every recipient's head row, in sorted order, creating missing ones.
        const locked = await client.query<{ user_id: string; head: number }>(
          `INSERT INTO ${s}.feed_users (user_id, head) SELECT u, 0 FROM unnest($1::text[]) AS u ORDER BY u
           ON CONFLICT (user_id) DO UPDATE SET head = ${s}.feed_users.head RETURNING user_id, head`,
          [users],
        );
        for (const row of locked.rows) heads.set(row.user_id, row.head);
      }
      const feedRows: { user: string; cursor: number; id: number }[] = [];
      const outbox = new Map<number, { id: number; recipients: [string, number][] }[]>();
      const results = new Map<string, PublishResult>();
      for (const b of fresh) {
        const id = idOf.get(b.notification.sourceId)!;
        const recipients: { userId: string; cursor: number }[] = [];
        for (const userId of new Set(b.notification.recipients)) {
          const cursor = heads.get(userId)! + 1;
          heads.set(userId, cursor);
          feedRows.push({ user: userId, cursor, id });
          recipients.push({ userId, cursor });
        }
        if (b.nodeOf) {
          const byNode = new Map<number, [string, number][]>();
          for (const r of recipients) {
            const node = b.nodeOf(r.userId);
            let list = byNode.get(node);
            if (!list) byNode.set(node, (list = []));
            list.push([r.userId, r.cursor]);
          }
          for (const [node, list] of byNode) {
            let rows = outbox.get(node);
            if (!rows) outbox.set(node, (rows = []));
            rows.push({ id, recipients: list });
          }
        }
        results.set(b.notification.sourceId, { sourceId: b.notification.sourceId, recipients });
      }
      if (feedRows.length > 0) {
        await client.query(`INSERT INTO ${s}.feed (user_id, cursor, notification_id) SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[])`, [
          feedRows.map((r) => r.user),
          feedRows.map((r) => r.cursor),
          feedRows.map((r) => r.id),
        ]);
        await client.query(`UPDATE ${s}.feed_users f SET head = v.head FROM unnest($1::text[], $2::bigint[]) AS v(user_id, head) WHERE f.user_id = v.user_id`, [
          [...heads.keys()],
          [...heads.values()],
        ]);
      }
      if (outbox.size > 0) {
        const nodes = [...outbox.keys()].sort((a, b) => a - b);
        // The node rows are locked in order until commit: each node's outbox becomes visible in sequence order.
        const seqs = await client.query<{ node: number; seq: number }>(
          `INSERT INTO ${s}.feed_nodes (node, seq) SELECT n, 0 FROM unnest($1::int[]) AS n ORDER BY n
           ON CONFLICT (node) DO UPDATE SET seq = ${s}.feed_nodes.seq RETURNING node, seq`,
          [nodes],
        );
        const next = new Map(seqs.rows.map((r) => [r.node, r.seq]));
        const rows: { node: number; seq: number; id: number; recipients: string }[] = [];
        for (const node of nodes) {
          for (const entry of outbox.get(node)!) {
            const seq = next.get(node)! + 1;
            next.set(node, seq);
            rows.push({ node, seq, id: entry.id, recipients: JSON.stringify(entry.recipients) });
          }
        }
        await client.query(
          `INSERT INTO ${s}.feed_outbox (node, seq, notification_id, recipients, created_at) SELECT n, q, i, r, $5 FROM unnest($1::int[], $2::bigint[], $3::bigint[], $4::text[]) AS v(n, q, i, r)`,
          [rows.map((r) => r.node), rows.map((r) => r.seq), rows.map((r) => r.id), rows.map((r) => r.recipients), at],
        );
        await client.query(`UPDATE ${s}.feed_nodes f SET seq = v.seq FROM unnest($1::int[], $2::bigint[]) AS v(node, seq) WHERE f.node = v.node`, [[...next.keys()], [...next.values()]]);
      }
      await client.query(`SELECT pg_notify($1, '0')`, [channel]);
      return batch.map((b, i) => (firstIndex.get(b.notification.sourceId) === i && results.get(b.notification.sourceId)) || { sourceId: b.notification.sourceId, recipients: [] });
    });

  const queue = new PublishQueue(async (batch) => {
    const results = await commit(batch);
    notify();
    return results;
  });

  let stopWatching: (() => void) | undefined;
  let pollTimer: NodeJS.Timeout | undefined;
  const startWatching = () => {
    if (stopWatching || pollTimer) return;
    if (options.listen === false) {
      pollTimer = setInterval(notify, options.pollIntervalMs ?? 50);
      pollTimer.unref();
    } else {
      stopWatching = watchExternalCommits(clientConfig, channel, () => notify(), (e) => options.onBackgroundError?.(e));
    }
  };

  return {
    publish: (notifications: readonly NewNotification[], publishOptions: PublishOptions = {}) => queue.enqueue(notifications, publishOptions.nodeOf),
    read: async (userId, afterCursor, limit): Promise<FeedEntry[]> => {
      const { rows } = await pool.query<{ cursor: number; type: string; data: string; at: number }>(
        `SELECT f.cursor, n.type, n.data, n.created_at AS at FROM ${s}.feed f JOIN ${s}.feed_notifications n ON n.id = f.notification_id
          WHERE f.user_id = $1 AND f.cursor > $2 ORDER BY f.cursor LIMIT $3`,
        [userId, afterCursor, limit],
      );
      return rows.map((r) => ({ userId, cursor: r.cursor, type: r.type, data: JSON.parse(r.data), at: r.at }));
    },
    bounds: async (userId): Promise<FeedBounds> => {
      const { rows } = await pool.query<{ head: number | null; acked: number | null; oldest: number | null }>(
        `SELECT u.head, u.acked, (SELECT MIN(cursor) FROM ${s}.feed WHERE user_id = $1) AS oldest FROM (SELECT 1) one LEFT JOIN ${s}.feed_users u ON u.user_id = $1`,
        [userId],
      );
      const row = rows[0]!;
      const head = row.head ?? 0;
      return { head, oldest: row.oldest ?? head + 1, acked: row.acked ?? 0 };
    },
    ack: async (acks) => {
      if (acks.length === 0) return;
      await pool.query(
        `UPDATE ${s}.feed_users f SET acked = LEAST(f.head, v.cursor) FROM unnest($1::text[], $2::bigint[]) AS v(user_id, cursor)
          WHERE f.user_id = v.user_id AND f.acked < LEAST(f.head, v.cursor)`,
        [acks.map((a) => a.userId), acks.map((a) => a.cursor)],
      );
    },
    readNode: async (node, afterSeq, limit): Promise<NodeDelivery[]> => {
      const { rows } = await pool.query<{ seq: number; type: string; data: string; at: number; recipients: string }>(
        `SELECT o.seq, n.type, n.data, n.created_at AS at, o.recipients FROM ${s}.feed_outbox o JOIN ${s}.feed_notifications n ON n.id = o.notification_id
          WHERE o.node = $1 AND o.seq > $2 ORDER BY o.seq LIMIT $3`,
        [node, afterSeq, limit],
      );
      return rows.map((r) => ({
        seq: r.seq,
        json: notificationJson(r.type, r.data, r.at),
        recipients: (JSON.parse(r.recipients) as [string, number][]).map(([userId, cursor]) => ({ userId, cursor })),
      }));
    },
    nodeHead: async (node) => {
      const { rows } = await pool.query<{ seq: number }>(`SELECT seq FROM ${s}.feed_nodes WHERE node = $1`, [node]);
      return rows[0]?.seq ?? 0;
    },
    findUndelivered: async (before, limit): Promise<UndeliveredNotification[]> => {
      const { rows } = await pool.query<{ user_id: string; cursor: number; source_id: string; type: string; at: number }>(
        `SELECT f.user_id, f.cursor, n.source_id, n.type, n.created_at AS at
           FROM ${s}.feed_users u
           JOIN ${s}.feed f ON f.user_id = u.user_id AND f.cursor > GREATEST(u.acked, u.reported)
           JOIN ${s}.feed_notifications n ON n.id = f.notification_id
          WHERE u.head > u.acked AND u.head > u.reported AND n.created_at <= $1
          ORDER BY f.user_id, f.cursor LIMIT $2`,
        [before, limit],
      );
      return rows.map((r) => ({ userId: r.user_id, cursor: r.cursor, sourceId: r.source_id, type: r.type, at: r.at }));
    },
    markReported: async (reported) => {
      if (reported.length === 0) return;
      await pool.query(
        `UPDATE ${s}.feed_users f SET reported = GREATEST(f.reported, v.cursor) FROM unnest($1::text[], $2::bigint[]) AS v(user_id, cursor) WHERE f.user_id = v.user_id`,
        [reported.map((r) => r.userId), reported.map((r) => r.cursor)],
      );
    },
    prune: (before, outboxBefore) =>
      inTransaction(pool, async (client) => {
        await client.query(`DELETE FROM ${s}.feed WHERE notification_id IN (SELECT id FROM ${s}.feed_notifications WHERE created_at < $1)`, [before]);
        // An outbox row has its notification's created_at (one publish transaction writes both), so rows of the
        // notifications retention deletes are those before `before`; one range on the created_at index (an OR with
        // `notification_id IN (...)` read the whole outbox).
        await client.query(`DELETE FROM ${s}.feed_outbox WHERE created_at < GREATEST($1::bigint, $2::bigint)`, [outboxBefore, before]);
        const deleted = await client.query(`DELETE FROM ${s}.feed_notifications WHERE created_at < $1`, [before]);
        await client.query(`DELETE FROM ${s}.feed_presence WHERE expires_at <= $1`, [now()]);
        return deleted.rowCount ?? 0;
      }),
    setOnline: async (node, userIds, until) => {
      if (userIds.length === 0) return;
      await pool.query(
        `INSERT INTO ${s}.feed_presence (user_id, node, expires_at) SELECT u, $2, $3 FROM unnest($1::text[]) AS u
         ON CONFLICT (user_id, node) DO UPDATE SET expires_at = EXCLUDED.expires_at`,
        [[...new Set(userIds)], node, until],
      );
    },
    setOffline: async (node, userIds) => {
      if (userIds.length === 0) return;
      await pool.query(`DELETE FROM ${s}.feed_presence WHERE node = $1 AND user_id = ANY($2::text[])`, [node, [...userIds]]);
    },
    online: async (userIds, at) => {
      const { rows } = await pool.query<{ user_id: string }>(`SELECT DISTINCT user_id FROM ${s}.feed_presence WHERE user_id = ANY($1::text[]) AND expires_at > $2`, [[...userIds], at]);
      return rows.map((r) => r.user_id);
    },
    watch: (onChange) => {
      listeners.add(onChange);
      startWatching();
      return () => {
        listeners.delete(onChange);
        if (listeners.size === 0) {
          stopWatching?.();
          stopWatching = undefined;
          if (pollTimer) clearInterval(pollTimer);
          pollTimer = undefined;
        }
      };
    },
    close: async () => {
      await queue.drain();
      stopWatching?.();
      if (pollTimer) clearInterval(pollTimer);
      listeners.clear();
      await pool.end();
    },
  };
}
