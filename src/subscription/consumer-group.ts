/**
 * Consumer groups: the log as a broker.
 *
 * Delivery state machine (one instance per running group):
 *
 * 1. A reader follows the log from the group's checkpoint, woken by commits.
 *    Each event is matched against the bindings; a match is appended to the
 *    queue of its ordering key (default: its stream). Reading pauses while
 *    `maxBuffered` events are queued, so a backlog of any size drains in
 *    bounded memory.
 * 2. Up to `concurrency` keys run at once; within a key, events run one after
 *    another in log order. A handler that resolves acks; one that throws nacks.
 * 3. A nack below `maxAttempts` makes the event a durable `retry` row due after
 *    the backoff, and blocks its key: the events queued behind it, and every
 *    later event of that key, become durable `waiting` rows. Only that key
 *    waits; the others run on at full speed. When the retry succeeds the
 *    waiting rows are delivered in order, and once none is left the key
 *    flows live again.
 * 4. At `maxAttempts` the event becomes a `dead` row (a dead letter). With the
 *    `skip` policy its key continues; with `park` the key stays blocked until
 *    an operator redelivers or discards it.
 * 5. The checkpoint is the highest position below which every matching event
 *    is acked or durably deferred. It is committed (with the deferred rows,
 *    deletions, processed ids and a transactional handler's statements) in one
 *    transaction, every `checkpointIntervalMs` or `checkpointEvery` acks.
 *    After a crash the group restarts from the checkpoint and its deferred
 *    rows: an event is redelivered only if its ack was not committed.
 *
 * Retry and delay timers are derived from the stored `dueAt` values, so a
 * pending retry fires at its due time after a restart: not earlier, not never.
 */
import { randomUUID } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { InvalidInput, SinhoError } from '../errors.js';
import type { EventLog, RecordedEvent } from '../log/types.js';
import { matchBinding, validateBindings, type Binding } from './routing.js';
import { resolveRetry, type ResolvedRetry, type RetryPolicy } from './retry.js';
import { partitionOf } from './partitioning.js';
import type { DeferredRow, GroupCommit, ProjectionStatement, SubscriptionStorage } from './storage.js';

/** What a handler learns about a delivery. */
export interface DeliveryContext {
  group: string;
  /** 1 for the first delivery. */
  attempt: number;
  /** The error messages of earlier failed attempts, oldest first. */
  errors: readonly string[];
  /** True when this is a delayed delivery scheduled with `schedule`. */
  scheduled: boolean;
  /** Aborted when the group stops; a handler may pass it on to its I/O. */
  signal: AbortSignal;
  /** Schedules this event again for this group, after `delayMs` (durable; committed with this delivery's ack). */
  schedule(delayMs: number): void;
}

/** A transactional handler's view of the store's transaction. */
export interface ProjectionTransaction {
  /** Queues a statement in the store's SQL dialect; it commits with the group's checkpoint, or not at all. */
  execute(sql: string, params?: unknown[]): void;
}

export type EventHandler = (event: RecordedEvent, context: DeliveryContext) => void | Promise<void>;
export type ProjectionHandler = (event: RecordedEvent, tx: ProjectionTransaction, context: DeliveryContext) => void;

export interface SubscribeOptions {
  /** Which events the group receives. Default: every event (`[{ kind: 'fanout' }]`). */
  bindings?: Binding[];
  /** At-least-once handler. Give this or `project`. */
  handler?: EventHandler;
  /**
   * Transactional handler (SQL stores): synchronous, its statements commit
   * together with the checkpoint, and handled event ids are recorded, so its
   * effects happen exactly once.
   */
  project?: ProjectionHandler;
  /** Keys handled in parallel (the prefetch). Default 16. */
  concurrency?: number;
  /** The ordering key. Default: the event's stream. */
  orderingKey?: (event: RecordedEvent) => string;
  /** Default: exponential from 1 s, ×2, capped at 60 s, ±20% jitter, 5 attempts. */
  retry?: RetryPolicy;
  /** What a dead letter does to its key: `skip` (default) lets it continue, `park` holds it for an operator. */
  deadLetter?: 'skip' | 'park';
  /** Where a NEW group starts. Default `beginning`. An existing group resumes from its checkpoint. */
  startFrom?: 'beginning' | 'end' | { position: number };
  /** Most events read ahead of the handlers. Default 1,000. */
  maxBuffered?: number;
  /** Checkpoint at least this often while events are handled, ms. Default 100. */
  checkpointIntervalMs?: number;
  /** Checkpoint after this many acks, whatever the interval. Default 500. */
  checkpointEvery?: number;
  /**
   * How long the group's lease lasts without renewal, ms (renewed every third
   * of it). One instance holds a group at a time; after a crash, another can
   * take over once the lease expired, and a starting instance waits up to
   * twice this long for it. Default 10,000.
   */
  leaseMs?: number;
  /**
   * Wait for the lease for as long as it takes instead of failing with
   * GROUP_BUSY: a hot standby that takes the group over once its holder
   * stops or dies (within `leaseMs`). `start` resolves only then.
   */
  standby?: boolean;
  /**
   * Splits the group into this many leased partitions (by a hash of the
   * ordering key) so that several processes can run it together; each
   * partition has its own checkpoint and lease, and `concurrency` and
   * `maxBuffered` apply per partition. Every node must give the same count,
   * and it cannot change once the group exists. Default: not partitioned (one
   * instance at a time).
   */
  partitions?: number;
}

