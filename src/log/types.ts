/**
 * The event log's public vocabulary. Nothing here mentions connections,
 * transactions or drivers: those belong to the adapters (memory, sqlite,
 * postgres), which all present the same {@link EventLog}.
 */

/** A JSON value as stored in an event's `data`. */
export type JsonValue = null | boolean | number | string | JsonValue[] | { [key: string]: JsonValue };

/** Who and what caused an event. Every field is optional on append. */
export interface EventMetadata {
  /** Groups every event caused by one user action, across services. */
  correlationId?: string;
  /** The id of the event or command that directly caused this one. */
  causationId?: string;
  /** Who did it (a user id, a service name). */
  actor?: string;
  /** When it happened, ISO 8601. Defaults to the append time. */
  occurredAt?: string;
  /** Free string headers (routing, tracing, anything else). */
  headers?: Record<string, string>;
}

/** An event as a caller hands it to {@link EventLog.append}. */
export interface NewEvent<Type extends string = string, Data = unknown> {
  /** A UUID. Generated (UUIDv7) when absent; give one to make retries idempotent. */
  id?: string;
  type: Type;
  /** Any JSON value. */
  data: Data;
  /** Version of `data`'s shape. Defaults to the newest version the log's upcasters know for `type`, else 1. */
  schemaVersion?: number;
  metadata?: EventMetadata;
}

/** An event as the log stores and returns it. */
export interface RecordedEvent<Type extends string = string, Data = unknown> {
  id: string;
  stream: string;
  /** The part of `stream` before the first `-` (the whole name when there is none). */
  category: string;
  type: Type;
  schemaVersion: number;
  data: Data;
  metadata: EventMetadata & { occurredAt: string };
  /** Position in its stream, from 0. */
  revision: number;
  /** Position in the whole log, from 1, increasing in commit order. */
  position: number;
}

/**
 * What an append expects of its stream:
 * - `any`: no check;
 * - `noStream`: the stream must not exist yet;
 * - `streamExists`: the stream must have at least one event;
 * - a number: the stream's last revision must be exactly this.
 */
export type ExpectedRevision = 'any' | 'noStream' | 'streamExists' | number;

/**
 * What an acknowledged append survives:
 * - `durable`: the commit is on disk (fsync) before append resolves;
 * - `relaxed`: committed and visible, but the last moments may be lost in a power cut or OS crash;
 * - `none`: the memory adapter keeps nothing across a restart.
 */
export type Durability = 'durable' | 'relaxed' | 'none';

export interface AppendOptions {
  /** Default `any`. */
  expectedRevision?: ExpectedRevision;
  /** Default `durable`. `relaxed` skips the fsync wait; the result says what was granted. */
  durability?: 'durable' | 'relaxed';
}

/** Where one appended event landed. */
export interface AppendedEvent {
  id: string;
  revision: number;
  position: number;
}

export interface AppendResult {
  stream: string;
  /** The stream's revision after this append (its last event's revision; -1 if the stream is still empty). */
  revision: number;
  /** The appended events, in order. */
  events: AppendedEvent[];
  /** True when every event was already stored (an idempotent retry): nothing was written. */
  alreadyStored: boolean;
  durability: Durability;
}

export interface StreamAppend {
  stream: string;
  events: NewEvent[];
  /** Default `any`. */
  expectedRevision?: ExpectedRevision;
}

export interface MultiAppendResult {
  streams: AppendResult[];
  durability: Durability;
}

export interface ReadStreamOptions {
  /** First revision to read (inclusive). Default: the start (`forwards`) or the end (`backwards`). */
  from?: number | 'start' | 'end';
  /** Default `forwards`. */
  direction?: 'forwards' | 'backwards';
  /** Maximum number of events. Default: all. */
  limit?: number;
}

export interface EventFilter {
  /** Only events whose stream category is one of these. */
  categories?: readonly string[];
  /** Only events whose type is one of these. */
  types?: readonly string[];
}

export interface ReadAllOptions {
  /** First position to read (inclusive). Default 1, the start of the log. */
  fromPosition?: number;
  /** Maximum number of events. Default: all. */
  limit?: number;
  filter?: EventFilter;
}

