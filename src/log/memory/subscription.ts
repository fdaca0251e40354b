import { SinhoError } from '../../errors.js';
import type { DeferredRow, GroupRow, SubscriptionStorage } from '../../subscription/storage.js';

interface MemoryGroup {
  row: GroupRow;
  owner: string | null;
  leaseUntil: number;
  deferred: Map<string, DeferredRow>;
  processed: Map<string, number>;
}

/** Consumer-group state in process memory (lost on exit, like the memory log). No SQL, so no projection statements. */
export function createMemorySubscriptionStorage(): SubscriptionStorage {
  const groups = new Map<string, MemoryGroup>();
  const members = new Map<string, Map<string, number>>();
  const liveVersions = new Map<string, number>();
  const get = (name: string): MemoryGroup => {
    const g = groups.get(name);
    if (!g) throw new SinhoError('UNKNOWN_GROUP', `No consumer group named "${name}".`, { group: name });
    return g;
  };
  return {
    supportsStatements: false,
    ensureGroup: async (name, initialPosition, partitions = 0) => {
      if (!groups.has(name)) {
        groups.set(name, { row: { name, position: initialPosition, partitions, createdAt: new Date().toISOString() }, owner: null, leaseUntil: 0, deferred: new Map(), processed: new Map() });
      }
      return { ...get(name).row };
    },
    heartbeat: async (group, member, ttlMs) => {
      let live = members.get(group);
      if (!live) members.set(group, (live = new Map()));
      const now = Date.now();
      live.set(member, now + ttlMs);
      for (const [m, until] of live) if (until < now) live.delete(m);
      return [...live.keys()].sort();
    },
    leave: async (group, member) => void members.get(group)?.delete(member),
    getGroup: async (name) => {
      const g = groups.get(name);
      return g && { ...g.row };
    },
    listGroups: async () => [...groups.values()].map((g) => ({ ...g.row })).sort((a, b) => a.name.localeCompare(b.name)),
    deleteGroup: async (name) => {
      groups.delete(name);
      members.delete(name);
    },
    loadDeferred: async (group) => [...(groups.get(group)?.deferred.values() ?? [])].map((r) => structuredClone(r)).sort((a, b) => a.position - b.position),
    acquireLease: async (group, owner, leaseMs) => {
      const g = get(group);
      const now = Date.now();
      if (g.owner !== null && g.owner !== owner && g.leaseUntil >= now) return false;
      g.owner = owner;
      g.leaseUntil = now + leaseMs;
      return true;
    },
    releaseLease: async (group, owner) => {
      const g = groups.get(group);
      if (g?.owner === owner) {
        g.owner = null;
        g.leaseUntil = 0;
      }
    },
    commitGroup: async (group, c, owner) => {
      const g = get(group);
      if (g.owner !== owner) throw new SinhoError('GROUP_LEASE_LOST', `This instance no longer holds consumer group "${group}"; nothing was committed.`, { group });
      if (c.statements.length > 0) throw new SinhoError('UNSUPPORTED', 'The memory adapter cannot run projection statements.');
      for (const r of c.upserts) g.deferred.set(`${r.kind}:${r.position}`, structuredClone(r));
      for (const d of c.deletes) g.deferred.delete(`${d.kind}:${d.position}`);
      for (const p of c.processed) g.processed.set(p.eventId, p.position);
      if (c.position !== undefined) {
        g.row.position = c.position;
        for (const [id, position] of g.processed) if (position <= c.position) g.processed.delete(id);
      }
    },
    highestProcessed: async (group) => Math.max(0, ...(groups.get(group)?.processed.values() ?? [])),
    liveProjectionVersion: async (name) => liveVersions.get(name),
    switchProjection: async (name, from, to) => {
      if (liveVersions.get(name) !== from) return false;
      liveVersions.set(name, to);
      return true;
    },
    runStatements: async (statements) => {
      if (statements.length > 0) throw new SinhoError('UNSUPPORTED', 'The memory adapter cannot run SQL statements.');
    },
    processedIds: async (group, ids) => new Set(ids.filter((id) => groups.get(group)?.processed.has(id))),
    resetGroup: async (group, position) => {
      const g = get(group);
      g.row.position = position;
      for (const [k, r] of g.deferred) if (r.state !== 'dead') g.deferred.delete(k);
      g.processed.clear();
    },
  };
}
