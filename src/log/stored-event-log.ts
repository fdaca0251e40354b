/**
 * The one implementation of {@link EventLog}, over any {@link LogStorage}.
 * Adapters construct it through their `open…EventLog` factories.
 */
import { InvalidInput, LogClosed } from '../errors.js';
import { GroupCommitter } from './group-commit.js';
import { RecentEvents } from './recent-events.js';
import type { AllPageQuery, AppendRequest, CommitResult, LogStorage, PreparedEvent, StoredEvent, StreamOutcome } from './storage.js';
import { createUpcasters, type Upcasters } from './upcasting.js';
import { assertNonNegativeInteger, categoryOf, prepareAppends, resolveLimits, validateStreamName } from './validation.js';
import type {
  AppendOptions,
  AppendResult,
  EventFilter,
  EventLog,
  FollowOptions,
  LogLimits,
  MultiAppendResult,
  NewEvent,
  ReadAllOptions,
  ReadStreamOptions,
  RecordedEvent,
  Snapshot,
  StreamAppend,
  WaitOptions,
} from './types.js';

/** Options every adapter accepts, besides its own connection options. */
export interface EventLogOptions {
  /** Overrides of {@link DEFAULT_LOG_LIMITS}. */
  limits?: Partial<LogLimits>;
  /** Applied on every read; see {@link createUpcasters}. */
  upcasters?: Upcasters;
  /** Most events one group commit may hold. Default 2,000. */
  maxBatchEvents?: number;
  /** Rows fetched per page when streaming reads. Default 1,000. */
  readPageSize?: number;
  /**
   * The newest events this process committed or its followers read from the store, kept in memory so that
   * followers in the same process (consumer groups, `follow`) read them without a round trip to the store.
   * Default 4,096; 0 turns it off. See recent-events.ts.
   */
  recentEvents?: number;
}

/** What an adapter passes to {@link StoredEventLog}: the user's options and the adapter's own settings. */
export interface StoredEventLogOptions extends EventLogOptions {
  /** See PostgresEventLogOptions.groupCommitDelayMs. Default 0 (off). */
  groupCommitDelayMs?: number;
}

const DEFAULT_MAX_BATCH_EVENTS = 2000;
const DEFAULT_RECENT_EVENTS = 4096;

const storages = new WeakMap<EventLog, LogStorage>();

/** The storage behind a log opened by one of Sinho's adapters (for the subscription module). */
export function storageOf(log: EventLog): LogStorage {
  const storage = storages.get(log);
  if (!storage) throw new InvalidInput('INVALID_ARGUMENT', 'This EventLog was not opened by a Sinho adapter.');
  return storage;
}
const DEFAULT_READ_PAGE_SIZE = 1000;

/**
 * Validates the options every adapter shares and fills in their defaults. Adapters call it before they open
 * anything (a file, a pool, a schema), so that a bad option throws having changed nothing.
 */
export function checkLogOptions(options: StoredEventLogOptions): {
  limits: Readonly<LogLimits>;
  maxBatch: number;
  delayMs: number;
  pageSize: number;
  recentEvents: number;
} {
  const limits = resolveLimits(options.limits);
  const maxBatch = options.maxBatchEvents ?? DEFAULT_MAX_BATCH_EVENTS;
  if (!Number.isSafeInteger(maxBatch) || maxBatch < 1) throw new InvalidInput('INVALID_ARGUMENT', 'maxBatchEvents must be a positive integer.', { option: 'maxBatchEvents' });
  const delayMs = options.groupCommitDelayMs ?? 0;
  if (typeof delayMs !== 'number' || !Number.isFinite(delayMs) || delayMs < 0 || delayMs > 1000) {
    throw new InvalidInput('INVALID_ARGUMENT', 'groupCommitDelayMs must be a number of milliseconds from 0 to 1000.', { option: 'groupCommitDelayMs' });
  }
  const pageSize = options.readPageSize ?? DEFAULT_READ_PAGE_SIZE;
  if (!Number.isSafeInteger(pageSize) || pageSize < 1) throw new InvalidInput('INVALID_ARGUMENT', 'readPageSize must be a positive integer.', { option: 'readPageSize' });
  const recentEvents = options.recentEvents ?? DEFAULT_RECENT_EVENTS;
  if (!Number.isSafeInteger(recentEvents) || recentEvents < 0) throw new InvalidInput('INVALID_ARGUMENT', 'recentEvents must be an integer >= 0.', { option: 'recentEvents' });
  return { limits, maxBatch, delayMs, pageSize, recentEvents };
}