export interface GroupStats {
  group: string;
  /** Committed checkpoint. */
  checkpoint: number;
  /** Events between the checkpoint and the log's head (known head). */
  lag: number;
  inFlight: number;
  /** Events waiting for a retry (their keys are blocked). */
  retrying: number;
  /** Events held back behind a retrying or parked event of their key (per-key order), not counting that event. */
  waiting: number;
  deadLetters: number;
  handled: number;
  /** Handled per second over the last few seconds. */
  handledPerSecond: number;
}

export interface DeadLetter {
  group: string;
  position: number;
  eventId: string;
  key: string;
  attempts: number;
  errors: { at: string; message: string }[];
  updatedAt: string;
}

/** The typed events a running group emits, for logs and metrics. */
export interface SubscriptionEventMap {
  'subscription:handled': [{ group: string; position: number; attempt: number }];
  'subscription:retry': [{ group: string; position: number; key: string; attempt: number; error: string; dueAt: number; correlationId?: string }];
  'subscription:dead-letter': [{ group: string; position: number; key: string; attempts: number; error: string; correlationId?: string }];
  'subscription:checkpoint': [{ group: string; position: number }];
  'subscription:error': [{ group: string; error: Error }];
  'subscription:stopped': [{ group: string }];
  /** A partitioned group's node took or gave up partitions; `partitions` are the ones it runs now. */
  'subscription:rebalance': [{ group: string; member: string; members: number; partitions: number[] }];
}

interface Item {
  position: number;
  event?: RecordedEvent;
  /** The durable row when this item is deferred. */
  row?: DeferredRow;
}

interface KeyQueue {
  key: string;
  items: Item[];
  running: boolean;
  /** True while the key's events are durably deferred (a retry, a park, or rows waiting behind them). */
  blocked: boolean;
}

const GROUP_NAME = /^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}$/;

export function validateGroupName(name: unknown): string {
  if (typeof name !== 'string' || !GROUP_NAME.test(name)) {
    throw new InvalidInput('INVALID_ARGUMENT', `Group name ${JSON.stringify(name)} is invalid: use 1-128 characters of A-Z a-z 0-9 _ . : @ -, starting with a letter or digit.`);
  }
  return name;
}

function positiveInt(value: unknown, name: string, fallback: number): number {
  const v = value ?? fallback;
  if (!Number.isSafeInteger(v) || (v as number) < 1) throw new InvalidInput('INVALID_ARGUMENT', `${name} must be an integer >= 1, got ${JSON.stringify(value)}.`, { option: name });
  return v as number;
}

function deadKey(kind: DeferredRow['kind'], position: number): string {
  return `${kind}:${position}`;
}

function errorMessage(error: unknown): string {
  if (error instanceof Error) return error.message || error.name;
  return String(error);
}

/** Which share of a partitioned group's events an engine delivers. */
export interface PartitionOf {
  index: number;
  count: number;
  /** Start only if the partition's lease is free now (a partitioned group retries on its next rebalance). */
  leaseOnce: boolean;
}

export class ConsumerGroup extends EventEmitter<SubscriptionEventMap> {
  readonly name: string;
  private readonly bindings: Binding[];
  private readonly handler?: EventHandler;
  private readonly project?: ProjectionHandler;
  private readonly concurrency: number;
  private readonly orderingKey: (event: RecordedEvent) => string;
  private readonly retry: ResolvedRetry;
  private readonly deadLetterPolicy: 'skip' | 'park';
  private readonly maxBuffered: number;
  private readonly checkpointIntervalMs: number;
  private readonly checkpointEvery: number;
  private readonly leaseMs: number;
  /** Identifies this instance as the lease holder (fencing token for every commit). */
  private readonly owner = randomUUID();
  /** When the last renewal that found the lease still ours was sent (Date.now()). */
  private renewedAt = 0;
  private leaseTimer: NodeJS.Timeout | undefined;
  private renewing: Promise<void> | undefined;

