/**
 * The seam between the core event log and its adapters.
 *
 * The core ({@link ./stored-event-log.ts}) owns everything that is the same on
 * every backend: validation, limits, group commit, idempotency and
 * expected-revision planning, upcasting, wake-ups and paging. An adapter only
 * moves rows in and out of its store. Each adapter folder has the same file
 * set: `schema.ts` (numbered migrations), `append.ts` (one group commit as one
 * transaction), `read.ts` (pages of rows), `notify.ts` (commit wake-ups from
 * other processes), `subscription.ts` (consumer-group state, see
 * ../subscription/storage.ts) and `index.ts` (the `open…EventLog` factory).
 * The PostgreSQL adapter adds `pg-types.ts`, its narrow view of the driver.
 */
import type { SubscriptionStorage } from '../subscription/storage.js';
import type { AdapterName, Durability, EventFilter, ExpectedRevision, Snapshot } from './types.js';

/** An event validated and serialised by the core, ready to be stored. */
export interface PreparedEvent {
  id: string;
  /** False when the log generated the id (then it cannot already be stored). */
  idGiven: boolean;
  stream: string;
  category: string;
  type: string;
  schemaVersion: number;
  /** `data` as JSON text. */
  data: string;
  /** `metadata` as JSON text, `occurredAt` filled in. */
  metadata: string;
}

export interface PreparedAppend {
  stream: string;
  expectedRevision: ExpectedRevision;
  events: PreparedEvent[];
}

/** One caller's append: one or more streams that commit all together or not at all. */
export interface AppendRequest {
  appends: PreparedAppend[];
}

/** A row as stored: JSON columns still as text; the core parses them. */
export interface StoredEvent {
  id: string;
  stream: string;
  type: string;
  schemaVersion: number;
  data: string;
  metadata: string;
  revision: number;
  position: number;
}

/** An event the plan decided to insert, with its revision and position assigned. */
export interface PlannedRow extends PreparedEvent {
  revision: number;
  position: number;
}

export interface StreamOutcome {
  stream: string;
  revision: number;
  events: { id: string; revision: number; position: number }[];
  alreadyStored: boolean;
}

export type RequestOutcome = { ok: true; streams: StreamOutcome[] } | { ok: false; error: Error };

export interface CommitResult {
  outcomes: RequestOutcome[];
  /** The log's head after the commit. */
  head: number;
  durability: Durability;
}

export interface StreamPageQuery {
  stream: string;
  /** Inclusive bound in the direction of reading. */
  fromRevision: number;
  direction: 'forwards' | 'backwards';
  limit: number;
}

export interface AllPageQuery {
  /** Inclusive. */
  fromPosition: number;
  /** Inclusive upper bound (the head the reader decided to read up to), or undefined for "whatever is committed". */
  toPosition?: number;
  limit: number;
  filter?: EventFilter;
}

/** What an adapter provides. Methods may be synchronous inside; the core always awaits them. */
export interface LogStorage {
  readonly adapter: AdapterName;
  /** How often (ms) the core re-checks the head while a reader waits, as a safety net for missed wake-ups. 0: never. */
  readonly recheckIntervalMs: number;
  /** Batches that may be committing at once (they still serialise on the store's write lock). */
  readonly maxCommitsInFlight: number;
  /**
   * Send a batch whenever fewer than `maxCommitsInFlight` are committing, splitting what is queued evenly over the
   * free slots (see GroupCommitter.mayCut). For a store that commits on a thread of its own: the next batch waits
   * there while this thread settles the previous one's callers, so the two threads work side by side.
   */
  readonly pipelineCommits?: boolean;
  /**
   * Commits a batch of independent requests in ONE transaction with ONE
   * durable flush. Each request is planned with {@link planCommit}: a request
   * that fails its checks is reported as failed and contributes nothing,
   * while the others commit.
   */
  commit(batch: readonly AppendRequest[], durability: 'durable' | 'relaxed'): Promise<CommitResult>;
  readStreamPage(query: StreamPageQuery): Promise<StoredEvent[]>;
  readAllPage(query: AllPageQuery): Promise<StoredEvent[]>;
  readEventsById(ids: readonly string[]): Promise<StoredEvent[]>;
  streamRevision(stream: string): Promise<number>;
  headPosition(): Promise<number>;
  /** The first position recorded at or after `time` (head + 1 when there is none). */
  positionAt(time: Date): Promise<number>;
  readSnapshot(stream: string, key: string): Promise<Snapshot | undefined>;
  writeSnapshot(stream: string, snapshot: Snapshot): Promise<void>;
  truncateStream(stream: string, beforeRevision: number): Promise<void>;
  /** Where consumer groups keep their state, in the same store. */
  readonly subscriptions: SubscriptionStorage;
  /** Reports commits made by OTHER processes or connections. Returns an unsubscribe function. */
  watchExternalCommits(onCommit: (head: number) => void): () => void;
  close(): Promise<void>;
}