function validateFilter(filter: EventFilter | undefined): EventFilter | undefined {
  if (filter === undefined) return undefined;
  if (typeof filter !== 'object' || filter === null) throw new InvalidInput('INVALID_ARGUMENT', 'filter must be an object { categories?, types? }.');
  for (const key of ['categories', 'types'] as const) {
    const list = filter[key];
    if (list !== undefined && (!Array.isArray(list) || list.some((v) => typeof v !== 'string'))) {
      throw new InvalidInput('INVALID_ARGUMENT', `filter.${key} must be an array of strings.`, { option: `filter.${key}` });
    }
  }
  return filter;
}

function validateLimit(limit: unknown): number {
  if (limit === undefined) return Number.POSITIVE_INFINITY;
  return assertNonNegativeInteger(limit, 'limit');
}

/** The log each append result of this process came from (see recordedEventsOf). */
const appendedBy = new WeakMap<AppendResult, StoredEventLog>();

/**
 * The rows a stream's append stored, as a read would return them (JSON still as text), from the prepared events
 * and the revisions and positions the commit gave them; undefined when the two do not line up.
 */
function storedRowsOf(events: readonly PreparedEvent[] | undefined, outcome: StreamOutcome): StoredEvent[] | undefined {
  if (!events || events.length !== outcome.events.length) return undefined;
  return events.map((e, k) => {
    const at = outcome.events[k]!;
    return { id: e.id, stream: e.stream, type: e.type, schemaVersion: e.schemaVersion, data: e.data, metadata: e.metadata, revision: at.revision, position: at.position };
  });
}

/**
 * The events an append of this process just wrote, as a reader would get them
 * (upcast, metadata with its defaults), without reading them back: from the
 * log's recent events (see RecentEvents), which hold every commit of this
 * process until 4,096 newer events push it out. Undefined when the append
 * stored nothing new (an idempotent repeat), came from elsewhere, or is no
 * longer held: then read the events by id.
 *
 * The result itself keeps no payload: callers that keep many results (a
 * producer awaiting thousands of appends) would otherwise hold every event's
 * data on the heap, and the garbage collector's pauses grow with it.
 */
export function recordedEventsOf(result: AppendResult): RecordedEvent[] | undefined {
  return appendedBy.get(result)?.recordedEventsOf(result);
}

export class StoredEventLog implements EventLog {
  readonly adapter: LogStorage['adapter'];
  readonly limits: Readonly<LogLimits>;
  private readonly upcasters: Upcasters;
  private readonly committer: GroupCommitter;
  private readonly pageSize: number;
  private readonly recent: RecentEvents;
  private readonly windowReads = new Map<string, Promise<StoredEvent[]>>();
  private readonly listeners = new Set<(head: number) => void>();
  private readonly stopWatching: () => void;
  private knownHead = 0;
  private closed = false;
  private closing: Promise<void> | undefined;

  constructor(
    private readonly storage: LogStorage,
    options: StoredEventLogOptions = {},
  ) {
    this.adapter = storage.adapter;
    storages.set(this, storage);
    const { limits, maxBatch, delayMs, pageSize, recentEvents } = checkLogOptions(options);
    this.limits = limits;
    this.upcasters = options.upcasters ?? createUpcasters();
    this.pageSize = pageSize;
    this.recent = new RecentEvents(recentEvents);
    this.committer = new GroupCommitter(storage, maxBatch, storage.maxCommitsInFlight, (result, requests) => {
      this.rememberCommitted(result, requests);
      this.headAdvanced(result.head);
    }, delayMs);
    this.stopWatching = storage.watchExternalCommits((head) => this.headAdvanced(head));
  }