  private readonly keys = new Map<string, KeyQueue>();
  private readonly ready: KeyQueue[] = [];
  private readonly scheduled = new Map<number, DeferredRow>();
  /** Positions of scheduled deliveries being delivered right now. */
  private readonly scheduledRunning = new Set<number>();
  /** Dead letters by `deadKey(kind, position)`: an event can be dead both in its key's flow and as a scheduled delivery. */
  private readonly deadRows = new Map<string, DeferredRow>();
  /** Positions of live (not durably deferred) items in read order, and which of them are done. */
  private readonly pinned: number[] = [];
  private pinnedHead = 0;
  private readonly released = new Set<number>();
  private readPosition = 0;
  private checkpoint = 0;
  private knownHead = 0;
  private buffered = 0;
  private running = 0;
  private handled = 0;
  /** Events handled per second over the last seconds: a ring of per-second counts (constant memory at any rate). */
  private readonly rate = new HandledRate();
  private dirty: GroupCommit = { upserts: [], deletes: [], processed: [], statements: [] };
  private dirtyCount = 0;
  private flushing: Promise<void> | undefined;
  private flushTimer: NodeJS.Timeout | undefined;
  private dueTimer: NodeJS.Timeout | undefined;
  private dueAt = Number.POSITIVE_INFINITY;
  private readonly abort = new AbortController();
  private wakeReader: (() => void) | undefined;
  private readerDone: Promise<void> = Promise.resolve();
  /** No new deliveries start (graceful stop in progress). */
  private closing = false;
  /**
   * Keys whose head may be a retry row (a superset: stale keys are dropped when
   * seen). The due-time scans walk these, not every key: they run after every
   * handled event.
   */
  private readonly retryKeys = new Set<string>();
  /** Results of deliveries are dropped from now on. */
  private stopped = false;
  private failure: Error | undefined;
  /** Highest position recorded as processed at start: live events above it cannot be redeliveries. */
  private processedHighWater = 0;

  constructor(
    private readonly log: EventLog,
    private readonly storage: SubscriptionStorage,
    name: string,
    private readonly options: SubscribeOptions,
    /** Set by a partitioned group for each partition it runs (see partitioned-group.ts). */
    private readonly part?: PartitionOf,
  ) {
    super();
    this.name = part ? name : validateGroupName(name);
    if (typeof options !== 'object' || options === null) throw new InvalidInput('INVALID_ARGUMENT', 'subscribe needs options with a handler or a project function.');
    if ((options.handler === undefined) === (options.project === undefined)) {
      throw new InvalidInput('INVALID_ARGUMENT', 'Give exactly one of handler (at-least-once) or project (transactional).');
    }
    if (options.handler !== undefined && typeof options.handler !== 'function') throw new InvalidInput('INVALID_ARGUMENT', 'handler must be a function.');
    if (options.project !== undefined && typeof options.project !== 'function') throw new InvalidInput('INVALID_ARGUMENT', 'project must be a function.');
    if (options.project && !storage.supportsStatements) {
      throw new SinhoError('UNSUPPORTED', `The ${log.adapter} adapter has no SQL store, so transactional handlers (project) are not available; use handler.`);
    }
    this.handler = options.handler;
    this.project = options.project;
    this.bindings = validateBindings(options.bindings ?? [{ kind: 'fanout' }]);
    this.concurrency = positiveInt(options.concurrency, 'concurrency', 16);
    this.maxBuffered = positiveInt(options.maxBuffered, 'maxBuffered', 1000);
    this.checkpointIntervalMs = positiveInt(options.checkpointIntervalMs, 'checkpointIntervalMs', 100);
    this.checkpointEvery = positiveInt(options.checkpointEvery, 'checkpointEvery', 500);
    this.leaseMs = positiveInt(options.leaseMs, 'leaseMs', 10_000);
    if (options.orderingKey !== undefined && typeof options.orderingKey !== 'function') throw new InvalidInput('INVALID_ARGUMENT', 'orderingKey must be a function.');
    this.orderingKey = options.orderingKey ?? ((e) => e.stream);
    this.retry = resolveRetry(options.retry);
    const policy = options.deadLetter ?? 'skip';
    if (policy !== 'skip' && policy !== 'park') throw new InvalidInput('INVALID_ARGUMENT', `deadLetter must be 'skip' or 'park', got ${JSON.stringify(policy)}.`);
    this.deadLetterPolicy = policy;
    const start = options.startFrom ?? 'beginning';
    if (start !== 'beginning' && start !== 'end' && !(typeof start === 'object' && start !== null && Number.isSafeInteger(start.position) && start.position >= 0)) {
      throw new InvalidInput('INVALID_ARGUMENT', "startFrom must be 'beginning', 'end' or { position } with position >= 0.");
    }
  }

