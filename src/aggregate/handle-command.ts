import { EventIdConflict, InvalidInput, SinhoError, WrongExpectedRevision } from '../errors.js';
import type { EventLog, JsonValue, NewEvent, RecordedEvent, EventMetadata } from '../log/types.js';
import { snapshotKey, type Decider, type DomainEvent } from './decider.js';
import type { AggregateStateCache } from './state-cache.js';
import { recordedEventsOf } from '../log/stored-event-log.js';
import { nameBasedUuid } from '../log/ids.js';

export interface HandleCommandOptions {
  /**
   * Makes the command idempotent: handling the same id again on the same
   * stream appends nothing and returns the first result. Event ids are derived
   * from it, so even two concurrent deliveries of one command append once.
   */
  commandId?: string;
  /** Attempts when another writer got to the stream first (WrongExpectedRevision). Default 5. */
  maxAttempts?: number;
  /**
   * Write a snapshot about every this many events of the stream. Default: never. Each stream has its own phase
   * (a hash of its name), so streams that grow together do not all snapshot in the same instant: the first
   * snapshot comes after 1 to `snapshotEvery` events, then one every `snapshotEvery`.
   */
  snapshotEvery?: number;
  /**
   * Called when writing a snapshot failed. The command's events are appended by then, so the command still
   * succeeds: a snapshot only shortens later loads, which read the events instead. Default: a process warning
   * (code `SINHO_SNAPSHOT_FAILED`).
   */
  onSnapshotError?: (error: unknown, snapshot: { stream: string; revision: number }) => void;
  /** Metadata for every appended event (correlation, causation, actor, headers). */
  metadata?: EventMetadata;
  durability?: 'durable' | 'relaxed';
  /** Start from a cached state and cache the result (see AggregateStateCache). */
  cache?: AggregateStateCache;
}

export interface CommandResult<State, Event extends DomainEvent> {
  /** The events this command appended (or, for a repeated command id, appended the first time). */
  events: RecordedEvent<Event['type'], Event['data']>[];
  /** The state right after those events. */
  state: State;
  /** The stream's revision right after those events (-1: the stream is still empty). */
  revision: number;
  /** True when `commandId` had been handled before: nothing was appended now. */
  alreadyHandled: boolean;
}

export interface LoadedAggregate<State> {
  state: State;
  /** Last revision folded into `state` (-1 when the stream is empty). */
  revision: number;
  /** Revision of the snapshot the load started from, if any. */
  fromSnapshot: number | undefined;
}

/** Deterministic UUID (version 8, name-based on SHA-256) of the `index`-th event of a command. */
export function commandEventId(commandId: string, stream: string, index: number): string {
  return nameBasedUuid(`sinho:command:${stream}:${commandId}:${index}`);
}

/**
 * Folds a stream into the decider's state, starting from its snapshot when one
 * exists, or from `cache`. With `catchUp: false`, a cached state is returned as
 * it is, without reading the stream, marked `unverified` (it may be behind:
 * append with its revision as the expected revision to find out).
 */
export async function loadAggregate<C, S, E extends DomainEvent>(
  log: EventLog,
  decider: Decider<C, S, E>,
  stream: string,
  options: { upToRevision?: number; useSnapshot?: boolean; cache?: AggregateStateCache; catchUp?: boolean } = {},
): Promise<LoadedAggregate<S> & { unverified?: boolean }> {
  let state = decider.initialState;
  let revision = -1;
  let fromSnapshot: number | undefined;
  const cacheKey = `${snapshotKey(decider)}|${stream}`;
  const cached = options.upToRevision === undefined ? options.cache?.get(cacheKey) : undefined;
  if (cached) {
    // Without catching up, the cached state may be behind the stream: the caller must let the expected revision check it.
    if (options.catchUp === false) return { state: cached.state as S, revision: cached.revision, fromSnapshot: undefined, unverified: true };
    state = cached.state as S;
    revision = cached.revision;
  } else if (options.useSnapshot !== false) {
    const snapshot = await log.readSnapshot(stream, snapshotKey(decider));
    if (snapshot && (options.upToRevision === undefined || snapshot.revision <= options.upToRevision)) {
      state = snapshot.state as S;
      revision = snapshot.revision;
      fromSnapshot = snapshot.revision;
    }
  }
  const limit = options.upToRevision === undefined ? undefined : options.upToRevision - revision;
  if (limit === undefined || limit > 0) {
    for await (const event of log.readStream(stream, { from: revision + 1, limit })) {
      state = decider.evolve(state, event as unknown as E);
      revision = event.revision;
    }
  }
  if (options.upToRevision === undefined && revision >= 0) options.cache?.set(cacheKey, { state, revision });
  return { state, revision, fromSnapshot };
}