export interface FollowOptions {
  /** First position to deliver (inclusive). Default 1. */
  fromPosition?: number;
  filter?: EventFilter;
  /** Stops the iteration (it then ends without error). */
  signal?: AbortSignal;
}

export interface WaitOptions {
  signal?: AbortSignal;
  /** Give up after this long and resolve with the head as known then. Default: wait forever. */
  timeoutMs?: number;
}

/** A stored aggregate state at a revision (see the aggregate module). */
export interface Snapshot {
  /** Identifies the state shape, e.g. `member@2`; a snapshot with another key is never loaded. */
  key: string;
  /** The stream revision the state includes. */
  revision: number;
  state: JsonValue;
}

/** Explicit limits of a log; every violation is a typed error and writes nothing. */
export interface LogLimits {
  /** Maximum size of one event's `data` plus `metadata` as JSON, in bytes. Default 1 MiB. */
  maxEventBytes: number;
  /** Maximum events in one append (over all its streams). Default 1,000. */
  maxEventsPerAppend: number;
  /** Maximum streams in one multi-stream append. Default 100. */
  maxStreamsPerAppend: number;
  /** Maximum stream name length. Default 200. */
  maxStreamNameLength: number;
  /** Maximum event type length. Default 128. */
  maxEventTypeLength: number;
}

export type AdapterName = 'memory' | 'sqlite' | 'postgres';

/**
 * A durable, ordered event log that both stores and delivers.
 *
 * Invariants (each has a test in the conformance suite):
 * - an append resolves only after its commit is durable, unless `relaxed` was asked for;
 * - positions are gap-free and commit-ordered: a reader following the log never skips an event;
 * - appending an event id that is already stored with the same content changes nothing;
 * - bad input throws a typed {@link SinhoError} and writes nothing.
 */
export interface EventLog {
  readonly adapter: AdapterName;
  readonly limits: Readonly<LogLimits>;

  /** Appends events to one stream atomically. */
  append(stream: string, events: readonly NewEvent[], options?: AppendOptions): Promise<AppendResult>;
  /** Appends to several streams in one transaction: all or nothing, each stream with its own expectation. */
  appendMulti(appends: readonly StreamAppend[], options?: Pick<AppendOptions, 'durability'>): Promise<MultiAppendResult>;

  /** Reads one stream, streaming page by page. Events come upcast to their newest schema version. */
  readStream(stream: string, options?: ReadStreamOptions): AsyncIterable<RecordedEvent>;
  /** Reads the whole log in position order, streaming page by page. */
  readAll(options?: ReadAllOptions): AsyncIterable<RecordedEvent>;
  /** Catches up from a position, then waits for new commits and delivers them, until `signal` aborts. */
  follow(options?: FollowOptions): AsyncIterable<RecordedEvent>;
  /** Reads stored events by id (missing ids are left out). */
  readEvents(ids: readonly string[]): Promise<RecordedEvent[]>;

  /** The stream's last revision, or -1 when it has no events. */
  streamRevision(stream: string): Promise<number>;
  /** The position of the last committed event (0 for an empty log). */
  headPosition(): Promise<number>;
  /** The first position committed at or after `time` (the head + 1 when none is): where to replay "since yesterday" from. */
  positionAt(time: Date): Promise<number>;
  /** Resolves with the head once it is beyond `afterPosition` (woken by commits, not by polling). */
  waitForCommit(afterPosition: number, options?: WaitOptions): Promise<number>;
  /** Calls `listener` with the new head after each commit this process sees. Returns an unsubscribe function. */
  onCommit(listener: (head: number) => void): () => void;

  readSnapshot(stream: string, key: string): Promise<Snapshot | undefined>;
  writeSnapshot(stream: string, snapshot: Snapshot): Promise<void>;
  /**
   * Deletes a stream's events before `beforeRevision`; revisions of the rest are kept.
   * Use only when a snapshot covers them (see `truncateToSnapshot` in the aggregate module).
   */
  truncateStream(stream: string, beforeRevision: number): Promise<void>;

  /** Finishes queued appends, then releases every resource. Idempotent. */
  close(): Promise<void>;
}