  /** Loads the group's durable state and starts delivering. */
  async start(): Promise<void> {
    const start = this.options.startFrom ?? 'beginning';
    const initial = start === 'beginning' ? 0 : start === 'end' ? await this.log.headPosition() : Math.max(0, start.position - 1);
    await this.storage.ensureGroup(this.name, initial);
    const deadline = this.part?.leaseOnce ? 0 : this.options.standby ? Infinity : Date.now() + 2 * this.leaseMs;
    while (!(await this.storage.acquireLease(this.name, this.owner, this.leaseMs))) {
      if (Date.now() >= deadline) {
        throw new SinhoError('GROUP_BUSY', `Consumer group "${this.name}" is held by another instance (its lease did not expire within ${2 * this.leaseMs} ms).`, { group: this.name });
      }
      await new Promise((r) => setTimeout(r, Math.max(10, this.leaseMs / 4)));
    }
    this.renewedAt = Date.now();
    this.leaseTimer = setInterval(() => {
      // One renewal at a time, and stop() waits for it: a renewal still in
      // flight when the lease is released would otherwise take it back.
      if (this.renewing) return;
      const asked = Date.now();
      this.renewing = this.storage
        .acquireLease(this.name, this.owner, this.leaseMs)
        .then(
          (held) => {
            if (held) this.renewedAt = asked;
            else if (!this.closing) this.fail(this.leaseLost());
          },
          (error: Error) => {
            if (!this.closing) this.fail(error);
          },
        )
        .finally(() => {
          this.renewing = undefined;
        });
    }, Math.max(10, Math.floor(this.leaseMs / 3)));
    try {
      // Read the checkpoint only now that the lease is ours: the previous holder
      // commits its last checkpoint before it lets the lease go.
      const row = await this.storage.getGroup(this.name);
      if (!row) throw new SinhoError('UNKNOWN_GROUP', `Consumer group "${this.name}" was deleted while starting.`, { group: this.name });
      this.checkpoint = row.position;
      this.readPosition = row.position;
      this.knownHead = await this.log.headPosition();
      for (const r of await this.storage.loadDeferred(this.name)) this.restore(r);
      if (this.project) this.processedHighWater = await this.storage.highestProcessed(this.name);
    } catch (error) {
      // Nothing was delivered: let the lease go now rather than renew it for nobody until the process exits.
      await this.stop({ timeoutMs: 0, flush: false });
      throw error;
    }
    this.armDueTimer();
    this.readerDone = this.readLoop();
    this.pump();
  }

  private restore(row: DeferredRow): void {
    if (row.kind === 'scheduled') {
      if (row.state === 'dead') this.deadRows.set(deadKey('scheduled', row.position), row);
      else this.scheduled.set(row.position, row);
      return;
    }
    if (row.state === 'dead') {
      this.deadRows.set(deadKey('ordered', row.position), row);
      if (this.deadLetterPolicy === 'skip') return;
    }
    const q = this.queueOf(row.key);
    if (row.state === 'retry') this.retryKeys.add(row.key);
    q.blocked = true;
    q.items.push({ position: row.position, row });
    q.items.sort((a, b) => a.position - b.position);
    if (row.state === 'waiting' && q.items[0]?.row === row) this.markReady(q);
  }

  private queueOf(key: string): KeyQueue {
    let q = this.keys.get(key);
    if (!q) this.keys.set(key, (q = { key, items: [], running: false, blocked: false }));
    return q;
  }

  private async readLoop(): Promise<void> {
    try {
      for await (const event of this.log.follow({ fromPosition: this.readPosition + 1, signal: this.abort.signal })) {
        this.readPosition = event.position;
        if (event.position > this.knownHead) this.knownHead = event.position;
        if (this.bindings.some((b) => matchBinding(b, event))) {
          const key = this.orderingKey(event);
          if (!this.part || partitionOf(key, this.part.count) === this.part.index) this.enqueue(event, key);
        }
        // Commit the checkpoint now and then even when nothing here matches, so
        // that lag (and a partitioned group's progress) is visible in the store.
        if (!this.flushTimer && !this.stopped) this.flushTimer = setTimeout(() => void this.flush(), this.checkpointIntervalMs);
        while (this.buffered >= this.maxBuffered && !this.closing) await new Promise<void>((r) => (this.wakeReader = r));
        if (this.closing) return;
      }
    } catch (error) {
      if (!this.closing) this.fail(error as Error);
    }
  }

  private enqueue(event: RecordedEvent, key: string): void {
    const q = this.queueOf(key);
    const item: Item = { position: event.position };
    if (q.blocked) {
      // Durable and out of memory: it is read again from the log when its turn comes.
      item.row = this.deferRow(event.position, event.id, q.key, 'waiting', 0, null, []);
    } else {
      item.event = event;
      this.pinned.push(event.position);
      this.buffered += 1;
    }
    q.items.push(item);
    if (!q.blocked && !q.running && q.items.length === 1) this.markReady(q);
    this.pump();
  }

  private deferRow(position: number, eventId: string, key: string, state: DeferredRow['state'], attempts: number, dueAt: number | null, errors: DeferredRow['errors'], kind: DeferredRow['kind'] = 'ordered'): DeferredRow {
    const row: DeferredRow = { position, kind, eventId, key, state, attempts, dueAt, errors, updatedAt: new Date().toISOString() };
    this.dirty.upserts.push(row);
    this.touch();
    return row;
  }

  private markReady(q: KeyQueue): void {
    if (!this.ready.includes(q)) this.ready.push(q);
  }

  private pump(): void {
    while (!this.closing && this.running < this.concurrency && this.ready.length > 0) {
      const q = this.ready.shift()!;
      if (q.running || q.items.length === 0) continue;
      const head = q.items[0]!;
      if (head.row && (head.row.state === 'dead' || (head.row.dueAt !== null && head.row.dueAt > Date.now()))) continue;
      void this.runHead(q, head);
    }
  }