function validateOptions(options: HandleCommandOptions): void {
  const { commandId, maxAttempts, snapshotEvery } = options;
  if (commandId !== undefined && (typeof commandId !== 'string' || commandId.length === 0 || commandId.length > 200)) {
    throw new InvalidInput('INVALID_ARGUMENT', 'commandId must be a string of 1-200 characters.');
  }
  if (maxAttempts !== undefined && (!Number.isSafeInteger(maxAttempts) || maxAttempts < 1)) {
    throw new InvalidInput('INVALID_ARGUMENT', 'maxAttempts must be an integer >= 1.');
  }
  if (snapshotEvery !== undefined && (!Number.isSafeInteger(snapshotEvery) || snapshotEvery < 1)) {
    throw new InvalidInput('INVALID_ARGUMENT', 'snapshotEvery must be an integer >= 1.');
  }
  if (options.onSnapshotError !== undefined && typeof options.onSnapshotError !== 'function') {
    throw new InvalidInput('INVALID_ARGUMENT', 'onSnapshotError must be a function.');
  }
}

async function previousResult<C, S, E extends DomainEvent>(
  log: EventLog,
  decider: Decider<C, S, E>,
  stream: string,
  commandId: string,
  first: RecordedEvent,
): Promise<CommandResult<S, E>> {
  const events: RecordedEvent[] = [];
  for await (const e of log.readStream(stream, { from: first.revision })) {
    if (e.id !== commandEventId(commandId, stream, events.length)) break;
    events.push(e);
  }
  const last = events[events.length - 1]!.revision;
  const loaded = await loadAggregate(log, decider, stream, { upToRevision: last });
  return { events: events as CommandResult<S, E>['events'], state: loaded.state, revision: last, alreadyHandled: true };
}

/**
 * Loads the stream, decides, and appends the resulting events with the
 * revision it decided on as the expected revision. When another writer
 * appended in between, it reloads and decides again, up to `maxAttempts`.
 * Business-rule refusals (DomainError) propagate unchanged and append nothing.
 */