  /** Keeps the rows of a commit of this process for followers (see RecentEvents). */
  private rememberCommitted(result: CommitResult, requests: readonly AppendRequest[]): void {
    if (!this.recent.enabled) return;
    const rows: StoredEvent[] = [];
    for (const [i, outcome] of result.outcomes.entries()) {
      if (!outcome.ok) continue;
      for (const [j, stream] of outcome.streams.entries()) {
        if (stream.alreadyStored) continue;
        const streamRows = storedRowsOf(requests[i]?.appends[j]?.events, stream);
        if (!streamRows) {
          this.recent.clear(); // rows of this commit that cannot be accounted for: read them from the store
          return;
        }
        for (const row of streamRows) rows.push(row);
      }
    }
    this.recent.addCommitted(rows);
  }

  private headAdvanced(head: number): void {
    if (head <= this.knownHead) return;
    this.knownHead = head;
    for (const listener of [...this.listeners]) listener(head);
  }

  private assertOpen(): void {
    if (this.closed) throw new LogClosed();
  }

  async append(stream: string, events: readonly NewEvent[], options: AppendOptions = {}): Promise<AppendResult> {
    const result = await this.appendMulti([{ stream, events: events as NewEvent[], expectedRevision: options.expectedRevision }], options);
    return result.streams[0]!;
  }

  async appendMulti(appends: readonly StreamAppend[], options: Pick<AppendOptions, 'durability'> = {}): Promise<MultiAppendResult> {
    if (this.closing) throw new LogClosed();
    const durability = options.durability ?? 'durable';
    if (durability !== 'durable' && durability !== 'relaxed') {
      throw new InvalidInput('INVALID_ARGUMENT', `durability must be 'durable' or 'relaxed', got ${JSON.stringify(durability)}.`);
    }
    const prepared = prepareAppends(appends, this.limits, (type) => this.upcasters.latestVersion(type));
    const { outcome, durability: granted } = await this.committer.enqueue({ appends: prepared }, durability);
    if (!outcome.ok) throw outcome.error;
    return {
      streams: outcome.streams.map((s) => {
        const result: AppendResult = { ...s, durability: granted };
        if (!s.alreadyStored && this.recent.enabled) appendedBy.set(result, this);
        return result;
      }),
      durability: granted,
    };
  }

  /** See the exported recordedEventsOf. */
  recordedEventsOf(result: AppendResult): RecordedEvent[] | undefined {
    const rows: StoredEvent[] = [];
    for (const e of result.events) {
      const row = this.recent.rowAt(e.position);
      if (row?.id !== e.id) return undefined;
      rows.push(row);
    }
    return rows.map((row) => this.toRecorded(row));
  }

  private toRecorded(row: StoredEvent): RecordedEvent {
    const { data, schemaVersion } = this.upcasters.upcast(row.type, row.schemaVersion, JSON.parse(row.data));
    return {
      id: row.id,
      stream: row.stream,
      category: categoryOf(row.stream),
      type: row.type,
      schemaVersion,
      data,
      metadata: JSON.parse(row.metadata),
      revision: row.revision,
      position: row.position,
    };
  }

  readStream(stream: string, options: ReadStreamOptions = {}): AsyncIterable<RecordedEvent> {
    validateStreamName(stream, this.limits);
    const direction = options.direction ?? 'forwards';
    if (direction !== 'forwards' && direction !== 'backwards') throw new InvalidInput('INVALID_ARGUMENT', "direction must be 'forwards' or 'backwards'.");
    const limit = validateLimit(options.limit);
    const fromOption = options.from ?? (direction === 'forwards' ? 'start' : 'end');
    let from: number;
    if (fromOption === 'start') from = 0;
    else if (fromOption === 'end') from = Number.MAX_SAFE_INTEGER;
    else from = assertNonNegativeInteger(fromOption, 'from');
    const self = this;
    return {
      async *[Symbol.asyncIterator]() {
        let remaining = limit;
        let next = from;
        while (remaining > 0) {
          self.assertOpen();
          const page = await self.storage.readStreamPage({ stream, fromRevision: next, direction, limit: Math.min(self.pageSize, remaining) });
          for (const row of page) yield self.toRecorded(row);
          remaining -= page.length;
          if (page.length < self.pageSize) return;
          const last = page[page.length - 1]!.revision;
          next = direction === 'forwards' ? last + 1 : last - 1;
          if (next < 0) return;
        }
      },
    };
  }