  private async deliver(event: RecordedEvent, attempt: number, errors: readonly string[], scheduled: boolean): Promise<{ ok: true; statements: ProjectionStatement[]; schedule?: number } | { ok: false; error: unknown }> {
    const statements: ProjectionStatement[] = [];
    let schedule: number | undefined;
    const context: DeliveryContext = {
      group: this.name,
      attempt,
      errors,
      scheduled,
      signal: this.abort.signal,
      schedule: (delayMs) => {
        if (typeof delayMs !== 'number' || !Number.isFinite(delayMs) || delayMs < 0) throw new InvalidInput('INVALID_ARGUMENT', `schedule needs a delay in ms >= 0, got ${JSON.stringify(delayMs)}.`);
        schedule = delayMs;
      },
    };
    try {
      if (this.project) {
        // Only a live event at or below the high-water mark can be a redelivery of
        // one whose effects already committed (deferred rows are deleted in the
        // same transaction as their effects).
        if (!scheduled && event.position <= this.processedHighWater && (await this.storage.processedIds(this.name, [event.id])).has(event.id)) {
          return { ok: true, statements };
        }
        this.project(event, { execute: (sql, params = []) => void statements.push({ sql, params }) }, context);
      } else {
        await this.handler!(event, context);
      }
      return { ok: true, statements, schedule };
    } catch (error) {
      return { ok: false, error };
    }
  }

  private async loadEvent(item: Item): Promise<RecordedEvent | undefined> {
    if (item.event) return item.event;
    const [event] = await this.log.readEvents([item.row!.eventId]);
    return event;
  }

  private async runHead(q: KeyQueue, head: Item): Promise<void> {
    q.running = true;
    this.running += 1;
    try {
      const event = await this.loadEvent(head);
      if (this.stopped) return;
      if (!event) {
        // The event is gone (stream truncated): nothing left to deliver.
        this.ack(q, head, []);
        return;
      }
      const attempt = (head.row?.attempts ?? 0) + 1;
      const result = await this.deliver(event, attempt, head.row?.errors.map((e) => e.message) ?? [], false);
      if (this.stopped) return;
      if (result.ok) {
        if (result.schedule !== undefined) this.scheduleRow(event, result.schedule);
        this.ack(q, head, result.statements, event.id);
        this.emit('subscription:handled', { group: this.name, position: head.position, attempt });
      } else this.nack(q, head, event, attempt, result.error);
    } catch (error) {
      this.fail(error as Error);
    } finally {
      q.running = false;
      this.running -= 1;
      if (q.items.length > 0 && !this.stopped) {
        const next = q.items[0]!;
        if (!next.row || next.row.state === 'waiting' || (next.row.state === 'retry' && (next.row.dueAt ?? 0) <= Date.now())) this.markReady(q);
      } else if (q.items.length === 0) {
        this.keys.delete(q.key);
      }
      this.armDueTimer();
      this.pump();
    }
  }

  private release(position: number): void {
    this.released.add(position);
  }

  private ack(q: KeyQueue, item: Item, statements: ProjectionStatement[], eventId?: string): void {
    q.items.shift();
    if (item.row) this.dirty.deletes.push({ position: item.position, kind: 'ordered' });
    else {
      this.buffered -= 1;
      this.release(item.position);
    }
    if (this.project && eventId) this.dirty.processed.push({ eventId, position: item.position });
    this.dirty.statements.push(...statements);
    if (q.items.length === 0) q.blocked = false;
    this.handled += 1;
    this.rate.count(Date.now());
    this.touch();
    this.wakeReader?.();
  }

  private nack(q: KeyQueue, item: Item, event: RecordedEvent, attempt: number, error: unknown): void {
    const message = errorMessage(error);
    const errors = [...(item.row?.errors ?? []), { at: new Date().toISOString(), message }];
    if (!item.row) {
      this.buffered -= 1;
      this.release(item.position);
    }
    item.event = undefined;
    if (attempt >= this.retry.maxAttempts) {
      item.row = this.deferRow(item.position, event.id, q.key, 'dead', attempt, null, errors);
      this.deadRows.set(deadKey('ordered', item.position), item.row);
      this.emit('subscription:dead-letter', { group: this.name, position: item.position, key: q.key, attempts: attempt, error: message, correlationId: event.metadata.correlationId });
      if (this.deadLetterPolicy === 'skip') {
        q.items.shift();
        if (q.items.length === 0) q.blocked = false;
        this.wakeReader?.();
      } else {
        this.block(q);
      }
      return;
    }
    const dueAt = Date.now() + this.retry.delayAfter(attempt);
    item.row = this.deferRow(item.position, event.id, q.key, 'retry', attempt, dueAt, errors);
    this.retryKeys.add(q.key);
    this.block(q);
    this.emit('subscription:retry', { group: this.name, position: item.position, key: q.key, attempt, error: message, dueAt, correlationId: event.metadata.correlationId });
    this.armDueTimer();
  }

  /** Makes every live item behind the head of `q` durable, so the checkpoint can move past them. */
  private block(q: KeyQueue): void {
    q.blocked = true;
    for (const it of q.items.slice(1)) {
      if (it.row) continue;
      it.row = this.deferRow(it.position, it.event!.id, q.key, 'waiting', 0, null, []);
      it.event = undefined;
      this.buffered -= 1;
      this.release(it.position);
    }
    this.wakeReader?.();
  }