export async function handleCommand<C, S, E extends DomainEvent>(
  log: EventLog,
  decider: Decider<C, S, E>,
  stream: string,
  command: C,
  options: HandleCommandOptions = {},
): Promise<CommandResult<S, E>> {
  validateOptions(options);
  const maxAttempts = options.maxAttempts ?? 5;
  const { commandId } = options;
  let lastConflict: WrongExpectedRevision | undefined;
  // A cached state is first trusted as it is, without reading the stream: the
  // expected revision on append proves it was the latest (one read less per
  // command on a hot aggregate). A refusal or a no-op decided on it is not
  // proven by any append, so it is decided again on the caught-up state; a
  // conflict falls back to catching up, without counting as an attempt.
  let trustCache = options.cache !== undefined;
  for (let attempt = 1; attempt <= maxAttempts; attempt++) {
    if (commandId !== undefined) {
      const [first] = await log.readEvents([commandEventId(commandId, stream, 0)]);
      if (first) return previousResult(log, decider, stream, commandId, first);
    }
    let loaded = await loadAggregate(log, decider, stream, { cache: options.cache, catchUp: !trustCache });
    const optimistic = loaded.unverified === true;
    trustCache = false;
    let decided: E | readonly E[] | undefined;
    if (optimistic) {
      try {
        decided = await decider.decide(command, loaded.state);
      } catch {
        decided = undefined;
      }
      if (decided === undefined || (Array.isArray(decided) && decided.length === 0)) {
        loaded = await loadAggregate(log, decider, stream, { cache: options.cache });
        decided = await decider.decide(command, loaded.state);
      }
    } else {
      decided = await decider.decide(command, loaded.state);
    }
    const domainEvents: readonly E[] = Array.isArray(decided) ? decided : [decided as E];
    if (domainEvents.length === 0) return { events: [], state: loaded.state, revision: loaded.revision, alreadyHandled: false };
    const newEvents: NewEvent[] = domainEvents.map((e, i) => ({
      id: commandId === undefined ? undefined : commandEventId(commandId, stream, i),
      type: e.type,
      data: e.data,
      metadata: options.metadata || e.metadata ? { ...options.metadata, ...e.metadata, headers: { ...options.metadata?.headers, ...e.metadata?.headers } } : undefined,
    }));
    try {
      const appended = await log.append(stream, newEvents, {
        expectedRevision: loaded.revision === -1 ? 'noStream' : loaded.revision,
        durability: options.durability,
      });
      let state = loaded.state;
      const recorded = recordedEventsOf(appended) ?? (await log.readEvents(appended.events.map((e) => e.id)));
      for (const e of recorded) state = decider.evolve(state, e as unknown as E);
      options.cache?.set(`${snapshotKey(decider)}|${stream}`, { state, revision: appended.revision });
      if (options.snapshotEvery !== undefined) {
        const k = options.snapshotEvery;
        const phase = snapshotPhase(stream, k);
        if (Math.floor((appended.revision + 1 + phase) / k) > Math.floor((loaded.revision + 1 + phase) / k)) {
          await writeSnapshotAfter(log, stream, { key: snapshotKey(decider), revision: appended.revision, state: state as JsonValue }, options.onSnapshotError);
        }
      }
      return { events: recorded as CommandResult<S, E>['events'], state, revision: appended.revision, alreadyHandled: appended.alreadyStored };
    } catch (error) {
      if (error instanceof WrongExpectedRevision) {
        lastConflict = error;
        if (optimistic && loaded.unverified) attempt -= 1; // the cache was behind: catching up is not a lost race
        continue;
      }
      // Another delivery of the same command won the race with different
      // content (its decision read a different clock, say): the next attempt
      // finds its events and returns them as the result.
      if (error instanceof EventIdConflict && commandId !== undefined) continue;
      throw error;
    }
  }
  throw new SinhoError(
    'CONCURRENCY_RETRIES_EXHAUSTED',
    `Stream "${stream}" kept changing under the command; gave up after ${maxAttempts} attempts.`,
    { stream, attempts: maxAttempts },
    { cause: lastConflict },
  );
}

/**
 * Writes a snapshot after a command's events were appended. A failure is reported, not thrown: turning it into the
 * command's error would tell the caller that a command failed whose events are stored (and a retry would then
 * decide again on a state that already includes them).
 */
async function writeSnapshotAfter(
  log: EventLog,
  stream: string,
  snapshot: { key: string; revision: number; state: JsonValue },
  onError: HandleCommandOptions['onSnapshotError'],
): Promise<void> {
  try {
    await log.writeSnapshot(stream, snapshot);
  } catch (error) {
    if (onError) onError(error, { stream, revision: snapshot.revision });
    else {
      const message = error instanceof Error ? error.message : String(error);
      process.emitWarning(`Snapshot of stream "${stream}" at revision ${snapshot.revision} was not written: ${message}`, { code: 'SINHO_SNAPSHOT_FAILED' });
    }
  }
}

/**
 * Where in the cycle of `every` events a stream snapshots: FNV-1a of its name, mod `every`. Without it, streams
 * written evenly (moim's communities, joined one after another) crossed the same multiple together, and hundreds
 * of snapshots, each the whole state, were written in one burst that stalled the writer for a second.
 */
function snapshotPhase(stream: string, every: number): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < stream.length; i++) hash = Math.imul(hash ^ stream.charCodeAt(i), 0x01000193);
  return (hash >>> 0) % every;
}

/** Deletes the events a decider's latest snapshot covers; returns the revision kept from (or undefined without a snapshot). */
export async function truncateToSnapshot<C, S, E extends DomainEvent>(log: EventLog, decider: Decider<C, S, E>, stream: string): Promise<number | undefined> {
  const snapshot = await log.readSnapshot(stream, snapshotKey(decider));
  if (!snapshot) return undefined;
  await log.truncateStream(stream, snapshot.revision + 1);
  return snapshot.revision + 1;
}
