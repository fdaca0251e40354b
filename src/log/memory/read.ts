import type { AllPageQuery, StoredEvent, StreamPageQuery } from '../storage.js';
import type { MemoryTables } from './schema.js';

export function readStreamPage(tables: MemoryTables, q: StreamPageQuery): StoredEvent[] {
  const events = tables.streams.get(q.stream) ?? [];
  const out: StoredEvent[] = [];
  if (q.direction === 'forwards') {
    for (let r = q.fromRevision; r < events.length && out.length < q.limit; r++) {
      const e = events[r];
      if (e) out.push(e);
    }
  } else {
    for (let r = Math.min(q.fromRevision, events.length - 1); r >= 0 && out.length < q.limit; r--) {
      const e = events[r];
      if (e) out.push(e);
    }
  }
  return out;
}

export function readAllPage(tables: MemoryTables, q: AllPageQuery): StoredEvent[] {
  const out: StoredEvent[] = [];
  const end = Math.min(tables.events.length, q.toPosition ?? Number.MAX_SAFE_INTEGER);
  const categories = q.filter?.categories ? new Set(q.filter.categories) : undefined;
  const types = q.filter?.types ? new Set(q.filter.types) : undefined;
  for (let p = Math.max(q.fromPosition, 1); p <= end && out.length < q.limit; p++) {
    const e = tables.events[p - 1];
    if (!e) continue;
    if (types && !types.has(e.type)) continue;
    if (categories) {
      const dash = e.stream.indexOf('-');
      if (!categories.has(dash === -1 ? e.stream : e.stream.slice(0, dash))) continue;
    }
    out.push(e);
  }
  return out;
}

export function readEventsById(tables: MemoryTables, ids: readonly string[]): StoredEvent[] {
  const out: StoredEvent[] = [];
  for (const id of ids) {
    const e = tables.byId.get(id);
    if (e) out.push(e);
  }
  return out.sort((a, b) => a.position - b.position);
}

export function streamRevision(tables: MemoryTables, stream: string): number {
  return (tables.streams.get(stream)?.length ?? 0) - 1;
}