  /**
   * At a graceful stop: makes every read but not yet started event a durable
   * `waiting` row, so that the last checkpoint covers everything read, and
   * the next instance (another node, after a rebalance) delivers nothing
   * twice. A key whose handler was abandoned at the stop timeout is left as
   * it is: its event will be delivered again, and the checkpoint stays
   * before it.
   */
  private deferQueued(): void {
    for (const q of this.keys.values()) {
      if (q.running) continue;
      for (const it of q.items) {
        if (it.row) continue;
        it.row = this.deferRow(it.position, it.event!.id, q.key, 'waiting', 0, null, []);
        it.event = undefined;
        this.buffered -= 1;
        this.release(it.position);
        q.blocked = true;
      }
    }
  }

  private scheduleRow(event: RecordedEvent, delayMs: number): void {
    const row = this.deferRow(event.position, event.id, this.orderingKey(event), 'scheduled', 0, Date.now() + delayMs, [], 'scheduled');
    this.scheduled.set(event.position, row);
    this.armDueTimer();
  }

  /** Schedules a delayed delivery of a stored event to this group (durable). */
  async schedule(eventId: string, when: { delayMs: number } | { at: Date }): Promise<void> {
    const [event] = await this.log.readEvents([eventId]);
    if (!event) throw new InvalidInput('INVALID_ARGUMENT', `No event with id ${eventId}.`, { eventId });
    const delay = 'at' in when ? when.at.getTime() - Date.now() : when.delayMs;
    if (!Number.isFinite(delay)) throw new InvalidInput('INVALID_ARGUMENT', 'schedule needs { delayMs } >= 0 or { at: Date }.');
    if (delay < 0 && 'delayMs' in when) throw new InvalidInput('INVALID_ARGUMENT', `delayMs must be >= 0, got ${delay}.`);
    this.scheduleRow(event, Math.max(0, delay));
    await this.flush();
  }

  private async runScheduled(row: DeferredRow): Promise<void> {
    this.running += 1;
    try {
      const [event] = await this.log.readEvents([row.eventId]);
      if (this.stopped) return;
      if (!event) {
        this.scheduled.delete(row.position);
        this.dirty.deletes.push({ position: row.position, kind: 'scheduled' });
        return this.touch();
      }
      const attempt = row.attempts + 1;
      const result = await this.deliver(event, attempt, row.errors.map((e) => e.message), true);
      if (this.stopped) return;
      if (result.ok) {
        this.scheduled.delete(row.position);
        this.dirty.statements.push(...result.statements);
        // A reschedule replaces the row; otherwise it is done.
        if (result.schedule !== undefined) this.scheduleRow(event, result.schedule);
        else this.dirty.deletes.push({ position: row.position, kind: 'scheduled' });
        this.handled += 1;
        this.touch();
        return;
      }
      const message = errorMessage(result.error);
      const errors = [...row.errors, { at: new Date().toISOString(), message }];
      if (attempt >= this.retry.maxAttempts) {
        this.scheduled.delete(row.position);
        const dead = this.deferRow(row.position, row.eventId, row.key, 'dead', attempt, null, errors, 'scheduled');
        this.deadRows.set(deadKey('scheduled', row.position), dead);
        this.emit('subscription:dead-letter', { group: this.name, position: row.position, key: row.key, attempts: attempt, error: message, correlationId: event.metadata.correlationId });
      } else {
        const next = this.deferRow(row.position, row.eventId, row.key, 'scheduled', attempt, Date.now() + this.retry.delayAfter(attempt), errors, 'scheduled');
        this.scheduled.set(row.position, next);
      }
    } catch (error) {
      this.fail(error as Error);
    } finally {
      this.scheduledRunning.delete(row.position);
      this.running -= 1;
      this.armDueTimer();
      this.pump();
    }
  }

  /** One timer for the earliest due retry or scheduled delivery. */
  /** The queues whose head is a retry row; drops keys that no longer have one. */
  private retryHeads(): KeyQueue[] {
    const out: KeyQueue[] = [];
    for (const key of this.retryKeys) {
      const q = this.keys.get(key);
      if (q && q.items[0]?.row?.state === 'retry') out.push(q);
      else if (!q?.running) this.retryKeys.delete(key);
    }
    return out;
  }

  private armDueTimer(): void {
    if (this.stopped) return;
    let earliest = Number.POSITIVE_INFINITY;
    for (const q of this.retryHeads()) {
      const row = q.items[0]!.row!;
      if (!q.running && row.dueAt !== null) earliest = Math.min(earliest, row.dueAt);
    }
    for (const row of this.scheduled.values()) if (!this.scheduledRunning.has(row.position) && row.dueAt !== null) earliest = Math.min(earliest, row.dueAt);
    if (earliest === this.dueAt && this.dueTimer) return;
    if (this.dueTimer) clearTimeout(this.dueTimer);
    this.dueTimer = undefined;
    this.dueAt = earliest;
    if (earliest === Number.POSITIVE_INFINITY) return;
    this.dueTimer = setTimeout(() => this.fireDue(), Math.max(0, Math.min(earliest - Date.now(), 2 ** 31 - 1)));
  }

