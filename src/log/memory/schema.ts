/**
 * The memory adapter's "schema": the in-process tables that mirror the SQL
 * adapters' `events`, `streams` and `snapshots` tables. Nothing survives the
 * process; use it for tests and examples.
 */
import type { StoredEvent } from '../storage.js';
import type { Snapshot } from '../types.js';

export interface MemoryTables {
  /** Index i holds position i + 1; truncated events are left as `undefined` holes. */
  events: (StoredEvent | undefined)[];
  byId: Map<string, StoredEvent>;
  /** Stream name → its events by revision (truncated revisions are holes). */
  streams: Map<string, (StoredEvent | undefined)[]>;
  snapshots: Map<string, Snapshot>;
  /** When each position was recorded (epoch ms), index i for position i + 1. */
  recordedAt: number[];
}

export function createTables(): MemoryTables {
  return { events: [], byId: new Map(), streams: new Map(), snapshots: new Map(), recordedAt: [] };
}
