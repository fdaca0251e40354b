/**
 * The SQLite feed store: the embedded default. Its own file (or the log's),
 * WAL with `synchronous=FULL`, shared by the fan-out worker and every gateway
 * process of the machine: the node outbox table is how gateways on one machine
 * receive their users' notifications, with `PRAGMA data_version` as wake-up.
 */
import { notificationJson, type FeedBounds, type FeedEntry, type FeedStore, type NewNotification, type NodeDelivery, type PublishOptions, type UndeliveredNotification } from '../feed-store.js';
import { PublishQueue } from '../publish-queue.js';
import { retryingWhileBusy } from '../../log/sqlite/busy.js';
import { openSqliteFile, type SqliteFileOptions } from '../../log/sqlite/file.js';

export interface SqliteFeedStoreOptions extends SqliteFileOptions {
  /** The clock, epoch ms (injected in tests). Default Date.now. */
  now?: () => number;
  /** How often other processes' commits are noticed, ms (a `PRAGMA data_version` read, no table touched). Default 5. */
  externalCommitCheckMs?: number;
}

const SCHEMA = [
  `CREATE TABLE IF NOT EXISTS sinho_notifications (
     id INTEGER PRIMARY KEY, source_id TEXT NOT NULL UNIQUE, type TEXT NOT NULL, data TEXT NOT NULL, created_at INTEGER NOT NULL)`,
  // One narrow row per recipient; the primary key is the resume index.
  `CREATE TABLE IF NOT EXISTS sinho_feed (
     user_id TEXT NOT NULL, cursor INTEGER NOT NULL, notification_id INTEGER NOT NULL, PRIMARY KEY (user_id, cursor)) WITHOUT ROWID`,
  // head: newest cursor; acked: the user's acknowledged cursor; reported: highest cursor reported undelivered.
  `CREATE TABLE IF NOT EXISTS sinho_feed_users (
     user_id TEXT PRIMARY KEY, head INTEGER NOT NULL, acked INTEGER NOT NULL DEFAULT 0, reported INTEGER NOT NULL DEFAULT 0) WITHOUT ROWID`,
  `CREATE INDEX IF NOT EXISTS sinho_feed_users_pending ON sinho_feed_users (user_id) WHERE head > acked AND head > reported`,
  `CREATE TABLE IF NOT EXISTS sinho_node_outbox (
     seq INTEGER PRIMARY KEY, node INTEGER NOT NULL, notification_id INTEGER NOT NULL, recipients TEXT NOT NULL, created_at INTEGER NOT NULL)`,
  `CREATE INDEX IF NOT EXISTS sinho_node_outbox_node ON sinho_node_outbox (node, seq)`,
  `CREATE TABLE IF NOT EXISTS sinho_presence (
     user_id TEXT NOT NULL, node TEXT NOT NULL, expires_at INTEGER NOT NULL, PRIMARY KEY (user_id, node)) WITHOUT ROWID`,
];

/** Users whose old feed rows one prune transaction deletes (see prune). */
const PRUNE_USERS_PER_TRANSACTION = 500;