  private fireDue(): void {
    this.dueTimer = undefined;
    this.dueAt = Number.POSITIVE_INFINITY;
    const now = Date.now();
    for (const q of this.retryHeads()) {
      const row = q.items[0]!.row!;
      if (!q.running && row.dueAt !== null && row.dueAt <= now) this.markReady(q);
    }
    for (const row of [...this.scheduled.values()]) {
      if (!this.scheduledRunning.has(row.position) && row.dueAt !== null && row.dueAt <= now && this.running < this.concurrency) {
        this.scheduledRunning.add(row.position);
        void this.runScheduled(row);
      }
    }
    this.pump();
    this.armDueTimer();
  }

  private touch(): void {
    this.dirtyCount += 1;
    if (this.dirtyCount >= this.checkpointEvery) void this.flush();
    else if (!this.flushTimer && !this.stopped) this.flushTimer = setTimeout(() => void this.flush(), this.checkpointIntervalMs);
  }

  /** The highest position below which every matching event is acked or durably deferred. */
  private safeCheckpoint(): number {
    while (this.pinnedHead < this.pinned.length && this.released.has(this.pinned[this.pinnedHead]!)) {
      this.released.delete(this.pinned[this.pinnedHead]!);
      this.pinnedHead += 1;
    }
    if (this.pinnedHead > 4096) {
      this.pinned.splice(0, this.pinnedHead);
      this.pinnedHead = 0;
    }
    return this.pinnedHead < this.pinned.length ? this.pinned[this.pinnedHead]! - 1 : this.readPosition;
  }

  /** Commits the checkpoint and every pending change in one transaction. */
  flush(): Promise<void> {
    if (this.flushing) return this.flushing.then(() => (this.dirtyCount > 0 ? this.flush() : undefined));
    if (this.flushTimer) clearTimeout(this.flushTimer);
    this.flushTimer = undefined;
    const position = this.safeCheckpoint();
    if (this.dirtyCount === 0 && position === this.checkpoint) return Promise.resolve();
    const commit: GroupCommit = { ...this.dirty, position: position > this.checkpoint ? position : undefined };
    this.dirty = { upserts: [], deletes: [], processed: [], statements: [] };
    this.dirtyCount = 0;
    this.flushing = (async () => {
      try {
        await this.storage.commitGroup(this.name, commit, this.owner);
        if (commit.position !== undefined) {
          this.checkpoint = commit.position;
          this.emit('subscription:checkpoint', { group: this.name, position: commit.position });
        }
      } catch (error) {
        // The state in memory is ahead of the store; the only safe continuation
        // is to stop and let a restart resume from what was committed.
        this.fail((error as SinhoError).code === 'GROUP_LEASE_LOST' ? this.leaseLost(error as Error) : (error as Error));
      } finally {
        this.flushing = undefined;
      }
    })();
    return this.flushing;
  }

  /**
   * The error for a lease found taken, saying how long ago it was last renewed: another instance can take it only
   * once `leaseMs` passed without a renewal, so a long gap means this process or its store connection stalled.
   */
  private leaseLost(cause?: Error): SinhoError {
    const sinceMs = Date.now() - this.renewedAt;
    return new SinhoError(
      'GROUP_LEASE_LOST',
      `Consumer group "${this.name}" was taken over by another instance; this one last renewed its lease ${sinceMs} ms ago (leaseMs ${this.leaseMs}).`,
      { group: this.name, sinceRenewalMs: sinceMs, leaseMs: this.leaseMs },
      cause ? { cause } : undefined,
    );
  }

  private fail(error: Error): void {
    if (this.failure) return;
    this.failure = error;
    this.emit('subscription:error', { group: this.name, error });
    void this.stop({ timeoutMs: 0, flush: false });
  }

