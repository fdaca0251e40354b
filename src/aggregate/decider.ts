import type { EventMetadata } from '../log/types.js';

/** What a decider emits and folds: a discriminated union on `type`. */
export interface DomainEvent<Type extends string = string, Data = unknown> {
  type: Type;
  data: Data;
  /** Optional per-event metadata (headers, actor); merged over the command's metadata on append. */
  metadata?: EventMetadata;
}

/**
 * An aggregate as a decider: pure functions over a stream of events.
 *
 * - `decide(command, state)` returns the events that record the command's
 *   effect (an empty list when nothing happens) or throws a {@link DomainError}
 *   when a business rule refuses it;
 * - `evolve(state, event)` folds one event into the state, without mutating its
 *   input (snapshots and retries rely on that);
 * - `name` and `version` identify the state's shape: bump `version` whenever
 *   the state shape or `evolve` changes, and old snapshots are ignored.
 */
export interface Decider<Command, State, Event extends DomainEvent> {
  name: string;
  /** Version of the state shape. Default 1. */
  version?: number;
  initialState: State;
  evolve(state: State, event: Event): State;
  decide(command: Command, state: State): Event | readonly Event[] | Promise<Event | readonly Event[]>;
}

/** The snapshot key of a decider: a snapshot stored under another key is never loaded. */
export function snapshotKey(decider: Pick<Decider<unknown, unknown, DomainEvent>, 'name' | 'version'>): string {
  return `${decider.name}@${decider.version ?? 1}`;
}
