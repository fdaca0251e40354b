/**
 * The memory adapter: the full {@link EventLog} semantics with nothing on
 * disk. For tests and examples; appends report `durability: 'none'`.
 */
import { checkLogOptions, StoredEventLog, type EventLogOptions } from '../stored-event-log.js';
import type { LogStorage } from '../storage.js';
import type { EventLog } from '../types.js';
import { commitBatch } from './append.js';
import { readAllPage, readEventsById, readStreamPage, streamRevision } from './read.js';
import { createTables } from './schema.js';
import { watchExternalCommits } from './notify.js';
import { createMemorySubscriptionStorage } from './subscription.js';

export type MemoryEventLogOptions = EventLogOptions;

export function openMemoryEventLog(options: MemoryEventLogOptions = {}): EventLog {
  checkLogOptions(options);
  const tables = createTables();
  const storage: LogStorage = {
    adapter: 'memory',
    subscriptions: createMemorySubscriptionStorage(),
    maxCommitsInFlight: 1,
    recheckIntervalMs: 0,
    commit: async (batch) => commitBatch(tables, batch),
    readStreamPage: async (q) => readStreamPage(tables, q),
    readAllPage: async (q) => readAllPage(tables, q),
    readEventsById: async (ids) => readEventsById(tables, ids),
    streamRevision: async (stream) => streamRevision(tables, stream),
    headPosition: async () => tables.events.length,
    positionAt: async (time) => {
      const at = time.getTime();
      const index = tables.recordedAt.findIndex((t, i) => t >= at && tables.events[i] !== undefined);
      return index === -1 ? tables.events.length + 1 : index + 1;
    },
    readSnapshot: async (stream, key) => {
      const s = tables.snapshots.get(`${stream}\u0000${key}`);
      return s && structuredClone(s);
    },
    writeSnapshot: async (stream, snapshot) => {
      const current = tables.snapshots.get(`${stream}\u0000${snapshot.key}`);
      if (current && current.revision > snapshot.revision) return;
      tables.snapshots.set(`${stream}\u0000${snapshot.key}`, structuredClone(snapshot));
    },
    truncateStream: async (stream, beforeRevision) => {
      const events = tables.streams.get(stream);
      if (!events) return;
      for (let r = 0; r < Math.min(beforeRevision, events.length); r++) {
        const e = events[r];
        if (!e) continue;
        events[r] = undefined;
        tables.events[e.position - 1] = undefined;
        tables.byId.delete(e.id);
      }
    },
    watchExternalCommits,
    close: async () => {},
  };
  return new StoredEventLog(storage, options);
}
export { openMemoryFeedStore, type MemoryFeedStoreOptions } from '../../realtime/memory/feed-store.js';