  readAll(options: ReadAllOptions = {}): AsyncIterable<RecordedEvent> {
    const fromPosition = options.fromPosition === undefined ? 1 : assertNonNegativeInteger(options.fromPosition, 'fromPosition');
    const limit = validateLimit(options.limit);
    const filter = validateFilter(options.filter);
    const self = this;
    return {
      async *[Symbol.asyncIterator]() {
        let remaining = limit;
        let next = fromPosition;
        while (remaining > 0) {
          self.assertOpen();
          const query = { fromPosition: next, limit: Math.min(self.pageSize, remaining), filter };
          const page = self.recent.page(query) ?? (await self.storage.readAllPage(query));
          for (const row of page) yield self.toRecorded(row);
          remaining -= page.length;
          if (page.length < self.pageSize) return;
          next = page[page.length - 1]!.position + 1;
        }
      },
    };
  }

  follow(options: FollowOptions = {}): AsyncIterable<RecordedEvent> {
    const fromPosition = options.fromPosition === undefined ? 1 : assertNonNegativeInteger(options.fromPosition, 'fromPosition');
    const filter = validateFilter(options.filter);
    const signal = options.signal;
    const self = this;
    return {
      async *[Symbol.asyncIterator]() {
        // Read in windows (scanned, head]: positions become visible as a
        // contiguous prefix (every adapter commits in position order), so once a
        // window up to `head` is read, nothing at or below `head` can appear later.
        let scanned = fromPosition - 1;
        // The store's head is read once; after that the head is what the wait reports: a commit of this process
        // (its rows are in RecentEvents already) or another's, announced by the adapter's wake-up or found by the
        // wait's periodic re-check. Reading the store's head on every wake-up cost a round trip per commit on
        // PostgreSQL, and it could see a batch of this process that had committed but not yet been handed back,
        // whose window then had to be read from the store.
        let head = await self.storage.headPosition();
        while (!signal?.aborted && !self.closed) {
          while (scanned < head && !signal?.aborted) {
            const query = { fromPosition: scanned + 1, toPosition: head, limit: self.pageSize, filter };
            const page = self.recent.page(query) ?? (await self.readWindow(query));
            for (const row of page) {
              if (signal?.aborted) return;
              yield self.toRecorded(row);
            }
            scanned = page.length < self.pageSize ? head : page[page.length - 1]!.position;
            // A full page means more to catch up on. SQLite reads synchronously and the recent events are in memory,
            // so without this a follower draining a backlog (and its handlers, when they do no I/O) ran as one chain
            // of promise callbacks: 1,000,000 events held every timer and socket of the process for about 10 s
            // (a consumer group's lease renewals among them).
            if (page.length === self.pageSize) await new Promise((resolve) => setImmediate(resolve));
          }
          if (signal?.aborted || self.closed) return;
          head = await self.waitForHead(scanned, { signal }, false);
        }
      },
    };
  }

  /**
   * A window page of `follow` from the store. Followers of this process that wake on the same commit ask for the
   * same window at the same moment: they share one read, and the page is kept for later followers (RecentEvents).
   */
  private readWindow(query: AllPageQuery): Promise<StoredEvent[]> {
    if (query.filter) return this.storage.readAllPage(query);
    const key = `${query.fromPosition}:${query.toPosition}:${query.limit}`;
    let pending = this.windowReads.get(key);
    if (!pending) {
      const generation = this.recent.generation;
      pending = this.storage.readAllPage(query).then(
        (page) => {
          this.windowReads.delete(key);
          this.recent.addRead(query, page, generation);
          return page;
        },
        (error: unknown) => {
          this.windowReads.delete(key);
          throw error;
        },
      );
      this.windowReads.set(key, pending);
    }
    return pending;
  }

  async readEvents(ids: readonly string[]): Promise<RecordedEvent[]> {
    this.assertOpen();
    if (!Array.isArray(ids) || ids.some((id) => typeof id !== 'string')) throw new InvalidInput('INVALID_ARGUMENT', 'ids must be an array of strings.');
    if (ids.length === 0) return [];
    const rows = await this.storage.readEventsById(ids.map((id) => id.toLowerCase()));
    return rows.map((row) => this.toRecorded(row));
  }

