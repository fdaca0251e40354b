import { lookupKeys, planCommit } from '../plan.js';
import type { AppendRequest, CommitResult, StoredEvent } from '../storage.js';
import type { MemoryTables } from './schema.js';

/** One group commit: plan against the tables, then apply the planned rows. */
export function commitBatch(tables: MemoryTables, batch: readonly AppendRequest[]): CommitResult {
  const { streams, givenIds } = lookupKeys(batch);
  const revisions = new Map<string, number>();
  for (const name of streams) {
    const events = tables.streams.get(name);
    if (events && events.length > 0) revisions.set(name, events.length - 1);
  }
  const stored = new Map<string, StoredEvent>();
  for (const id of givenIds) {
    const e = tables.byId.get(id);
    if (e) stored.set(id, e);
  }
  const plan = planCommit(batch, revisions, stored, tables.events.length);
  const recordedAt = Date.now();
  for (const row of plan.rows) {
    const event: StoredEvent = {
      id: row.id,
      stream: row.stream,
      type: row.type,
      schemaVersion: row.schemaVersion,
      data: row.data,
      metadata: row.metadata,
      revision: row.revision,
      position: row.position,
    };
    tables.events.push(event);
    tables.recordedAt.push(recordedAt);
    tables.byId.set(event.id, event);
    let streamEvents = tables.streams.get(event.stream);
    if (!streamEvents) tables.streams.set(event.stream, (streamEvents = []));
    streamEvents.push(event);
  }
  return { outcomes: plan.outcomes, head: plan.head, durability: 'none' };
}
