/**
 * The in-memory feed store: for tests, examples and a single process. It keeps
 * the same rules as the SQLite store (dense cursors, idempotent sourceId, node
 * outbox, acknowledgements, undelivered reports, retention, presence) but
 * nothing survives the process.
 */
import { notificationJson, type FeedBounds, type FeedEntry, type FeedStore, type NewNotification, type NodeDelivery, type PublishOptions, type UndeliveredNotification } from '../feed-store.js';
import { PublishQueue, type PublishResult } from '../publish-queue.js';

export interface MemoryFeedStoreOptions {
  /** The clock, epoch ms (injected in tests). Default Date.now. */
  now?: () => number;
}

interface StoredNotification {
  id: number;
  sourceId: string;
  type: string;
  data: string;
  at: number;
}

interface User {
  head: number;
  acked: number;
  reported: number;
  /** cursor -> notification id; insertion order is cursor order. */
  feed: Map<number, number>;
}

export function openMemoryFeedStore(options: MemoryFeedStoreOptions = {}): FeedStore {
  const now = options.now ?? Date.now;
  const notifications = new Map<number, StoredNotification>();
  const bySource = new Map<string, number>();
  const users = new Map<string, User>();
  const outbox = new Map<number, { seq: number; notificationId: number; recipients: { userId: string; cursor: number }[]; at: number }[]>();
  const presence = new Map<string, Map<string, number>>();
  let nextId = 1;
  let nextSeq = 1;
  const listeners = new Set<() => void>();
  const userOf = (userId: string): User => {
    let user = users.get(userId);
    if (!user) users.set(userId, (user = { head: 0, acked: 0, reported: 0, feed: new Map() }));
    return user;
  };

  const queue = new PublishQueue((batch): PublishResult[] => {
    const at = now();
    const results = batch.map(({ notification: n, nodeOf }): PublishResult => {
      if (bySource.has(n.sourceId)) return { sourceId: n.sourceId, recipients: [] };
      const id = nextId++;
      notifications.set(id, { id, sourceId: n.sourceId, type: n.type, data: JSON.stringify(n.data ?? null), at });
      bySource.set(n.sourceId, id);
      const recipients = [...new Set(n.recipients)].map((userId) => {
        const user = userOf(userId);
        user.head += 1;
        user.feed.set(user.head, id);
        return { userId, cursor: user.head };
      });
      if (nodeOf) {
        const byNode = new Map<number, { userId: string; cursor: number }[]>();
        for (const r of recipients) {
          const node = nodeOf(r.userId);
          let list = byNode.get(node);
          if (!list) byNode.set(node, (list = []));
          list.push(r);
        }
        for (const [node, list] of byNode) {
          let rows = outbox.get(node);
          if (!rows) outbox.set(node, (rows = []));
          rows.push({ seq: nextSeq++, notificationId: id, recipients: list, at });
        }
      }
      return { sourceId: n.sourceId, recipients };
    });
    for (const listener of listeners) listener();
    return results;
  });

  const entry = (userId: string, cursor: number, notificationId: number): FeedEntry => {
    const n = notifications.get(notificationId)!;
    return { userId, cursor, type: n.type, data: JSON.parse(n.data), at: n.at };
  };

  return {
    publish: (list: readonly NewNotification[], publishOptions: PublishOptions = {}) => queue.enqueue(list, publishOptions.nodeOf),
    read: async (userId, afterCursor, limit) => {
      const user = users.get(userId);
      const out: FeedEntry[] = [];
      if (!user) return out;
      for (let cursor = Math.max(afterCursor + 1, firstCursor(user)); cursor <= user.head && out.length < limit; cursor++) {
        const id = user.feed.get(cursor);
        if (id !== undefined) out.push(entry(userId, cursor, id));
      }
      return out;
    },
    bounds: async (userId): Promise<FeedBounds> => {
      const user = users.get(userId);
      if (!user) return { head: 0, oldest: 1, acked: 0 };
      return { head: user.head, oldest: firstCursor(user), acked: user.acked };
    },
    ack: async (acks) => {
      for (const { userId, cursor } of acks) {
        const user = users.get(userId);
        if (user) user.acked = Math.max(user.acked, Math.min(user.head, cursor));
      }
    },
    readNode: async (node, afterSeq, limit): Promise<NodeDelivery[]> =>
      (outbox.get(node) ?? [])
        .filter((r) => r.seq > afterSeq)
        .slice(0, limit)
        .map((r) => {
          const n = notifications.get(r.notificationId)!;
          return { seq: r.seq, json: notificationJson(n.type, n.data, n.at), recipients: r.recipients.map((x) => ({ ...x })) };
        }),
    nodeHead: async (node) => outbox.get(node)?.at(-1)?.seq ?? 0,
    findUndelivered: async (before, limit): Promise<UndeliveredNotification[]> => {
      const out: UndeliveredNotification[] = [];
      for (const [userId, user] of users) {
        const done = Math.max(user.acked, user.reported);
        for (let cursor = Math.max(done + 1, firstCursor(user)); cursor <= user.head; cursor++) {
          const n = notifications.get(user.feed.get(cursor) ?? -1);
          if (!n || n.at > before) break;
          if (out.length >= limit) return out;
          out.push({ userId, cursor, sourceId: n.sourceId, type: n.type, at: n.at });
        }
      }
      return out;
    },
    markReported: async (reported) => {
      for (const { userId, cursor } of reported) {
        const user = users.get(userId);
        if (user) user.reported = Math.max(user.reported, cursor);
      }
    },
    prune: async (before, outboxBefore) => {
      let deleted = 0;
      for (const [id, n] of notifications) {
        if (n.at >= before) continue;
        notifications.delete(id);
        bySource.delete(n.sourceId);
        deleted++;
      }
      for (const user of users.values()) {
        for (const [cursor, id] of user.feed) if (!notifications.has(id)) user.feed.delete(cursor);
      }
      for (const [node, rows] of outbox) outbox.set(node, rows.filter((r) => r.at >= outboxBefore && notifications.has(r.notificationId)));
      return deleted;
    },
    setOnline: async (node, userIds, until) => {
      for (const userId of userIds) {
        let nodes = presence.get(userId);
        if (!nodes) presence.set(userId, (nodes = new Map()));
        nodes.set(node, until);
      }
    },
    setOffline: async (node, userIds) => {
      for (const userId of userIds) presence.get(userId)?.delete(node);
    },
    online: async (userIds, at) => [...new Set(userIds)].filter((userId) => [...(presence.get(userId)?.values() ?? [])].some((until) => until > at)),
    watch: (onChange) => {
      listeners.add(onChange);
      return () => listeners.delete(onChange);
    },
    close: async () => {
      await queue.drain();
      listeners.clear();
    },
  };
}

function firstCursor(user: User): number {
  for (const cursor of user.feed.keys()) return cursor;
  return user.head + 1;
}