  /**
   * Resolves when every event up to `position` that the group receives has
   * been handled or deferred, and checkpointed. By default it commits the
   * checkpoint as soon as the events are handled; `flush: false` waits for
   * the group's own checkpoint commits instead (no extra commits, at most
   * `checkpointIntervalMs` later).
   */
  async waitForCheckpoint(position: number, timeoutMs = 30_000, options: { flush?: boolean } = {}): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (this.checkpoint < position) {
      if (this.failure) throw this.failure;
      if (this.stopped) throw new SinhoError('INVALID_ARGUMENT', `Group ${this.name} stopped before reaching position ${position}.`);
      if (Date.now() > deadline) throw new SinhoError('INVALID_ARGUMENT', `Group ${this.name} did not reach position ${position} within ${timeoutMs} ms (at ${this.checkpoint}).`);
      await new Promise((r) => setTimeout(r, 10));
      if (options.flush !== false) await this.flush();
    }
  }

  stats(): GroupStats {
    let retrying = 0;
    for (const _ of this.retryHeads()) retrying += 1;
    let waiting = 0;
    for (const q of this.keys.values()) if (q.blocked && q.items.length > 1) waiting += q.items.length - 1;
    return {
      group: this.name,
      checkpoint: this.checkpoint,
      lag: Math.max(0, this.knownHead - this.checkpoint),
      inFlight: this.running,
      retrying: retrying + [...this.scheduled.values()].filter((r) => r.attempts > 0).length,
      waiting,
      deadLetters: this.deadRows.size,
      handled: this.handled,
      handledPerSecond: this.rate.perSecond(Date.now()),
    };
  }

  /** Removes and returns the dead letter at `position` (the one in its key's flow first, then a scheduled one). */
  private takeDeadLetter(position: number): DeferredRow {
    for (const kind of ['ordered', 'scheduled'] as const) {
      const row = this.deadRows.get(deadKey(kind, position));
      if (row) {
        this.deadRows.delete(deadKey(kind, position));
        return row;
      }
    }
    throw new InvalidInput('INVALID_ARGUMENT', `Group ${this.name} has no dead letter at position ${position}.`, { position });
  }

  /** Dead letters of this group (from its running state). */
  deadLetters(): DeadLetter[] {
    return [...this.deadRows.values()]
      .map((r) => ({ group: this.name, position: r.position, eventId: r.eventId, key: r.key, attempts: r.attempts, errors: r.errors, updatedAt: r.updatedAt }))
      .sort((a, b) => a.position - b.position);
  }

  /**
   * Delivers a dead letter again, attempts starting over. A parked key resumes
   * in order behind it. A skipped one was passed by its key long ago, so it is
   * delivered on its own, like a delayed delivery due now.
   */
  async redeliver(position: number): Promise<void> {
    const row = this.takeDeadLetter(position);
    const q = row.kind === 'ordered' ? this.keys.get(row.key) : undefined;
    const item = q?.items.find((i) => i.position === position);
    if (q && item) {
      item.row = this.deferRow(position, row.eventId, row.key, 'retry', 0, Date.now(), []);
      this.retryKeys.add(row.key);
      if (q.items[0] === item) this.markReady(q);
    } else {
      // A dead scheduled row is replaced by the upsert below (a delete would run after it and remove it).
      if (row.kind === 'ordered') this.dirty.deletes.push({ position, kind: 'ordered' });
      const scheduled = this.deferRow(position, row.eventId, row.key, 'scheduled', 0, Date.now(), [], 'scheduled');
      this.scheduled.set(position, scheduled);
      this.armDueTimer();
    }
    await this.flush();
    this.pump();
  }

  /** Drops a dead letter for good. With `park`, its key continues with the next event. */
  async discard(position: number): Promise<void> {
    const row = this.takeDeadLetter(position);
    this.dirty.deletes.push({ position, kind: row.kind });
    this.touch();
    const q = row.kind === 'ordered' ? this.keys.get(row.key) : undefined;
    const index = q?.items.findIndex((i) => i.position === position) ?? -1;
    if (q && index !== -1) {
      q.items.splice(index, 1);
      if (q.items.length === 0) {
        q.blocked = false;
        this.keys.delete(q.key);
      } else if (index === 0) this.markReady(q);
    }
    await this.flush();
    this.pump();
  }

  /**
   * Stops taking new events, waits for running handlers up to `timeoutMs`
   * (default 10 s), then commits the checkpoint. Handlers still running after
   * the timeout are abandoned; their events will be delivered again.
   */
  async stop(options: { timeoutMs?: number; flush?: boolean } = {}): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    this.abort.abort();
    this.wakeReader?.();
    if (this.dueTimer) clearTimeout(this.dueTimer);
    const deadline = Date.now() + (options.timeoutMs ?? 10_000);
    while (this.running > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
    this.stopped = true;
    await this.readerDone;
    if (options.flush !== false) {
      this.deferQueued();
      await this.flush();
    }
    if (this.flushTimer) clearTimeout(this.flushTimer);
    this.flushTimer = undefined;
    if (this.leaseTimer) clearInterval(this.leaseTimer);
    await this.renewing;
    await this.storage.releaseLease(this.name, this.owner).catch(() => {});
    this.emit('subscription:stopped', { group: this.name });
  }
}

/**
 * Handled events per second, averaged over the last five whole seconds: one
 * counter per second in a ring, so counting is O(1) and memory is constant
 * (a timestamp per event grew without bound when nobody read the stats).
 */
class HandledRate {
  private static readonly SECONDS = 5;
  private readonly counts = new Array<number>(HandledRate.SECONDS + 1).fill(0);
  private readonly seconds = new Array<number>(HandledRate.SECONDS + 1).fill(-1);

  count(nowMs: number): void {
    const second = Math.floor(nowMs / 1000);
    const slot = second % this.counts.length;
    if (this.seconds[slot] !== second) {
      this.seconds[slot] = second;
      this.counts[slot] = 0;
    }
    this.counts[slot]! += 1;
  }

  /** The mean over the five whole seconds before the current one. */
  perSecond(nowMs: number): number {
    const current = Math.floor(nowMs / 1000);
    let sum = 0;
    for (let i = 0; i < this.counts.length; i++) {
      const second = this.seconds[i]!;
      if (second < current && second >= current - HandledRate.SECONDS) sum += this.counts[i]!;
    }
    return Math.round(sum / HandledRate.SECONDS);
  }
}
