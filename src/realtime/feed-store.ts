/**
 * The seam between the realtime core (fan-out, gateway) and the stores that
 * keep users' notification feeds. Adapters: `memory` (tests, one process) and
 * `sqlite` (the embedded default, shared by several processes on one machine).
 *
 * Storage scheme (docs/realtime.md explains the choice):
 * - a notification is stored ONCE (its payload), keyed by the id of what
 *   caused it (`sourceId`), so a redelivered fan-out stores nothing twice;
 * - each recipient gets one narrow feed row `(user, cursor) -> notification`,
 *   with a dense per-user cursor (1, 2, 3, ...), so a client — and the
 *   gateway — can tell a hole from a pause;
 * - each gateway node gets one outbox row per notification with the cursors of
 *   the node's own recipients (published once per owning node, not to all);
 * - a whole batch of notifications, with every row above, is one transaction:
 *   a join in a community of 50 costs one commit, shared with other joins.
 */

/** A notification to publish to `recipients`. */
export interface NewNotification {
  /** What caused it (e.g. the source event's id): publishing the same sourceId again is a no-op. */
  sourceId: string;
  type: string;
  data: unknown;
  /** User ids; duplicates are ignored. */
  recipients: readonly string[];
}

/** One entry of a user's feed. */
export interface FeedEntry {
  userId: string;
  /** Dense, per user, from 1. */
  cursor: number;
  type: string;
  data: unknown;
  /** Epoch ms the notification was stored. */
  at: number;
}

/** One notification for the recipients a gateway node owns (the node's outbox). */
export interface NodeDelivery {
  /** Outbox sequence number of the node, increasing in commit order. */
  seq: number;
  /** The notification as JSON text, `{"type":…,"data":…,"at":…}`: gateways write it as is, without parsing it. */
  json: string;
  recipients: { userId: string; cursor: number }[];
}

/** The JSON text of a notification as gateways send it (`data` is already JSON text). */
export function notificationJson(type: string, dataJson: string, at: number): string {
  return `{"type":${JSON.stringify(type)},"data":${dataJson},"at":${at}}`;
}

export interface FeedBounds {
  /** Cursor of the newest notification (0 when there is none). */
  head: number;
  /** Cursor of the oldest notification still kept (head + 1 when none is kept). */
  oldest: number;
  /** Highest cursor the user acknowledged (0 when none). */
  acked: number;
}

/** A notification not acknowledged in time (the hook for push or e-mail fallback). */
export interface UndeliveredNotification {
  userId: string;
  cursor: number;
  sourceId: string;
  type: string;
  at: number;
}

export interface PublishOptions {
  /** Which gateway node owns a user (an outbox row per owning node); omitted: no outbox rows. */
  nodeOf?: (userId: string) => number;
}

export interface FeedStore {
  /**
   * Stores the notifications and their feed rows in one transaction and
   * resolves once that is durable; returns, per notification, the cursors
   * given (empty for a sourceId already published). Concurrent calls share
   * one transaction.
   */
  publish(notifications: readonly NewNotification[], options?: PublishOptions): Promise<{ sourceId: string; recipients: { userId: string; cursor: number }[] }[]>;
  /** Entries of `userId` after `afterCursor`, oldest first, at most `limit`. */
  read(userId: string, afterCursor: number, limit: number): Promise<FeedEntry[]>;
  bounds(userId: string): Promise<FeedBounds>;
  /** Records, per user, that everything up to `cursor` was received (never moves back; capped at the head); one transaction. */
  ack(acks: readonly { userId: string; cursor: number }[]): Promise<void>;
  /** Outbox entries of gateway node `node` after `afterSeq`, oldest first. */
  readNode(node: number, afterSeq: number, limit: number): Promise<NodeDelivery[]>;
  /** The node's newest outbox sequence number (0 when none). */
  nodeHead(node: number): Promise<number>;
  /**
   * Notifications stored at or before `before` (epoch ms) that their user has
   * neither acknowledged nor had reported yet, at most `limit`, oldest cursor
   * first per user. Reading marks nothing: call `markReported` once they are
   * reported, so a crash in between reports them again rather than never.
   */
  findUndelivered(before: number, limit: number): Promise<UndeliveredNotification[]>;
  /** Marks notifications reported as undelivered (each user's highest cursor counts). */
  markReported(reported: readonly { userId: string; cursor: number }[]): Promise<void>;
  /** Deletes notifications stored before `before` (retention) and outbox rows before `outboxBefore`; returns notifications deleted. */
  prune(before: number, outboxBefore: number): Promise<number>;
  /** Marks users online on `node` until `until` (epoch ms); calling again extends it. */
  setOnline(node: string, userIds: readonly string[], until: number): Promise<void>;
  setOffline(node: string, userIds: readonly string[]): Promise<void>;
  /** Which of `userIds` are online (on any node) at `now`. */
  online(userIds: readonly string[], now: number): Promise<string[]>;
  /** Calls `onChange` after commits (this process's at once, other processes' soon); returns an unsubscribe. */
  watch(onChange: () => void): () => void;
  close(): Promise<void>;
}