export function openSqliteFeedStore(options: SqliteFeedStoreOptions): FeedStore {
  const file = openSqliteFile('openSqliteFeedStore', options, (db) =>
    db
      .transaction(() => {
        for (const sql of SCHEMA) db.exec(sql);
      })
      .immediate(),
  );
  const { db, busyTimeoutMs } = file;
  const now = options.now ?? Date.now;

  const s = {
    insertNotification: db.prepare<[string, string, string, number]>('INSERT INTO sinho_notifications (source_id, type, data, created_at) VALUES (?, ?, ?, ?) ON CONFLICT (source_id) DO NOTHING'),
    userHead: db.prepare<[string], { head: number }>('SELECT head FROM sinho_feed_users WHERE user_id = ?'),
    setHead: db.prepare<[string, number]>('INSERT INTO sinho_feed_users (user_id, head) VALUES (?, ?) ON CONFLICT (user_id) DO UPDATE SET head = excluded.head'),
    insertFeed: db.prepare<[string, number, number | bigint]>('INSERT INTO sinho_feed (user_id, cursor, notification_id) VALUES (?, ?, ?)'),
    insertOutbox: db.prepare<[number, number | bigint, string, number]>('INSERT INTO sinho_node_outbox (node, notification_id, recipients, created_at) VALUES (?, ?, ?, ?)'),
    read: db.prepare<[string, number, number], { cursor: number; type: string; data: string; at: number }>(
      `SELECT f.cursor AS cursor, n.type AS type, n.data AS data, n.created_at AS at
         FROM sinho_feed f JOIN sinho_notifications n ON n.id = f.notification_id
        WHERE f.user_id = ? AND f.cursor > ? ORDER BY f.cursor LIMIT ?`,
    ),
    user: db.prepare<[string], { head: number; acked: number }>('SELECT head, acked FROM sinho_feed_users WHERE user_id = ?'),
    oldest: db.prepare<[string], { cursor: number | null }>('SELECT MIN(cursor) AS cursor FROM sinho_feed WHERE user_id = ?'),
    ack: db.prepare<[{ cursor: number; user: string }]>('UPDATE sinho_feed_users SET acked = MIN(head, @cursor) WHERE user_id = @user AND acked < MIN(head, @cursor)'),
    readNode: db.prepare<[number, number, number], { seq: number; type: string; data: string; at: number; recipients: string }>(
      `SELECT o.seq AS seq, n.type AS type, n.data AS data, n.created_at AS at, o.recipients AS recipients
         FROM sinho_node_outbox o JOIN sinho_notifications n ON n.id = o.notification_id
        WHERE o.node = ? AND o.seq > ? ORDER BY o.seq LIMIT ?`,
    ),
    nodeHead: db.prepare<[number], { seq: number | null }>('SELECT MAX(seq) AS seq FROM sinho_node_outbox WHERE node = ?'),
    // One statement for the whole sweep (it used to run one query per pending user): the partial index holds
    // only users with notifications neither acknowledged nor reported yet, and LIMIT stops the walk early.
    // The join order is forced (INDEXED BY, CROSS JOIN): without statistics SQLite would scan the whole feed.
    // A user's notifications are stored in cursor order, so when the first unreported one is not due, none is:
    // the correlated subquery looks at that one row and skips the user. Without it, a sweep walked every
    // pending row of every user while they were all younger than undeliveredAfterMs (moim's worker: 340 ms
    // a second with nobody connected).
    undelivered: db.prepare<[{ before: number; limit: number }], { user_id: string; cursor: number; source_id: string; type: string; at: number }>(
      `SELECT f.user_id AS user_id, f.cursor AS cursor, n.source_id AS source_id, n.type AS type, n.created_at AS at
         FROM sinho_feed_users u INDEXED BY sinho_feed_users_pending
         CROSS JOIN sinho_feed f CROSS JOIN sinho_notifications n
        WHERE u.head > u.acked AND u.head > u.reported
          AND (SELECT n1.created_at FROM sinho_feed f1 CROSS JOIN sinho_notifications n1
                WHERE f1.user_id = u.user_id AND f1.cursor > MAX(u.acked, u.reported) AND n1.id = f1.notification_id
                ORDER BY f1.cursor LIMIT 1) <= @before
          AND f.user_id = u.user_id AND f.cursor > MAX(u.acked, u.reported)
          AND n.id = f.notification_id AND n.created_at <= @before
        ORDER BY u.user_id, f.cursor LIMIT @limit`,
    ),
    setReported: db.prepare<[number, string]>('UPDATE sinho_feed_users SET reported = MAX(reported, ?) WHERE user_id = ?'),
    // Retention deletes a prefix in commit order (see prune below). Each of these walks its table in key order
    // and stops at the first row to keep, so it reads what it deletes plus one row, never a whole table.
    firstKeptNotification: db.prepare<[number], { id: number }>('SELECT id FROM sinho_notifications WHERE created_at >= ? ORDER BY id LIMIT 1'),
    lastNotification: db.prepare<[], { id: number | null }>('SELECT MAX(id) AS id FROM sinho_notifications'),
    feedUsersAfter: db.prepare<[string, number], string>('SELECT user_id FROM sinho_feed_users WHERE user_id > ? ORDER BY user_id LIMIT ?').pluck(),
    firstKeptCursor: db.prepare<[string, number], { cursor: number }>('SELECT cursor FROM sinho_feed WHERE user_id = ? AND notification_id >= ? ORDER BY cursor LIMIT 1'),
    pruneFeed: db.prepare<[string, number]>('DELETE FROM sinho_feed WHERE user_id = ? AND cursor < ?'),
    pruneNotifications: db.prepare<[number]>('DELETE FROM sinho_notifications WHERE id < ?'),
    firstKeptOutbox: db.prepare<[number, number], { seq: number }>('SELECT seq FROM sinho_node_outbox WHERE created_at >= ? AND notification_id >= ? ORDER BY seq LIMIT 1'),
    pruneOutbox: db.prepare<[number]>('DELETE FROM sinho_node_outbox WHERE seq < ?'),
    setOnline: db.prepare<[string, string, number]>('INSERT INTO sinho_presence (user_id, node, expires_at) VALUES (?, ?, ?) ON CONFLICT (user_id, node) DO UPDATE SET expires_at = excluded.expires_at'),
    setOffline: db.prepare<[string, string]>('DELETE FROM sinho_presence WHERE user_id = ? AND node = ?'),
    online: db.prepare<[string, number], { user_id: string }>('SELECT DISTINCT user_id FROM sinho_presence WHERE user_id IN (SELECT value FROM json_each(?)) AND expires_at > ?'),
    expirePresence: db.prepare<[number]>('DELETE FROM sinho_presence WHERE expires_at <= ?'),
    dataVersion: db.prepare('PRAGMA data_version').pluck(),
  };

  const listeners = new Set<() => void>();
  const notify = () => {
    for (const listener of listeners) listener();
  };

  // Users' head cursors as this connection last wrote them. Valid while no other connection committed
  // (`PRAGMA data_version` unchanged, read under the write lock); it saves a lookup per recipient.
  const headCache = new Map<string, number>();
  let cacheVersion = -1;
  const commit = db.transaction((batch: readonly { notification: NewNotification; nodeOf?: (userId: string) => number }[]) => {
    const at = now();
    const version = s.dataVersion.get() as number;
    if (version !== cacheVersion || headCache.size > 1_000_000) headCache.clear();
    cacheVersion = version;
    const heads = new Map<string, number>();
    const results: { sourceId: string; recipients: { userId: string; cursor: number }[] }[] = [];
    for (const { notification: n, nodeOf } of batch) {
      const inserted = s.insertNotification.run(n.sourceId, n.type, JSON.stringify(n.data ?? null), at);
      if (inserted.changes === 0) {
        results.push({ sourceId: n.sourceId, recipients: [] });
        continue;
      }
      const id = inserted.lastInsertRowid;
      const recipients: { userId: string; cursor: number }[] = [];
      for (const userId of new Set(n.recipients)) {
        const cursor = (heads.get(userId) ?? headCache.get(userId) ?? s.userHead.get(userId)?.head ?? 0) + 1;
        heads.set(userId, cursor);
        s.insertFeed.run(userId, cursor, id);
        recipients.push({ userId, cursor });
      }
      if (nodeOf) {
        const byNode = new Map<number, [string, number][]>();
        for (const r of recipients) {
          const node = nodeOf(r.userId);
          let list = byNode.get(node);
          if (!list) byNode.set(node, (list = []));
          list.push([r.userId, r.cursor]);
        }
        for (const [node, list] of byNode) s.insertOutbox.run(node, id, JSON.stringify(list), at);
      }
      results.push({ sourceId: n.sourceId, recipients });
    }
    for (const [userId, head] of heads) s.setHead.run(userId, head);
    return { results, heads };
  });
  const commitAndCache = (batch: Parameters<typeof commit>[0]) => {
    let out: ReturnType<typeof commit>;
    try {
      out = commit.immediate(batch);
    } catch (error) {
      cacheVersion = -1; // rolled back: what the cache would have learned is void
      throw error;
    }
    for (const [userId, head] of out.heads) headCache.set(userId, head);
    return out.results;
  };

  const queue = new PublishQueue((batch) => {
    const results = commitAndCache(batch);
    notify();
    return results;
  });

  let lastVersion = s.dataVersion.get() as number;
  let timer: NodeJS.Timeout | undefined;
  const startWatching = () => {
    if (timer) return;
    timer = setInterval(() => {
      if (!db.open) return;
      let version: number;
      try {
        version = s.dataVersion.get() as number;
      } catch {
        return; // momentarily locked: look again on the next tick
      }
      if (version !== lastVersion) {
        lastVersion = version;
        notify();
      }
    }, options.externalCommitCheckMs ?? 5);
    timer.unref();
  };

  const store: FeedStore = {
    publish: (notifications: readonly NewNotification[], publishOptions: PublishOptions = {}) => queue.enqueue(notifications, publishOptions.nodeOf),
    read: async (userId, afterCursor, limit): Promise<FeedEntry[]> =>
      s.read.all(userId, afterCursor, limit).map((r) => ({ userId, cursor: r.cursor, type: r.type, data: JSON.parse(r.data), at: r.at })),
    bounds: async (userId): Promise<FeedBounds> => {
      const read = db.transaction(() => {
        const user = s.user.get(userId);
        const oldest = s.oldest.get(userId)?.cursor;
        const head = user?.head ?? 0;
        return { head, oldest: oldest ?? head + 1, acked: user?.acked ?? 0 };
      });
      return read.deferred();
    },
    ack: async (acks) => {
      if (acks.length === 0) return;
      db.transaction(() => {
        for (const { userId, cursor } of acks) s.ack.run({ cursor, user: userId });
      }).immediate();
    },
    readNode: async (node, afterSeq, limit): Promise<NodeDelivery[]> =>
      s.readNode.all(node, afterSeq, limit).map((r) => ({
        seq: r.seq,
        json: notificationJson(r.type, r.data, r.at),
        recipients: (JSON.parse(r.recipients) as [string, number][]).map(([userId, cursor]) => ({ userId, cursor })),
      })),
    nodeHead: async (node) => s.nodeHead.get(node)?.seq ?? 0,
    findUndelivered: async (before, limit): Promise<UndeliveredNotification[]> =>
      s.undelivered.all({ before, limit }).map((d) => ({ userId: d.user_id, cursor: d.cursor, sourceId: d.source_id, type: d.type, at: d.at })),
    markReported: async (reported) => {
      if (reported.length === 0) return;
      db.transaction(() => {
        for (const { userId, cursor } of reported) s.setReported.run(cursor, userId);
      }).immediate();
    },
    // Notifications, feed rows and outbox rows are written in commit order: ids, each user's cursors and outbox
    // seqs grow together, and so does created_at while the clock does not go back. So retention deletes, in each
    // table, everything before the first row to keep. (The first version deleted `WHERE created_at < ?` and
    // `notification_id IN (...)`: full scans, without an index on either column, which blocked moim's worker for
    // a second every minute after 300,000 joins, and would grow with 30 days of feeds. An index on
    // sinho_feed.notification_id would cost a B-tree insert per recipient on the publish path.) If the clock went
    // back, a few notifications younger than `before` that were committed before an older one go early; a feed
    // row never outlives its notification. Feed rows are deleted user by user, PRUNE_USERS_PER_TRANSACTION at a
    // time, each batch its own short transaction, so publishes go on in between; notifications go last.
    prune: async (before, outboxBefore) => {
      const keep = s.firstKeptNotification.get(before)?.id ?? (s.lastNotification.get()?.id ?? 0) + 1;
      for (let after = ''; ; ) {
        const users = s.feedUsersAfter.all(after, PRUNE_USERS_PER_TRANSACTION);
        if (users.length === 0) break;
        db.transaction(() => {
          for (const user of users) s.pruneFeed.run(user, s.firstKeptCursor.get(user, keep)?.cursor ?? Number.MAX_SAFE_INTEGER);
        }).immediate();
        after = users.at(-1)!;
        await new Promise((resolve) => setImmediate(resolve));
      }
      const run = db.transaction(() => {
        // Outbox rows of deleted notifications go too, whatever outboxBefore says.
        s.pruneOutbox.run(s.firstKeptOutbox.get(outboxBefore, keep)?.seq ?? Number.MAX_SAFE_INTEGER);
        const deleted = s.pruneNotifications.run(keep).changes;
        s.expirePresence.run(now());
        return deleted;
      });
      return run.immediate();
    },
    setOnline: async (node, userIds, until) => {
      db.transaction(() => {
        for (const userId of userIds) s.setOnline.run(userId, node, until);
      }).immediate();
    },
    setOffline: async (node, userIds) => {
      db.transaction(() => {
        for (const userId of userIds) s.setOffline.run(userId, node);
      }).immediate();
    },
    online: async (userIds, at) => s.online.all(JSON.stringify(userIds), at).map((r) => r.user_id),
    watch: (onChange) => {
      listeners.add(onChange);
      startWatching();
      return () => {
        listeners.delete(onChange);
        if (listeners.size === 0 && timer) {
          clearInterval(timer);
          timer = undefined;
        }
      };
    },
    close: async () => {
      await queue.drain();
      if (timer) clearInterval(timer);
      listeners.clear();
      await file.close();
    },
  };
  return retryingWhileBusy(store, busyTimeoutMs, ['watch', 'close']);
}