  async streamRevision(stream: string): Promise<number> {
    this.assertOpen();
    return this.storage.streamRevision(validateStreamName(stream, this.limits));
  }

  async headPosition(): Promise<number> {
    this.assertOpen();
    const head = await this.storage.headPosition();
    this.headAdvanced(head);
    return head;
  }

  async positionAt(time: Date): Promise<number> {
    this.assertOpen();
    if (!(time instanceof Date) || Number.isNaN(time.getTime())) throw new InvalidInput('INVALID_ARGUMENT', 'positionAt needs a valid Date.');
    return this.storage.positionAt(time);
  }

  waitForCommit(afterPosition: number, options: WaitOptions = {}): Promise<number> {
    this.assertOpen();
    assertNonNegativeInteger(afterPosition, 'afterPosition');
    return this.waitForHead(afterPosition, options, true);
  }

  /**
   * Resolves with a head above `afterPosition` (every position up to it is committed and readable), or with the
   * known head when aborted, timed out or closed. `readNow`: also read the store's head at once, for a caller whose
   * position may come from a commit this log has not been told about yet (another process's, whose wake-up is
   * still on its way). A follower does without: a commit it has not heard of reaches it like one made while it
   * waits, through the adapter's wake-up or the periodic re-check.
   */
  private waitForHead(afterPosition: number, options: WaitOptions, readNow: boolean): Promise<number> {
    if (this.knownHead > afterPosition) return Promise.resolve(this.knownHead);
    return new Promise<number>((resolve, reject) => {
      const timers: NodeJS.Timeout[] = [];
      const finish = (head: number): void => {
        unsubscribe();
        for (const t of timers) clearTimeout(t), clearInterval(t);
        options.signal?.removeEventListener('abort', onAbort);
        resolve(head);
      };
      const onAbort = (): void => finish(this.knownHead);
      const unsubscribe = this.onCommit((head) => {
        if (head > afterPosition) finish(head);
      });
      if (options.signal?.aborted) return finish(this.knownHead);
      options.signal?.addEventListener('abort', onAbort, { once: true });
      if (options.timeoutMs !== undefined) timers.push(setTimeout(() => finish(this.knownHead), options.timeoutMs));
      // Safety net for a missed wake-up (a dropped LISTEN connection, a writer
      // in another process): a slow re-check of the head, never a tight poll.
      if (this.storage.recheckIntervalMs > 0) {
        timers.push(
          setInterval(() => {
            if (this.closed) return finish(this.knownHead);
            this.storage.headPosition().then((head) => this.headAdvanced(head), reject);
          }, this.storage.recheckIntervalMs),
        );
      }
      if (readNow) this.storage.headPosition().then((head) => this.headAdvanced(head), reject);
    });
  }

  onCommit(listener: (head: number) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  async readSnapshot(stream: string, key: string): Promise<Snapshot | undefined> {
    this.assertOpen();
    return this.storage.readSnapshot(validateStreamName(stream, this.limits), key);
  }

  async writeSnapshot(stream: string, snapshot: Snapshot): Promise<void> {
    this.assertOpen();
    validateStreamName(stream, this.limits);
    if (typeof snapshot?.key !== 'string' || snapshot.key.length === 0) throw new InvalidInput('INVALID_ARGUMENT', 'snapshot.key must be a non-empty string.');
    assertNonNegativeInteger(snapshot.revision, 'snapshot.revision');
    return this.storage.writeSnapshot(stream, snapshot);
  }

  async truncateStream(stream: string, beforeRevision: number): Promise<void> {
    this.assertOpen();
    validateStreamName(stream, this.limits);
    assertNonNegativeInteger(beforeRevision, 'beforeRevision');
    await this.committer.whenIdle();
    await this.storage.truncateStream(stream, beforeRevision);
    this.recent.clear(); // it may hold events that are gone now
  }

  close(): Promise<void> {
    if (!this.closing) {
      this.closing = (async () => {
        await this.committer.whenIdle();
        this.closed = true;
        this.stopWatching();
        // Wake waiting followers so they can observe `closed` and end.
        for (const listener of [...this.listeners]) listener(this.knownHead + 1);
        this.listeners.clear();
        await this.storage.close();
      })();
    }
    return this.closing;
  }
}
