/**
 * The seam between consumer groups (core) and the stores that keep their
 * state. Each log adapter provides one, in its `subscription.ts`, writing to
 * the same database as the log, so that a group's checkpoint, its retry and
 * dead-letter state, and a transactional handler's own writes commit together.
 */

/** A consumer group as stored. */
export interface GroupRow {
  name: string;
  /** Every matching event at or below this position is handled, or recorded as deferred. */
  position: number;
  /** How many leased partitions the group is split into; 0 when it runs as one (a single lease). */
  partitions: number;
  createdAt: string;
}

/**
 * An event taken out of the group's main flow, durably:
 * - `retry`: failed; due again at `dueAt`; later events of its ordering key wait behind it;
 * - `waiting`: queued behind a `retry` or parked event of the same key;
 * - `dead`: failed `maxAttempts` times (a dead letter);
 * - `scheduled`: a delayed delivery, due at `dueAt`, outside the per-key order.
 */
export type DeferredState = 'retry' | 'waiting' | 'dead' | 'scheduled';

export interface DeferredError {
  at: string;
  message: string;
}

export interface DeferredRow {
  position: number;
  /** `ordered` rows keep per-key order; `scheduled` rows are independent delayed deliveries. */
  kind: 'ordered' | 'scheduled';
  eventId: string;
  key: string;
  state: DeferredState;
  /** Deliveries tried so far. */
  attempts: number;
  /** Epoch milliseconds; null when not timed (`waiting`, `dead`). */
  dueAt: number | null;
  errors: DeferredError[];
  updatedAt: string;
}

/** One SQL statement a transactional handler asked for, in the store's own dialect. */
export interface ProjectionStatement {
  sql: string;
  params: unknown[];
}

/** Everything one checkpoint commit writes, atomically. */
export interface GroupCommit {
  position?: number;
  upserts: DeferredRow[];
  deletes: { position: number; kind: DeferredRow['kind'] }[];
  /** Event ids handled by a transactional handler (so a redelivery is recognised). */
  processed: { eventId: string; position: number }[];
  statements: ProjectionStatement[];
}

export interface SubscriptionStorage {
  /**
   * Takes the group's lease for `owner` until now + `leaseMs`, if it is free,
   * expired, or already `owner`'s. Returns whether `owner` holds it now.
   * Renewing is acquiring again.
   */
  acquireLease(group: string, owner: string, leaseMs: number): Promise<boolean>;
  /** Gives the lease up (only if `owner` holds it). */
  releaseLease(group: string, owner: string): Promise<void>;
  /** Creates the group at `initialPosition` (with `partitions`, default 0) unless it exists; returns it as stored. */
  ensureGroup(name: string, initialPosition: number, partitions?: number): Promise<GroupRow>;
  /**
   * Records `member` as a live member of partitioned group `group` until now +
   * `ttlMs` (by the store's clock), forgets members whose time ran out, and
   * returns the live members, sorted.
   */
  heartbeat(group: string, member: string, ttlMs: number): Promise<string[]>;
  /** Removes `member` from the group's members (a graceful leave). */
  leave(group: string, member: string): Promise<void>;
  getGroup(name: string): Promise<GroupRow | undefined>;
  listGroups(): Promise<GroupRow[]>;
  /** Deletes the group with its deferred rows, processed ids and members. */
  deleteGroup(name: string): Promise<void>;
  loadDeferred(group: string): Promise<DeferredRow[]>;
  /**
   * Writes the whole commit in one transaction, or nothing: upserts in order
   * (a later upsert of the same row wins), then deletes, then processed ids,
   * then statements, then the position; processed ids at or below the new
   * position are pruned (nothing there can be redelivered). Fenced: when
   * `owner` no longer holds the group's lease, nothing is written and a
   * `GROUP_LEASE_LOST` error is thrown, so a stalled instance cannot commit
   * over the one that took over.
   */
  commitGroup(group: string, commit: GroupCommit, owner: string): Promise<void>;
  /** The highest position this group recorded as processed (0 when none). */
  highestProcessed(group: string): Promise<number>;
  /** Which of `eventIds` this group recorded as processed. */
  processedIds(group: string, eventIds: readonly string[]): Promise<Set<string>>;
  /** Moves the checkpoint (replay); drops `retry`/`waiting`/`scheduled` rows and processed ids, keeps dead letters. */
  resetGroup(group: string, position: number): Promise<void>;
  /** The version of projection `name` that serves reads, if one was switched live. */
  liveProjectionVersion(name: string): Promise<number | undefined>;
  /**
   * Makes `to` the live version of projection `name` if `from` is live now
   * (undefined: none is); returns whether it did (compare-and-set, so of
   * several nodes finishing a rebuild, one switches).
   */
  switchProjection(name: string, from: number | undefined, to: number): Promise<boolean>;
  /** Runs statements in one transaction (a projection version's setup or teardown). SQL stores only. */
  runStatements(statements: ProjectionStatement[]): Promise<void>;
  /** Whether the store can run projection statements (SQL stores can; memory cannot). */
  readonly supportsStatements: boolean;
}
